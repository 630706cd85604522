"""The explorer's query string parsed into a form state and a SpendQuery (errors kept per field)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from finops.models import Environment
from finops.selectors.dashboard import day_start, utc_today
from finops.selectors.explore import EXPLORER_SORTS
from finops.selectors.spend import DIMENSIONS, TAG_PREFIX, SpendQuery

RANGE_PRESETS = (
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("mtd", "Month to date"),
    ("custom", "Custom dates"),
)
_PRESET_DAYS = {"7d": 7, "30d": 30, "90d": 90}
GRANULARITIES = (("hour", "Hour"), ("day", "Day"), ("month", "Month"))
DIMENSION_LABELS = {
    "tenant": "Tenant",
    "workflow": "Workflow",
    "model": "Model",
    "tier": "Model tier",
    "environment": "Environment",
}
EXPLORER_FILTERS = ("workflow", "model", "tier", "environment")
MAX_RANGE_DAYS = 400
_TAG_KEY_RE = re.compile(r"^[\w.:-]{1,64}$")
# Every parameter the explorer reads; the tenant switcher carries the others along.
EXPLORER_PARAMS = ("by", "by2", "range", "start", "end", "granularity", *EXPLORER_FILTERS, "tag", "sort")


@dataclass
class ExplorerForm:
    """The explorer's controls as parsed from the query string, with what was wrong with them."""

    by: str = "workflow"
    by2: str = ""
    range: str = "30d"
    start: str = ""
    end: str = ""
    granularity: str = "day"
    filters: dict[str, str] = field(default_factory=dict)
    tag: str = ""
    sort: str = "-cost"
    errors: list[str] = field(default_factory=list)

    @property
    def group_by(self) -> tuple[str, ...]:
        return tuple(d for d in (self.by, self.by2) if d)


def dimension_label(dim: str) -> str:
    if dim.startswith(TAG_PREFIX):
        return f"Tag {dim[len(TAG_PREFIX) :]}"
    return DIMENSION_LABELS.get(dim, dim)


def _parse_dimension(value: str, form: ExplorerForm) -> str:
    value = value.strip()
    if not value or value in DIMENSIONS:
        return value
    if value.startswith(TAG_PREFIX) and _TAG_KEY_RE.match(value[len(TAG_PREFIX) :]):
        return value
    form.errors.append(f"“{value[:80]}” is not something spend can be grouped by.")
    return ""


_EARLIEST_DAY, _LATEST_DAY = date(2000, 1, 1), date(2999, 12, 31)


def _parse_day(value: str, name: str, form: ExplorerForm) -> date | None:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        form.errors.append(f"The {name} date “{value[:40]}” is not a date (use YYYY-MM-DD).")
        return None
    if not _EARLIEST_DAY <= day <= _LATEST_DAY:
        form.errors.append(f"The {name} date {day.isoformat()} is out of range.")
        return None
    return day


def explorer_form_parse(params, now: datetime) -> tuple[ExplorerForm, SpendQuery | None]:
    """Parse the explorer's query string. Returns the query to run, or None with `form.errors` set."""
    form = ExplorerForm()
    form.by = _parse_dimension(params.get("by", "workflow"), form)
    form.by2 = _parse_dimension(params.get("by2", ""), form)
    if not form.by and form.by2:
        form.by, form.by2 = form.by2, ""
    if form.by2 == form.by:
        form.by2 = ""
    form.range = params.get("range", "30d")
    form.start, form.end = params.get("start", "").strip(), params.get("end", "").strip()
    if form.start or form.end:
        form.range = "custom"  # dates typed in win over the preset still selected beside them
    if form.range not in dict(RANGE_PRESETS):
        form.errors.append("Pick a time range from the list.")
        form.range = "30d"
    form.granularity = params.get("granularity") or ("hour" if form.range == "24h" else "day")
    if form.granularity not in dict(GRANULARITIES):
        form.errors.append("Granularity is hour, day or month.")
        form.granularity = "day"
    form.filters = {f: params.get(f, "").strip() for f in EXPLORER_FILTERS if params.get(f, "").strip()}
    if form.filters.get("environment", "") not in ("", *Environment.values):
        form.errors.append(f"There is no environment “{form.filters['environment'][:40]}”.")
    form.tag = params.get("tag", "").strip()
    if any("\x00" in v for v in (*form.filters.values(), form.tag)):
        form.errors.append("A filter holds a NUL character, which no name contains.")
        form.filters, form.tag = (
            {k: v.replace("\x00", "") for k, v in form.filters.items()},
            form.tag.replace("\x00", ""),
        )
    if form.tag and ("=" not in form.tag or not form.tag.partition("=")[0]):
        form.errors.append("Filter on a tag as key=value, e.g. region=eu-west-1.")
    sort = params.get("sort", "-cost")
    form.sort = sort if sort.lstrip("-") in EXPLORER_SORTS else "-cost"

    today = utc_today(now)
    start = end = None
    if form.range == "custom":
        first = _parse_day(form.start, "start", form) if form.start else today - timedelta(days=29)
        last = _parse_day(form.end, "end", form) if form.end else today
        if first and last:
            if last < first:
                form.errors.append("The end date is before the start date.")
            elif (last - first).days >= MAX_RANGE_DAYS:
                form.errors.append(f"Pick at most {MAX_RANGE_DAYS} days at a time.")
            else:
                start, end = day_start(first), day_start(last + timedelta(days=1))
                form.start, form.end = first.isoformat(), last.isoformat()
    elif form.range == "24h" and form.granularity == "hour":
        end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = end - timedelta(hours=24)
    else:
        end = day_start(today + timedelta(days=1))
        if form.range == "mtd":
            start = day_start(today.replace(day=1))
        else:  # the last 24 hours at day grain: today and yesterday, whole days
            start = end - timedelta(days=_PRESET_DAYS.get(form.range, 2))
    if form.errors or start is None or end is None:
        return form, None
    filters: dict[str, tuple[str, ...]] = {f: (v,) for f, v in form.filters.items()}
    if form.tag:
        filters["tag"] = (form.tag,)
    return form, SpendQuery(start=start, end=end, granularity=form.granularity, group_by=form.group_by, filters=filters)
