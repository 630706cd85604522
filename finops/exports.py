"""FinOps FOCUS export of usage: one row per usage record, with FOCUS 1.x column names.

Shared by the API (`GET /api/v1/exports/focus.csv`) and the page download (`/exports/focus.csv`);
the views resolve which tenants the caller may export and stream what `focus_csv` yields.

How a call maps onto FOCUS:
- the billing account is the tenant, the resource is the call (`ResourceId` = request_id) and its
  `ResourceName` the workflow; the service and SKU are the catalog model, the SKU price is the
  `ModelPrice` row that priced it;
- the charge period is the hour the call occurred in, the billing period its calendar month (UTC);
- costs are the record's exact cost as a decimal string with nine places. List, billed, effective
  and contracted cost are the same: usage is priced at list price. An unpriced record (model unknown
  to the catalog) has empty costs, which FOCUS allows, and is never exported as free;
- a call mixes several per-bucket rates, so there is no single unit price: ListUnitPrice and
  ContractedUnitPrice are left out and the token buckets are in `Tags` (`x_tokens_*`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import orjson
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from finops.measures import TOKEN_FIELDS
from finops.models import Environment, LlmModel, UsageRecord
from finops.pricing import nanos_to_usd
from tenants.csv_safe import csv_writer
from tenants.errors import ApplicationError
from tenants.scope import TenantScope

DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=93)
CHUNK_SIZE = 2000
_FLUSH_BYTES = 64 * 1024

FOCUS_COLUMNS = (
    "BillingAccountId",
    "BillingAccountName",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ServiceName",
    "ServiceCategory",
    "ServiceSubcategory",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "SkuId",
    "SkuPriceId",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "PricingCategory",
    "ListCost",
    "BilledCost",
    "EffectiveCost",
    "ContractedCost",
    "BillingCurrency",
    "RegionId",
    "RegionName",
    "Tags",
)

_RECORD_FIELDS = (
    "tenant_id",
    "occurred_at",
    "request_id",
    "workflow__slug",
    "model_id",
    "model_name",
    "environment",
    *TOKEN_FIELDS,
    "cost_nanos",
    "price_id",
    "tags",
)


@dataclass(frozen=True, slots=True)
class FocusExportParams:
    """What to export: the half-open range [start, end) of `occurred_at` and optional filters."""

    start: datetime
    end: datetime
    workflow: str = ""
    environment: str = ""

    @classmethod
    def from_query(cls, params: Mapping[str, str], *, now: datetime | None = None) -> FocusExportParams:
        """Parse `start`, `end`, `workflow`, `environment` from a query string.

        `start` and `end` are ISO dates or datetimes (UTC unless they carry an offset). A date as
        `end` includes that whole day. Without `end` the range ends now; without `start` it starts
        30 days before `end`. A range longer than 93 days is refused: export it in pieces.
        """
        now = now or timezone.now()
        end = _parse_instant(params.get("end", ""), "end", end_of_day=True) or now
        start = _parse_instant(params.get("start", ""), "start", end_of_day=False) or end - DEFAULT_RANGE
        if start >= end:
            raise ApplicationError("invalid_range", f"start ({_iso(start)}) must be before end ({_iso(end)}).")
        if end - start > MAX_RANGE:
            raise ApplicationError(
                "range_too_long",
                f"The range is {(end - start).days} days; the longest export is {MAX_RANGE.days} days. "
                "Export a longer period in several pieces.",
            )
        environment = (params.get("environment") or "").strip()
        if environment and environment not in Environment.values:
            raise ApplicationError(
                "invalid_environment", f"environment must be one of {', '.join(Environment.values)}."
            )
        return cls(start=start, end=end, workflow=(params.get("workflow") or "").strip(), environment=environment)

    def filename(self, account: str) -> str:
        """`focus-<tenant>-<first day>-<last day>.csv`; the last day is the one the range ends in."""
        last_day = (self.end - timedelta(microseconds=1)).astimezone(UTC).date()
        return f"focus-{account}-{self.start.astimezone(UTC).date():%Y-%m-%d}-{last_day:%Y-%m-%d}.csv"


def _parse_instant(raw: str, name: str, *, end_of_day: bool) -> datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    parsed: datetime | None = None
    try:
        # A date first: Python reads "2025-01-31" as a datetime too, but a date as `end` means the whole day.
        day = parse_date(raw)
        if day is None:
            # A "+02:00" offset arrives as " 02:00" when the caller did not encode the query string.
            parsed = parse_datetime(raw.replace(" ", "+") if "T" in raw else raw)
    except ValueError:  # well-formed but impossible, e.g. 2025-02-30
        day = None
    if day is not None:
        parsed = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
    if parsed is None:
        raise ApplicationError(
            "invalid_date", f"{name} must be an ISO date or datetime, e.g. 2025-01-31 or 2025-01-31T12:00:00Z."
        )
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, 1, tzinfo=UTC)
    following = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
    return start, following


@dataclass(frozen=True, slots=True)
class _Periods:
    charge_start: str
    charge_end: str
    billing_start: str
    billing_end: str


def _periods(hour: datetime) -> _Periods:
    month_start, month_end = _month_bounds(hour.date())
    return _Periods(
        charge_start=_iso(hour),
        charge_end=_iso(hour + timedelta(hours=1)),
        billing_start=_iso(month_start),
        billing_end=_iso(month_end),
    )


def _tokens_per_million(tokens: int) -> str:
    """Exact: 1,500 tokens -> "0.001500" (1M tokens is the pricing unit)."""
    whole, rest = divmod(tokens, 10**6)
    return f"{whole}.{rest:06d}"


def focus_rows(
    *,
    scope: TenantScope,
    start: datetime,
    end: datetime,
    workflow: str = "",
    environment: str = "",
) -> Iterator[list[str]]:
    """Yield one FOCUS row (values in `FOCUS_COLUMNS` order) per usage record of the scope's tenants
    that occurred in [start, end), by tenant and then time. Reads the records in chunks, so memory
    stays flat however many rows there are."""
    tenants = {t.pk: t for t in scope.tenants().only("slug", "name")}
    if not tenants:
        return
    models = {m.pk: m for m in LlmModel.objects.only("name", "provider")}
    records = UsageRecord.objects.filter(tenant_id__in=list(tenants), occurred_at__gte=start, occurred_at__lt=end)
    if workflow:
        records = records.filter(workflow__slug=workflow)
    if environment:
        records = records.filter(environment=environment)
    rows = records.order_by("tenant_id", "occurred_at", "id").values_list(*_RECORD_FIELDS)

    hour_key, periods = None, None
    for (
        tenant_id,
        occurred_at,
        request_id,
        workflow_slug,
        model_id,
        model_name,
        env,
        input_tokens,
        cached_tokens,
        cache_write_tokens,
        output_tokens,
        reasoning_tokens,
        cost_nanos,
        price_id,
        tags,
    ) in rows.iterator(chunk_size=CHUNK_SIZE):
        hour = occurred_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        # Records come in time order: most rows reuse the previous hour's strings.
        if periods is None or hour != hour_key:
            hour_key, periods = hour, _periods(hour)
        tenant = tenants[tenant_id]
        model = models.get(model_id) if model_id is not None else None
        provider = model.provider if model is not None else ""
        sku = model.name if model is not None else model_name
        priced = cost_nanos is not None
        cost = nanos_to_usd(cost_nanos) if priced else ""
        total_tokens = input_tokens + cached_tokens + cache_write_tokens + output_tokens + reasoning_tokens
        # Our own keys are prefixed x_ (FOCUS custom-key convention) and win over a tag of the same name.
        row_tags = {
            **(tags if isinstance(tags, dict) else {}),
            "x_environment": env,
            "x_workflow": workflow_slug or "",
            "x_tokens_input": input_tokens,
            "x_tokens_cached": cached_tokens,
            "x_tokens_cache_write": cache_write_tokens,
            "x_tokens_output": output_tokens,
            "x_tokens_reasoning": reasoning_tokens,
        }
        description = f"{sku} call, {workflow_slug or 'no workflow'}, {env}"
        if not priced:
            description += " (not priced: " + ("no price in force then)" if model else "model not in the catalog)")
        yield [
            tenant.slug,
            tenant.name,
            periods.billing_start,
            periods.billing_end,
            periods.charge_start,
            periods.charge_end,
            "Usage",
            "",
            description,
            "Usage-Based",
            provider,
            provider,
            provider,
            f"{provider} {sku}" if provider else sku,
            "AI and Machine Learning",
            "Generative AI",
            request_id,
            workflow_slug or "",
            "LLM call",
            sku,
            str(price_id) if priced and price_id is not None else "",
            str(total_tokens),
            "Tokens",
            _tokens_per_million(total_tokens),
            "1M Tokens",
            "Standard" if priced else "",
            cost,
            cost,
            cost,
            cost,
            "USD",
            "",
            "",
            orjson.dumps(row_tags, option=orjson.OPT_SORT_KEYS).decode(),
        ]


def focus_csv(rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """The header and then `rows` as CSV text, in pieces of about 64 KB for a streaming response."""
    buffer = io.StringIO()
    writer = csv_writer(buffer, lineterminator="\r\n")
    writer.writerow(FOCUS_COLUMNS)
    for row in rows:
        writer.writerow(row)
        if buffer.tell() >= _FLUSH_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
