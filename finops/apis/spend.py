import io
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.response import Response

from finops.measures import MEASURES
from finops.pricing import nanos_to_usd
from finops.renderers import OrjsonRenderer
from finops.selectors.spend import SpendGroup, SpendPoint, SpendQuery, SpendResult, spend_query
from tenants.csv_safe import csv_writer
from tenants.errors import ApplicationError
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import query_int

_FILTERS = ("workflow", "model", "tier", "environment")
_MEASURES = tuple(m for m in MEASURES if m != "cost_nanos")  # cost is reported in USD, as cost_usd
TOP_MAX = 100  # ?top=: more series than this is no longer a summary (leave `top` out for all of them)
REST = "(rest)"  # the CSV's label of the rest row (JSON marks the rest with "key": null)


def _parse_when(value: str | None, name: str, default: datetime) -> datetime:
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApplicationError("invalid_range", f"{name} must be an ISO 8601 date or timestamp.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def spend_query_from_params(params) -> SpendQuery:
    """Parse the spend API's query string (also used by exports) into a SpendQuery."""
    today = datetime.combine(timezone.now().date(), time.min, tzinfo=UTC)
    end = _parse_when(params.get("end"), "end", today + timedelta(days=1))
    start = _parse_when(params.get("start"), "start", end - timedelta(days=30))
    if end - start > timedelta(days=400):
        raise ApplicationError("invalid_range", "Ask for at most 400 days at a time.")
    group_by = tuple(d.strip() for d in params.get("group_by", "").split(",") if d.strip())
    filters = {f: tuple(v for v in params.getlist(f) if v) for f in _FILTERS if params.getlist(f)}
    if params.get("tag"):
        filters["tag"] = (params["tag"],)
    return SpendQuery(
        start=start, end=end, granularity=params.get("granularity", "day"), group_by=group_by, filters=filters
    )


def _group_json(group: SpendGroup, dims: tuple[str, ...]) -> dict:
    body: dict[str, Any] = {"key": dict(zip(dims, group.key, strict=True))} if dims else {}
    body.update({m: getattr(group, m) for m in _MEASURES})
    body["cost_usd"] = nanos_to_usd(group.cost_nanos)
    return body


class _SpendSchema(AutoSchema):
    """One view serves /spend and /spend.csv: each path gets its own operationId and media type."""

    def _csv(self) -> bool:
        return self.path.endswith(".csv")

    def get_operation_id(self) -> str:
        return "spend_read_csv" if self._csv() else "spend_read"

    def map_renderers(self, attribute: str) -> Any:
        return ["text/csv"] if self._csv() else super().map_renderers(attribute)

    def _get_response_for_code(self, serializer, status_code, media_types=None, direction="response"):
        if self._csv() and str(status_code).startswith("2"):
            return {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV of the spend view"}
        return super()._get_response_for_code(serializer, status_code, media_types, direction)


class SpendApi(TenantScopedAPIView):
    """Spend from rollups, grouped by up to two dimensions, with totals and a time series."""

    schema = _SpendSchema()

    renderer_classes = [OrjsonRenderer, BrowsableAPIRenderer]
    tenant_required = False  # platform keys and operators may read across all tenants
    repeatable_query_params = _FILTERS  # ?model=a&model=b

    @extend_schema(
        summary="Spend by dimension over time",
        parameters=[
            OpenApiParameter(
                "group_by",
                OpenApiTypes.STR,
                description="Up to two of tenant, workflow, model, tier, environment, tag:<key>, comma-separated.",
            ),
            OpenApiParameter("granularity", OpenApiTypes.STR, enum=["hour", "day", "month"]),
            OpenApiParameter("start", OpenApiTypes.DATETIME, description="Default: 30 days before end."),
            OpenApiParameter("end", OpenApiTypes.DATETIME, description="Exclusive; default: the end of today (UTC)."),
            *[
                OpenApiParameter(f, OpenApiTypes.STR, many=True, description=f"Only these {f} values.")
                for f in _FILTERS
            ],
            OpenApiParameter("tag", OpenApiTypes.STR, description="key=value"),
            OpenApiParameter(
                "tenant",
                OpenApiTypes.STR,
                description="Tenant slug (platform keys and operators; omit for all tenants).",
            ),
            OpenApiParameter(
                "top",
                {"type": "integer", "minimum": 1, "maximum": TOP_MAX},
                description=(
                    "With group_by: only the N costliest groups over the range, in groups and in the series, "
                    "plus one rest group (key null) and one rest point per bucket carrying the sum of the "
                    "others. Totals are unchanged."
                ),
            ),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, as_csv: bool = False):
        query = spend_query_from_params(request.query_params)
        top = query_int(request.query_params, "top", low=1, high=TOP_MAX)
        if top is not None and not query.group_by:
            raise ApplicationError(
                "invalid", "top needs group_by: it keeps the costliest groups.", details={"top": ["Needs group_by."]}
            )
        tenant = self.scope.tenant
        dims = query.group_by
        if as_csv:  # groups and totals only: no series
            result = spend_query(scope=self.scope, query=query, series_top=0)
            return _csv(result, dims, tenant.slug if tenant else "all-tenants", top)
        result = spend_query(scope=self.scope, query=query, top_groups=top)
        groups = [{**_group_json(g, dims), "share": f"{g.share:.4f}"} for g in result.groups[:top]]
        rest = _rest(result, top) if top else None
        if rest is not None:
            rest_json = {"key": None, **_group_json(rest, ()), "share": f"{rest.share:.4f}"}
            groups.append({**rest_json, "rest_groups": len(result.groups) - (top or 0)})
        return Response(
            {
                "tenant": tenant.slug if tenant else None,
                "start": query.start,
                "end": query.end,
                "granularity": query.granularity,
                "group_by": list(dims),
                "top": top,
                "currency": "USD",
                "source": result.source,
                "totals": _group_json(result.totals, ()),
                "groups": groups,
                "series": _series_json(result.series, dims),
            }
        )


def _rest(result: SpendResult, top: int) -> SpendGroup | None:
    """The groups after the first `top`, summed (None when there are none): the rest of the totals."""
    totals, others = result.totals, result.groups[top:]
    if not others:
        return None
    rest = SpendGroup(key=(), **{m: sum(getattr(g, m) for g in others) for m in MEASURES})
    rest.share = Decimal(rest.cost_nanos) / totals.cost_nanos if totals.cost_nanos else Decimal(0)
    return rest


def _series_json(series: list[SpendPoint], dims: tuple[str, ...]) -> list[dict]:
    # Up to ~20,000 points (90 days x 200 workflows): each bucket is formatted once, as DRF's encoder
    # would format it, and each key's object is built once and shared by its points.
    text = {b: _iso(b) for b in {p.bucket for p in series}}
    # The key () is the rest (top=N): null. Without group_by every point's key is () and reads {}.
    keys = {k: dict(zip(dims, k, strict=True)) if k or not dims else None for k in {p.key for p in series}}
    return [
        {
            "bucket": text[p.bucket],
            "key": keys[p.key],
            "calls": p.calls,
            "tokens": p.tokens,
            "cost_usd": nanos_to_usd(p.cost_nanos),
        }
        for p in series
    ]


def _iso(when: datetime) -> str:
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _csv(result: SpendResult, dims: tuple[str, ...], scope: str, top: int | None) -> HttpResponse:
    rest = _rest(result, top) if top else None
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow([*dims, *_MEASURES, "cost_usd", "share"])
    for g in result.groups[:top]:
        writer.writerow([*g.key, *(getattr(g, m) for m in _MEASURES), nanos_to_usd(g.cost_nanos), f"{g.share:.4f}"])
    if rest is not None:
        writer.writerow(
            [REST, *[""] * (len(dims) - 1), *(getattr(rest, m) for m in _MEASURES), nanos_to_usd(rest.cost_nanos),
             f"{rest.share:.4f}"]
        )  # fmt: skip
    t = result.totals
    writer.writerow(
        [
            *(["total"] + [""] * (len(dims) - 1) if dims else []),
            *(getattr(t, m) for m in _MEASURES),
            nanos_to_usd(t.cost_nanos),
            "1.0000" if t.cost_nanos else "0.0000",
        ]
    )
    q = result.query
    name = f"spend-{scope}-{q.start:%Y%m%d}-{q.end:%Y%m%d}.csv"
    return HttpResponse(
        out.getvalue(), content_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
