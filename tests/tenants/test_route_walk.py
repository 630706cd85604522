"""Every route, discovered from the URL resolver, attacked across the tenant boundary.

Tenant A's key and A's viewer, approver and admin go after tenant B's objects (B's ids in the URL,
`?tenant=globex`, `"tenant": "globex"` in the body) with every method. Each attempt must answer
404 (or 403 where A's role or scope is the reason, 405 where the method does not exist), nothing in
the database may change, and a marker string that only B's data (and the operators' platform-wide
channel) contains must never appear in any response. A route the table below does not classify
fails `test_every_route_is_classified` until someone decides what it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import models as dj_models
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, path
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from budgets.models import (
    Alert,
    Anomaly,
    ApprovalRequest,
    Budget,
    Control,
    Notification,
    NotificationChannel,
    Reservation,
)
from finops.models import PromptVersion, TenantWorkflowRollup, UsageRecord, Workflow
from finops.services.rollups import rollups_refresh
from tenants.models import ApiKey, AuditEvent, Membership, Tenant
from tenants.scoping import TenantScopedAPIView
from tenants.services import api_key_create

from ..factories import MembershipFactory, UserFactory

MARKER = "marker-tenant-b"
B_WORKFLOW = "marker-tenant-b-flow"

TENANT, PLATFORM, PUBLIC = "tenant-scoped", "platform-only", "public"

# Every named route of the project. Tenant-scoped routes are attacked below; platform-only ones are
# for operators (staff) and platform keys; public ones read nothing of any tenant.
ROUTES: dict[str, str] = {
    "login": PUBLIC,
    "logout": PUBLIC,
    "password_change": PUBLIC,
    "password_change_done": PUBLIC,
    "schema": PUBLIC,
    "api-docs": PUBLIC,
    "api-tokens-count": PUBLIC,  # counts tokens and prices them at catalog prices: no tenant data
    "api-usage": TENANT,
    "api-usage-detail": TENANT,
    "api-spend": TENANT,
    "api-spend-csv": TENANT,
    "api-exports-focus": TENANT,
    "api-prompt-versions": TENANT,
    "api-workflow-policy": TENANT,
    "api-otlp-traces": TENANT,
    "api-litellm-logs": TENANT,
    "api-preflight": TENANT,
    "api-reservation-release": TENANT,
    "api-budgets": TENANT,
    "api-budget-detail": TENANT,
    "api-budget-increase": TENANT,
    "budget_increase": TENANT,
    "api-controls": TENANT,
    "api-control-end": TENANT,
    "api-approvals": TENANT,
    "api-approval-detail": TENANT,
    "api-approval-approve": TENANT,
    "api-approval-reject": TENANT,
    "api-approval-cancel": TENANT,
    "api-alerts": TENANT,
    "api-alert-acknowledge": TENANT,
    "api-notification-channels": TENANT,
    "api-notification-channel-detail": TENANT,
    "budgets_list": TENANT,
    "savings": TENANT,
    "budget_add": TENANT,
    "budget_detail": TENANT,
    "budget_edit": TENANT,
    "controls_list": TENANT,
    "control_add": TENANT,
    "control_end": TENANT,
    "alerts_list": TENANT,
    "alert_acknowledge": TENANT,
    "approvals_list": TENANT,
    "approval_detail": TENANT,
    "approval_approve": TENANT,
    "approval_reject": TENANT,
    "approval_cancel": TENANT,
    "home": TENANT,
    "usage_list": TENANT,
    "usage_detail": TENANT,
    "explore": TENANT,
    "explore_export": TENANT,
    "tenant_detail": TENANT,
    "workflow_detail": TENANT,
    "prompt_version_add": TENANT,
    "workflow_threshold": TENANT,
    "workflow_envelope": TENANT,
    "prompt_version_detail": TENANT,
    "models": TENANT,
    "model_detail": TENANT,
    "focus_export": TENANT,
    "audit_list": TENANT,
    "audit_export": TENANT,
    "healthz": PUBLIC,  # process liveness: no data at all
    "readyz": PUBLIC,  # dependency reachability, errors named by type only
    "metrics": PLATFORM,  # off by default; a token or allowed networks (METRICS_ACCESS)
    "api-anomalies": TENANT,
    "api-anomaly-detail": TENANT,
    "api-anomaly-feedback": TENANT,
    "anomalies_list": TENANT,
    "anomaly_detail": TENANT,
    "anomaly_feedback": TENANT,
    "model_price_add": PLATFORM,
    "model_price_edit": PLATFORM,
    # Self-service (tenants/views_access.py): a tenant's keys and members; tenants are the operators'.
    "api_keys": TENANT,
    "api_key_rotate": TENANT,
    "api_key_revoke": TENANT,
    "members": TENANT,
    "member_role": TENANT,
    "member_remove": TENANT,
    "tenants_manage": PLATFORM,
    "tenant_add": PLATFORM,
    "tenant_edit": PLATFORM,
    "set_password": PUBLIC,  # the one-time link: its token is the credential
    "workflows_list": TENANT,
    "workflow_add": PLATFORM,  # workflows are shared product data: operators write them
    "workflow_edit": PLATFORM,
}

METHODS = ("get", "post", "patch", "delete")
ALLOWED_REFUSALS = {403, 404, 405}  # and, for an API key on a page, the redirect to the sign-in page


@dataclass(frozen=True)
class Route:
    route: str
    name: str | None
    namespace: str | None
    callback: object

    @property
    def kwargs(self) -> list[str]:
        return [p.split(">")[0].split(":")[-1] for p in self.route.split("<")[1:]]

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/")

    @property
    def is_scoped(self) -> bool:
        view_class = getattr(self.callback, "view_class", None)
        if view_class is not None and issubclass(view_class, TenantScopedAPIView):
            return True
        return bool(getattr(self.callback, "tenant_page", False))


def walk(patterns=None, prefix: str = "", namespace: str | None = None) -> Iterator[Route]:
    for p in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            yield from walk(p.url_patterns, prefix + str(p.pattern), p.namespace or namespace)
        elif isinstance(p, URLPattern):
            yield Route(prefix + str(p.pattern), p.name, namespace, p.callback)


def classification(route: Route) -> str | None:
    if route.namespace == "admin":
        return PLATFORM  # Django's admin: staff only
    return ROUTES.get(route.name or "")


# --- the world: tenant B's objects, and A's attackers ------------------------------------------------


@pytest.fixture
def world(tenant_a, tenant_b, api_a, api_b, catalog):
    """Tenant B's data, each object carrying the marker, plus A's own data of the same kinds."""
    now = timezone.now()
    for slug, client in (("a", api_a.client), (MARKER, api_b.client)):
        response = client.post(
            "/api/v1/usage",
            {
                "request_id": f"{slug}-req-1",
                "workflow": B_WORKFLOW if slug == MARKER else "a-flow",
                "model": "gpt-4o",
                "input_tokens": 1000,
                "output_tokens": 100,
                "tags": {"note": slug},
            },
            format="json",
        )
        assert response.status_code == 200, response.content
    rollups_refresh()
    assert TenantWorkflowRollup.objects.filter(tenant=tenant_b, workflow__slug=B_WORKFLOW).exists()
    budget_b = Budget.objects.create(
        tenant=tenant_b, name=f"{MARKER} monthly", metric="cost", period="month", time_zone="UTC", hard_limit=10**12
    )
    Budget.objects.create(
        tenant=tenant_a, name="A monthly", metric="cost", period="month", time_zone="UTC", hard_limit=10**12
    )
    preflight = api_b.client.post(
        "/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 100, "workflow": B_WORKFLOW}, format="json"
    )
    assert preflight.status_code == 200 and preflight.json()["reservation_id"], preflight.content
    control_b = Control.objects.create(
        tenant=tenant_b, kind="deny", source="manual", reason=f"{MARKER} stop", starts_at=now
    )
    alert_b = Alert.objects.create(
        kind=Alert.Kind.SOFT_LIMIT,
        level=85,
        tenant=tenant_b,
        budget=budget_b,
        subject=f"{MARKER} 85%",
        message=MARKER,
        created_at=now,
    )
    channel_b = NotificationChannel.objects.create(tenant=tenant_b, kind="email", target=f"{MARKER}@b.example")
    # The operators' platform-wide channel: its target and errors are not for any tenant's eyes.
    platform_channel = NotificationChannel.objects.create(tenant=None, kind="webhook", target=f"https://{MARKER}.ops/")
    alert_a = Alert.objects.create(
        kind=Alert.Kind.SOFT_LIMIT, level=85, tenant=tenant_a, subject="A 85%", message="a", created_at=now
    )
    Notification.objects.create(
        alert=alert_a,
        channel=platform_channel,
        status=Notification.Status.FAILED,
        next_attempt_at=now,
        last_error=f"connection refused by {MARKER}.ops",
    )
    approval_b = ApprovalRequest.objects.create(
        tenant=tenant_b,
        workflow=Workflow.objects.get(slug=B_WORKFLOW),
        reasons=[MARKER],
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    ApprovalRequest.objects.create(tenant=tenant_a, reasons=["a"], created_at=now, expires_at=now + timedelta(hours=1))
    # B's prompt version of B's workflow: its label (a URL parameter) and its text carry the marker.
    registered = api_b.client.post(
        f"/api/v1/workflows/{B_WORKFLOW}/prompt-versions",
        {"label": f"{MARKER}-v1", "text": f"You are {MARKER}'s assistant.", "model": "gpt-4o"},
        format="json",
    )
    assert registered.status_code == 201, registered.content
    # The audit log: B's events and a platform-wide one carry the marker; A's admin reads A's only.
    AuditEvent.objects.create(
        tenant=tenant_b,
        action="budget.create",
        target_type="Budget",
        target_id=str(budget_b.pk),
        after={"name": budget_b.name},
        request_id=f"{MARKER}-audit",
    )
    AuditEvent.objects.create(tenant=None, action="catalog.seed", after={"note": MARKER})
    AuditEvent.objects.create(tenant=tenant_a, action="budget.create", after={"name": "A monthly"})
    anomaly_b = Anomaly.objects.create(
        tenant=tenant_b,
        workflow=Workflow.objects.get(slug=B_WORKFLOW),
        kind=Anomaly.Kind.RUNAWAY_LOOP,
        metric="calls",
        opened_at=now,
        last_hour=now,
        observed=600,
        expected=100,
        evidence={"unit": "calls/h", "note": MARKER},
        created_at=now,
    )
    # B's own key and member, each named with the marker (the self-service pages must never show them to A).
    key_b, _ = api_key_create(tenant=tenant_b, name=f"{MARKER} key", scopes="read")
    member_b = MembershipFactory(tenant=tenant_b, role="admin", user=UserFactory(username=f"{MARKER}-admin"))
    return {
        "anomaly_id": anomaly_b.pk,
        "key_id": key_b.pk,
        "membership_id": member_b.pk,
        "tenant_id": tenant_b.pk,
        "label": f"{MARKER}-v1",
        **{
            f"slug:{r}": B_WORKFLOW
            for r in (
                "api-prompt-versions",
                "prompt_version_add",
                "prompt_version_detail",
                "api-workflow-policy",
                "workflow_threshold",
                "workflow_edit",
                "workflow_envelope",
            )
        },
        "record_id": UsageRecord.objects.get(tenant=tenant_b).pk,
        "reservation_id": Reservation.objects.get(tenant=tenant_b).pk,
        "budget_id": budget_b.pk,
        "control_id": control_b.pk,
        "approval_id": approval_b.pk,
        "alert_id": alert_b.pk,
        "channel_id": channel_b.pk,
        "name": "gpt-4o",
        "price_id": catalog["gpt-4o"].prices.first().pk,
    }


@pytest.fixture
def attackers(tenant_a, api_a) -> dict[str, object]:
    """Tenant A's key and A's members of each role, each as a logged-in client."""
    out: dict[str, object] = {"key-a": api_a.client}
    for role in Membership.Role.values:
        user = MembershipFactory(tenant=tenant_a, role=role, user=UserFactory(username=f"{role}-a")).user
        client = APIClient()
        client.force_login(user)
        out[f"{role}-a"] = client
    return out


_SNAPSHOT_MODELS: tuple[type[dj_models.Model], ...] = (
    Budget,
    Control,
    Alert,
    ApprovalRequest,
    NotificationChannel,
    Notification,
    Reservation,
    UsageRecord,
    Workflow,
    AuditEvent,
    PromptVersion,
    ApiKey,
    Membership,
    Tenant,
)


def snapshot() -> dict[str, list[dict]]:
    return {m.__name__: sorted(map(repr, m.objects.values())) for m in _SNAPSHOT_MODELS}


def build_url(route: Route, values: dict) -> str:
    """The route's path with tenant B's ids (or slugs) in its parameters."""
    parts = route.route.split("<")
    url = parts[0]
    for part in parts[1:]:
        spec, rest = part.split(">", 1)
        name = spec.split(":")[-1]
        url += str(values[f"slug:{route.name}"] if name == "slug" else values[name]) + rest
    return "/" + url


BODY = {
    "tenant": "globex",
    "request_id": "attack-1",
    "workflow": B_WORKFLOW,
    "model": "gpt-4o",
    "input_tokens": 10,
    "name": "attack",
    "hard_limit": "1.00",
    "kind": "deny",
    "reason": "attack",
    "comment": "attack",
    "target": "https://attack.example/",
}


def attack(routes: list[Route], world: dict, attackers: dict) -> list[str]:
    """Every attempt of every attacker on every route; returns what went wrong (empty = held)."""
    values = {**world, "slug:tenant_detail": "globex", "slug:workflow_detail": B_WORKFLOW}
    problems: list[str] = []

    def check(who: str, method: str, url: str, response, *, refused: bool) -> None:
        body = (
            response.content.decode("utf-8", "replace")
            if not getattr(response, "streaming", False)
            else (b"".join(response.streaming_content).decode("utf-8", "replace"))
        )
        where = f"{who} {method.upper()} {url}"
        if response.status_code >= 500:
            problems.append(f"{where}: {response.status_code}")
        to_login = response.status_code == 302 and response["Location"].startswith("/accounts/login/")
        if refused and response.status_code not in ALLOWED_REFUSALS and not (to_login and who == "key-a"):
            problems.append(f"{where}: answered {response.status_code}, expected 404 (or 403/405)")
        if MARKER in body:
            problems.append(f"{where}: tenant B's marker in the response")

    for route in routes:
        has_ids = bool(route.kwargs)
        base = build_url(route, values)
        for who, client in attackers.items():
            for method in METHODS:
                send = getattr(client, method)
                extra = {"format": "json"} if route.is_api else {}
                data = BODY if method != "get" else None
                # B's ids in the URL (A's own tenant otherwise); catalog names are not tenant data.
                if has_ids and set(route.kwargs) - {"name", "price_id"}:
                    check(who, method, base, send(base, data, **extra), refused=True)
                # ?tenant=globex: naming tenant B
                check(who, method, f"{base}?tenant=globex", send(f"{base}?tenant=globex", data, **extra), refused=True)
            # A's own view of a collection must not show B's data (or the operators' channel).
            if not has_ids or route.name == "model_detail":
                check(who, "get", base, client.get(base), refused=False)
    return problems


# --- the tests ---------------------------------------------------------------------------------------


def test_every_route_is_classified():
    unclassified = [r.route for r in walk() if classification(r) is None]
    assert not unclassified, f"classify these routes in ROUTES (tenant-scoped, platform-only or public): {unclassified}"
    stale = set(ROUTES) - {r.name for r in walk()}
    assert not stale, f"ROUTES names routes that no longer exist: {stale}"


def test_tenant_scoped_routes_resolve_the_scope_through_the_one_base():
    """A route called tenant-scoped must be a TenantScopedAPIView or a `tenant_page` page."""
    wrong = [r.route for r in walk() if classification(r) == TENANT and not r.is_scoped]
    assert not wrong, f"tenant-scoped routes that bypass TenantScopedAPIView / tenant_page: {wrong}"


@pytest.mark.django_db(transaction=False)
def test_tenant_a_cannot_reach_tenant_b_through_any_route(world, attackers):
    routes = [r for r in walk() if classification(r) == TENANT]
    assert len(routes) >= 40
    before = snapshot()
    problems = attack(routes, world, attackers)
    assert not problems, "\n".join(problems)
    assert snapshot() == before, "an attack changed the database"


def test_platform_only_routes_refuse_tenant_members(world, attackers):
    routes = [r for r in walk() if classification(r) == PLATFORM and r.namespace != "admin"]
    values = {**world}
    for route in routes:
        url = build_url(route, values)
        for who, client in attackers.items():
            for method in ("get", "post"):
                response = getattr(client, method)(url)
                to_login = response.status_code == 302 and response["Location"].startswith("/accounts/login/")
                assert response.status_code in (401, 403, 404, 405) or (to_login and who == "key-a"), (
                    f"{who} {method} {url}: {response.status_code}"
                )


def test_tenant_members_are_refused_by_the_admin(attackers):
    for who, client in attackers.items():
        if who == "key-a":
            continue
        response = client.get("/admin/budgets/budget/")
        assert response.status_code == 302 and "/admin/login/" in response["Location"], who


# --- tests of the test --------------------------------------------------------------------------------


class _UnscopedBudgetApi(APIView):
    """Deliberately wrong: reads a budget by id with no tenant scope at all."""

    def get(self, request, budget_id):
        budget = Budget.objects.get(pk=budget_id)
        return Response({"id": budget.pk, "name": budget.name})


def test_the_walk_catches_a_deliberately_unscoped_view(world, attackers):
    view = _UnscopedBudgetApi.as_view()
    route = Route("api/v1/unscoped/<int:budget_id>", "unscoped", None, view)
    # Not classified: the classification test would fail on it ...
    assert classification(route) is None
    # ... and it does not go through the one base ...
    assert not route.is_scoped
    # ... and attacking it finds the leak.
    from django.test import override_settings

    urlconf = type("urlconf", (), {"urlpatterns": [path(route.route, view, name="unscoped")]})
    with override_settings(ROOT_URLCONF=urlconf):
        problems = attack([route], world, attackers)
    assert any("marker in the response" in p for p in problems), problems


def test_a_subclass_cannot_override_the_tenant_resolution():
    for name in ("initial", "resolve_scope", "check_operation", "object_in_scope"):
        with pytest.raises(TypeError, match="overrides the tenant resolution"):
            type("Sneaky", (TenantScopedAPIView,), {name: lambda self, *a, **k: None})


def test_an_object_route_that_skips_the_scoped_lookup_fails_loudly(world, api_a):
    class Careless(TenantScopedAPIView):
        lookup_kwarg = "budget_id"

        def get(self, request, budget_id):
            return Response({"name": Budget.objects.get(pk=budget_id).name})

    from django.core.exceptions import ImproperlyConfigured
    from rest_framework.test import APIRequestFactory

    request = APIRequestFactory().get("/x", HTTP_AUTHORIZATION=api_a.client._credentials["HTTP_AUTHORIZATION"])
    with pytest.raises(ImproperlyConfigured):
        Careless.as_view()(request, budget_id=world["budget_id"])


def test_page_client_sees_platform_rows_only_as_operator(world, operator):
    client = Client()
    client.force_login(operator)
    assert MARKER in client.get("/alerts/").content.decode()  # the operator sees the failed delivery
