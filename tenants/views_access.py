"""Self-service pages: a tenant's API keys and members (its admins; operators for every tenant and the
platform keys), and the tenants themselves (operators).

Every page reads through the person's scope: another tenant's key or membership answers 404 like a
missing one, and a write checks the role on the object's tenant (403 for a viewer's forged POST).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from .errors import ApplicationError
from .forms import ApiKeyForm, ApiKeyRotateForm, MemberAddForm, MemberRoleForm, TenantForm
from .models import ApiKey, Membership, Tenant
from .scope import Operation, TenantScope
from .scoping import tenant_page
from .services import (
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    membership_add,
    membership_remove,
    membership_set_role,
    tenant_create,
    tenant_update,
)


def _layout(request: HttpRequest, scope: TenantScope, **context) -> dict:
    # The layout context of every page (finops.views.layout, which this bottom app cannot import).
    return {"scope": scope, "switcher_action": request.path, "switcher_keep": [], **context}


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


def _tenant_for_access(request: HttpRequest) -> Tenant | None:
    """The tenant whose keys or members the page is about; None: the platform (operators only). A member
    of several tenants who picked none is sent to the first one they administer."""
    scope: TenantScope = request.scope  # type: ignore[attr-defined]
    if scope.tenant is None and not scope.is_platform:
        first = scope.tenants_where(Operation.MANAGE_ACCESS).order_by("name").first()
        if first is None:
            raise PermissionDenied("Only a tenant's admins manage its keys and members.")
        raise _Redirect(f"{request.path}?tenant={first.slug}")
    scope.require(Operation.MANAGE_ACCESS)
    return scope.tenant


class _Redirect(Exception):
    def __init__(self, to: str) -> None:
        self.to = to


def _keys(scope: TenantScope, tenant: Tenant | None) -> QuerySet[ApiKey]:
    keys = scope.filter(ApiKey.objects.select_related("created_by", "tenant"), platform_rows=True)
    return keys.filter(tenant=tenant) if tenant is not None else keys.filter(tenant__isnull=True)


def _key_in_scope(request: HttpRequest, key_id: int) -> ApiKey:
    scope: TenantScope = request.scope  # type: ignore[attr-defined]
    key = scope.get(ApiKey.objects.select_related("tenant"), platform_rows=True, pk=key_id, what="No such API key.")
    scope.require(Operation.MANAGE_ACCESS, key.tenant_id)
    return key


def _keys_page(request, scope, tenant, *, form=None, rotate_form=None, secret="", secret_key=None, status=200):
    now = timezone.now()
    context = _layout(
        request,
        scope,
        tenant=tenant,
        keys=list(_keys(scope, tenant)),
        form=form or ApiKeyForm(),
        rotate_form=rotate_form or ApiKeyRotateForm(),
        secret=secret,
        secret_key=secret_key,
        now=now,
    )
    return _no_store(render(request, "tenants/api_keys.html", context, status=status))


@tenant_page
@require_http_methods(["GET", "POST"])
def api_keys(request):
    scope = request.scope
    try:
        tenant = _tenant_for_access(request)
    except _Redirect as go:
        return redirect(go.to)
    if request.method == "GET":
        return _keys_page(request, scope, tenant)
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, scope, tenant, form=form, status=400)
    try:
        key, secret = api_key_create(
            tenant=tenant,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_at=form.expires_at_datetime(),
            actor=scope.actor,
        )
    except ApplicationError as error:
        form.add_error(None, error.message)
        return _keys_page(request, scope, tenant, form=form, status=400)
    # Rendered, not redirected: the secret exists only in this answer and is never stored.
    return _keys_page(request, scope, tenant, secret=secret, secret_key=key)


@tenant_page
@require_POST
def api_key_rotate_view(request, key_id: int):
    scope = request.scope
    key = _key_in_scope(request, key_id)
    form = ApiKeyRotateForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, scope, key.tenant, rotate_form=form, status=400)
    try:
        key, secret = api_key_rotate(key=key, overlap=form.overlap_delta(), actor=scope.actor)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect(_keys_url(key))
    return _keys_page(request, scope, key.tenant, secret=secret, secret_key=key)


@tenant_page
@require_POST
def api_key_revoke_view(request, key_id: int):
    scope = request.scope
    key = _key_in_scope(request, key_id)
    api_key_revoke(key=key, actor=scope.actor)
    messages.success(request, f"Revoked “{key.name}” ({key.prefix}…): requests with it now answer 401.")
    return redirect(_keys_url(key))


def _keys_url(key: ApiKey) -> str:
    url = reverse("api_keys")
    return f"{url}?tenant={key.tenant.slug}" if key.tenant is not None else url


# --- members ------------------------------------------------------------------------------------------


def _members_page(request, scope, tenant, *, form=None, link="", new_member=None, status=200):
    memberships = list(
        scope.filter(Membership.objects.select_related("user")).filter(tenant=tenant).order_by("user__username")
    )
    admins = sum(m.role == Membership.Role.ADMIN for m in memberships)
    context = _layout(
        request,
        scope,
        tenant=tenant,
        memberships=memberships,
        admins=admins,
        form=form or MemberAddForm(),
        role_choices=MemberRoleForm.base_fields["role"].choices,  # type: ignore[attr-defined]
        link=link,
        new_member=new_member,
    )
    return _no_store(render(request, "tenants/members.html", context, status=status))


@tenant_page
@require_http_methods(["GET", "POST"])
def members(request):
    scope = request.scope
    try:
        tenant = _tenant_for_access(request)
    except _Redirect as go:
        return redirect(go.to)
    if tenant is None:
        return render(request, "tenants/members_pick.html", _layout(request, scope, tenants=scope.tenants()))
    if request.method == "GET":
        return _members_page(request, scope, tenant)
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _members_page(request, scope, tenant, form=form, status=400)
    try:
        membership, link = membership_add(tenant=tenant, actor=scope.actor, **form.cleaned_data)
    except ApplicationError as error:
        form.add_error(None, error.message)
        return _members_page(request, scope, tenant, form=form, status=400)
    return _members_page(request, scope, tenant, link=link, new_member=membership)


def _membership_in_scope(request: HttpRequest, membership_id: int) -> Membership:
    scope: TenantScope = request.scope  # type: ignore[attr-defined]
    membership = scope.get(
        Membership.objects.select_related("user", "tenant"), pk=membership_id, what="No such member."
    )
    scope.require(Operation.MANAGE_ACCESS, membership.tenant_id)
    return membership


def _members_url(membership: Membership) -> str:
    return f"{reverse('members')}?tenant={membership.tenant.slug}"


@tenant_page
@require_POST
def member_role(request, membership_id: int):
    membership = _membership_in_scope(request, membership_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose viewer, approver or admin.")
        return redirect(_members_url(membership))
    try:
        membership_set_role(membership=membership, role=form.cleaned_data["role"], actor=request.scope.actor)
        messages.success(request, f"{membership.user.get_username()} is now {membership.role}.")
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect(_members_url(membership))


@tenant_page
@require_POST
def member_remove(request, membership_id: int):
    membership = _membership_in_scope(request, membership_id)
    try:
        membership_remove(membership=membership, actor=request.scope.actor)
        messages.success(request, f"Removed {membership.user.get_username()} from {membership.tenant.name}.")
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect(_members_url(membership))


# --- tenants (operators) ------------------------------------------------------------------------------


def _require_operator(request: HttpRequest) -> TenantScope:
    scope: TenantScope = request.scope  # type: ignore[attr-defined]
    if not scope.is_platform:
        raise PermissionDenied("Only operators create, edit and suspend tenants.")
    scope.require(Operation.MANAGE_TENANTS)
    return scope


@tenant_page
@require_http_methods(["GET"])
def tenants_manage(request):
    scope = _require_operator(request)
    tenants = Tenant.objects.order_by("name")
    counts: dict[int, int] = {
        row["tenant_id"]: row["n"]
        for row in Membership.objects.values("tenant_id").annotate(n=models.Count("id")).order_by()
    }
    keys: dict[int, int] = {
        row["tenant_id"]: row["n"]
        for row in ApiKey.objects.filter(revoked_at__isnull=True, tenant__isnull=False)
        .values("tenant_id")
        .annotate(n=models.Count("id"))
        .order_by()
    }
    rows = [(t, counts.get(t.pk, 0), keys.get(t.pk, 0)) for t in tenants]
    return render(request, "tenants/tenants_manage.html", _layout(request, scope, rows=rows))


def _tenant_form_page(request, scope, *, form, tenant=None, status=200):
    return render(request, "tenants/tenant_form.html", _layout(request, scope, form=form, tenant=tenant), status=status)


@tenant_page
@require_http_methods(["GET", "POST"])
def tenant_add(request):
    scope = _require_operator(request)
    if request.method == "GET":
        return _tenant_form_page(request, scope, form=TenantForm())
    form = TenantForm(request.POST)
    if not form.is_valid():
        return _tenant_form_page(request, scope, form=form, status=400)
    try:
        tenant = tenant_create(actor=scope.actor, **form.cleaned_data)
    except ApplicationError as error:
        _form_errors(form, error)
        return _tenant_form_page(request, scope, form=form, status=400)
    messages.success(
        request,
        f"Created {tenant.name}. Next: give it an admin and a key below, then a budget on the Budgets page.",
    )
    return redirect(f"{reverse('members')}?tenant={tenant.slug}")


@tenant_page
@require_http_methods(["GET", "POST"])
def tenant_edit(request, tenant_id: int):
    scope = _require_operator(request)
    tenant = _tenant(tenant_id)
    if request.method == "GET":
        initial = {f: getattr(tenant, f) for f in ("slug", "name", "external_id", "time_zone", "status")}
        return _tenant_form_page(request, scope, form=TenantForm(initial=initial), tenant=tenant)
    form = TenantForm(request.POST)
    if not form.is_valid():
        return _tenant_form_page(request, scope, form=form, tenant=tenant, status=400)
    try:
        tenant_update(tenant=tenant, actor=scope.actor, **form.cleaned_data)
    except ApplicationError as error:
        _form_errors(form, error)
        return _tenant_form_page(request, scope, form=form, tenant=tenant, status=400)
    state = "suspended: its keys answer 401 from now on" if tenant.status == Tenant.Status.SUSPENDED else "saved"
    messages.success(request, f"{tenant.name} {state}.")
    return redirect("tenants_manage")


def _tenant(tenant_id: int) -> Tenant:
    tenant = Tenant.objects.filter(pk=tenant_id).first()  # operators only (checked before): every tenant
    if tenant is None:
        raise Http404("No such tenant.")
    return tenant


def _form_errors(form, error: ApplicationError) -> None:
    if isinstance(error.details, dict):
        for field, problems in error.details.items():
            for problem in problems:
                form.add_error(field if field in form.fields else None, problem)
    else:
        form.add_error(None, error.message)


# --- the set-password link ----------------------------------------------------------------------------


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """Where a new member's one-time link leads: choose a password, then sign in."""

    template_name = "registration/set_password.html"
    success_url = reverse_lazy("login")

    def form_valid(self, form):
        messages.success(self.request, "Your password is set. Sign in with it now.")
        return super().form_valid(form)
