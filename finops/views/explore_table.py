"""The explorer's table: rows of an Exploration as cells for the page and the CSV, with totals."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cached_property

from django.urls import reverse

from finops.pricing import nanos_to_usd
from finops.selectors.explore import Exploration, ExplorerRow
from finops.selectors.overview import ENVIRONMENT_LABELS
from finops.selectors.spend import UNKNOWN
from finops.templatetags.money import tokens as humanize_tokens
from finops.templatetags.money import usd
from tenants.scope import TenantScope

from .explore_form import dimension_label


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell: what the page shows and the exact value the CSV (and `data-value`) holds."""

    display: str
    value: str
    sub: str = ""  # a second line (a slug under a name)
    url: str = ""
    muted: bool = False
    keyed: bool = False  # a tenant or workflow column: `sub` (the slug) is a CSV column of its own


def _share(share) -> str:
    pct = share * 100
    if 0 < pct < 0.1:
        return "<0.1%"
    return f"{pct:.1f}%"


@dataclass(frozen=True, slots=True)
class TableRow:
    cells: list[Cell]
    other: bool = False  # the row that sums the groups beyond the table's length


class ExplorerTable:
    """The rows and columns the explorer shows, built once for the page and for the CSV.

    Every cell carries the exact value the CSV holds (also the cell's `data-value` on the page); a
    tenant or workflow cell also its slug, which the CSV gives a column of its own.
    """

    def __init__(self, exploration: Exploration, scope: TenantScope):
        self.result = exploration
        self.scope = scope
        self.dims = exploration.query.group_by
        self.label_columns = max(1, len(self.dims))  # without grouping, one column says "Total"
        self.show_unpriced = exploration.totals.unpriced_calls > 0

    @property
    def columns(self) -> list[tuple[str, str, bool]]:
        """(label, sort key, numeric) per column."""
        cols = [(dimension_label(d), "name" if i == 0 else "name2", False) for i, d in enumerate(self.dims)]
        cols = cols or [("", "", False)]
        cols.append(("Calls", "calls", True))
        if self.show_unpriced:
            cols.append(("Unpriced calls", "", True))
        cols += [
            ("Tokens", "tokens", True),
            ("Cost (USD)", "cost", True),
            ("Cost per call (USD)", "cost_per_call", True),
            ("Share of spend (%)", "share", True),
        ]
        return cols

    def csv_header(self) -> list[str]:
        header = []
        for i, (label, _, numeric) in enumerate(self.columns):
            header.append(label)
            if not numeric and i < len(self.dims) and self.dims[i] in ("tenant", "workflow"):
                header.append(f"{label} slug")
        return header

    def _dim_cell(self, dim: str, key: str) -> Cell:
        if key == UNKNOWN:
            none = {"workflow": "(no workflow)", "tier": "(no tier)"}.get(dim, "(none)")
            return Cell(none, none, muted=True)
        if dim == "tenant":
            name = self.scope.tenant_names.get(key, key)
            return Cell(name, name, sub=key, url=tenant_url(key))
        if dim == "workflow":
            name = self.result.workflow_names.get(key, key)
            return Cell(name, name, sub=key, url=reverse("workflow_detail", args=[key]) + self.scope.query)
        if dim == "environment":
            return Cell(ENVIRONMENT_LABELS.get(key, key), key)
        return Cell(key, key)

    def _row(self, row: ExplorerRow, labels: list[Cell], *, other: bool = False) -> TableRow:
        keyed = [i < len(self.dims) and self.dims[i] in ("tenant", "workflow") for i in range(len(labels))]
        cells = [replace(cell, keyed=k) for cell, k in zip(labels, keyed, strict=True)]
        cells.append(Cell(f"{row.calls:,}", str(row.calls)))
        if self.show_unpriced:
            cells.append(Cell(f"{row.unpriced_calls:,}" if row.unpriced_calls else "—", str(row.unpriced_calls)))
        per_call = row.cost_per_call_nanos
        cells += [
            Cell(humanize_tokens(row.tokens), str(row.tokens)),
            Cell(usd(row.cost_nanos), nanos_to_usd(row.cost_nanos)),
            Cell(usd(per_call), nanos_to_usd(per_call) if per_call is not None else ""),
            Cell(_share(row.share), f"{row.share * 100:.2f}"),
        ]
        return TableRow(cells=cells, other=other)

    @cached_property
    def rows(self) -> list[TableRow]:
        out = [
            self._row(r, [self._dim_cell(d, k) for d, k in zip(self.dims, r.key, strict=True)])
            for r in self.result.rows
        ]
        if self.result.other is not None:
            label = f"Other ({self.result.other.folded:,} smaller groups)"
            blanks = [Cell("", "")] * (self.label_columns - 1)
            out.append(self._row(self.result.other, [Cell(label, label, muted=True), *blanks], other=True))
        return out

    @cached_property
    def totals(self) -> TableRow:
        t = self.result.totals
        row = ExplorerRow(
            key=(),
            calls=t.calls,
            tokens=t.tokens,
            cost_nanos=t.cost_nanos,
            unpriced_calls=t.unpriced_calls,
            share=Decimal(1) if t.cost_nanos else Decimal(0),
        )
        return self._row(row, [Cell("Total", "Total"), *[Cell("", "")] * (self.label_columns - 1)])

    def csv_rows(self) -> list[list[str]]:
        def flat(row: TableRow) -> list[str]:
            out = []
            for cell in row.cells:
                out.append(cell.value)
                if cell.keyed:
                    out.append(cell.sub)
            return out

        return [flat(r) for r in self.rows] + [flat(self.totals)]


def tenant_url(slug: str) -> str:
    return reverse("tenant_detail", args=[slug])
