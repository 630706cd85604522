"""The audit log page and its CSV: tenant admins read their tenants' events, operators everyone's."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .exports import audit_csv
from .forms import AuditFilterForm
from .scope import Operation, TenantScope
from .scoping import tenant_page
from .selectors import audit_events

AUDIT_SHOWN = 200


def _require_audit(scope: TenantScope) -> None:
    """403 for viewers and approvers; a picked tenant needs its admin role."""
    if scope.tenant is not None:
        scope.require(Operation.READ_AUDIT)
    elif not scope.may_anywhere(Operation.READ_AUDIT):
        raise PermissionDenied("Only tenant admins and operators can read the audit log.")


@tenant_page
@require_GET
def audit_list(request):
    scope = request.scope
    _require_audit(scope)
    form = AuditFilterForm(request.GET)
    filters = form.filters()
    events = list(audit_events(scope=scope, filters=filters)[: AUDIT_SHOWN + 1])
    query = request.GET.urlencode()
    return render(
        request,
        "tenants/audit_list.html",
        {
            # The layout context of every page (finops.views.layout, which this bottom app cannot import).
            "scope": scope,
            "switcher_action": request.path,
            "switcher_keep": form.given,
            "form": form,
            "events": events[:AUDIT_SHOWN],
            "more": len(events) > AUDIT_SHOWN,
            "shown": AUDIT_SHOWN,
            "is_filtered": bool(form.given),
            "export_query": f"?{query}" if query else "",
        },
    )


@tenant_page
@require_GET
def audit_export(request):
    """Every event the filters match, as CSV (no cap: the download is how to read past the page's 200)."""
    scope = request.scope
    _require_audit(scope)
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{name}: {' '.join(map(str, messages))}" for name, messages in form.errors.items())
        return HttpResponseBadRequest(f"{errors}\n", content_type="text/plain; charset=utf-8")
    events = audit_events(scope=scope, filters=form.filters())
    account = scope.tenant.slug if scope.tenant is not None else "all"
    response = StreamingHttpResponse(audit_csv(events), content_type="text/csv; charset=utf-8")
    filename = f"audit-{account}-{timezone.now():%Y%m%d-%H%M%S}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
