"""The audit page's filters, read from the query string."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.utils.dateparse import parse_date

from .selectors import AuditFilters


class AuditFilterForm(forms.Form):
    """`?actor=&action=&target_type=&target_id=&from=&to=`; `from`/`to` take a date or a date and time
    (in the site's time zone), and a bare `to` date includes that whole day."""

    actor = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=100)
    target_type = forms.CharField(required=False, max_length=100)
    target_id = forms.CharField(required=False, max_length=100)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Python keywords, so not declared as attributes.
        self.fields["from"] = forms.DateTimeField(required=False)
        self.fields["to"] = forms.DateTimeField(required=False)

    def clean_to(self) -> datetime | None:
        to: datetime | None = self.cleaned_data.get("to")
        if to is not None and parse_date(str(self.data.get("to", "")).strip()) is not None:
            to += timedelta(days=1)
        return to

    def clean(self):
        cleaned = super().clean() or {}
        since, until = cleaned.get("from"), cleaned.get("to")
        if since is not None and until is not None and until <= since:
            self.add_error("to", "“To” must come after “From”.")
        return cleaned

    def filters(self) -> AuditFilters:
        """The valid filters; an invalid one filters nothing (the page shows its error, the CSV refuses)."""
        self.is_valid()
        value = {name: self.cleaned_data.get(name) for name in self.fields if name not in self.errors}
        return AuditFilters(
            actor=value.get("actor") or "",
            action=value.get("action") or "",
            target_type=value.get("target_type") or "",
            target_id=value.get("target_id") or "",
            since=value.get("from"),
            until=value.get("to"),
        )

    @property
    def given(self) -> list[tuple[str, str]]:
        """The filters as typed, to keep them when the tenant switcher reloads the page."""
        return [(name, str(self.data[name])) for name in self.fields if self.data.get(name)]
