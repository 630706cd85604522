"""CSV cells that a spreadsheet will not run as formulas.

Excel, LibreOffice and Google Sheets treat a cell that starts with `=`, `+`, `-` or `@` (and, in some,
a tab or a carriage return) as a formula, so a tag value, a request id or a name a client sent could
run `=HYPERLINK(...)` or worse on the machine of whoever opens the export (CSV injection, OWASP). Every
CSV this product writes goes through `csv_writer`: such a text cell gets a leading `'`, which
spreadsheets show as text and drop from the value. Numbers (ints, Decimals, and strings that are a
plain number such as "-0.25") are left as they are: they cannot be formulas.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any

from django.http import HttpResponse
from django.utils import timezone

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return f"'{value}"
    return value


class SafeCsvWriter:
    """`csv.writer` with every cell passed through `safe_cell`."""

    def __init__(self, stream, **kwargs: Any) -> None:
        self._writer = csv.writer(stream, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(stream, **kwargs: Any) -> SafeCsvWriter:
    return SafeCsvWriter(stream, **kwargs)


def wants_csv(request) -> bool:
    """A table page answers `?format=csv` with the rows it shows, as a download."""
    return request.GET.get("format") == "csv"


def csv_download(*, name: str, scope, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> HttpResponse:
    """The rows as a CSV attachment named `<name>-<tenant or all>-<UTC time>.csv`."""
    out = io.StringIO()
    writer = csv_writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    who = scope.tenant.slug if scope.tenant is not None else "all"
    filename = f"{name}-{who}-{timezone.now():%Y%m%d-%H%M%S}.csv"
    return HttpResponse(
        out.getvalue(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
