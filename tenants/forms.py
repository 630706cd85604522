"""The audit page's filters, read from the query string."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django import forms
from django.utils import timezone
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


class ApiKeyForm(forms.Form):
    """A new key: what it is for, what it may do, and until when."""

    name = forms.CharField(max_length=200, help_text="What the key is for, e.g. “support-bot prod”.")
    scopes = forms.MultipleChoiceField(
        choices=[
            ("ingest", "ingest: report usage"),
            ("preflight", "preflight: ask before a call"),
            ("read", "read: spend and usage"),
            ("manage", "manage: budgets"),
        ],
        widget=forms.CheckboxSelectMultiple,
        initial=["ingest", "preflight", "read"],
    )
    expires_at = forms.DateField(
        required=False,
        label="Expires on",
        help_text="Empty: never. The key stops working at the start of this day (UTC).",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_expires_at(self):
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now().date():
            raise forms.ValidationError("Choose a day after today.")
        return value

    def expires_at_datetime(self) -> datetime | None:
        value = self.cleaned_data.get("expires_at")
        return datetime.combine(value, time.min, tzinfo=UTC) if value else None


ROTATION_OVERLAPS = [
    ("0", "stops at once"),
    ("3600", "works for 1 more hour"),
    ("86400", "works for 24 more hours"),
    ("604800", "works for 7 more days"),
]


class ApiKeyRotateForm(forms.Form):
    overlap = forms.TypedChoiceField(choices=ROTATION_OVERLAPS, coerce=int, initial="3600", label="The old secret")

    def overlap_delta(self) -> timedelta:
        return timedelta(seconds=self.cleaned_data["overlap"])


ROLE_CHOICES = [
    ("viewer", "viewer: sees the tenant's spend"),
    ("approver", "approver: also decides approval requests"),
    ("admin", "admin: also budgets, keys and members"),
]


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="Someone who has an account, or a new username.")
    email = forms.EmailField(required=False, help_text="A new person gets the set-password link here too.")
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial="viewer")


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class TenantForm(forms.Form):
    slug = forms.SlugField(max_length=64, help_text="In URLs and API calls (?tenant=…); lowercase.")
    name = forms.CharField(max_length=200)
    external_id = forms.CharField(
        max_length=200, required=False, label="External id", help_text="e.g. your billing system's customer id."
    )
    time_zone = forms.CharField(
        max_length=64, initial="UTC", label="Time zone", help_text="e.g. UTC, Europe/Berlin, America/New_York."
    )
    status = forms.ChoiceField(
        choices=[("active", "active"), ("suspended", "suspended: its keys stop working, its data stays")],
        initial="active",
    )
