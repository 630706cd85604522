"""The audit log for changes made in the Django admin.

Services write their own `AuditEvent`; the admin also edits rows no service owns (tenants, memberships,
workflows, tiers) and deletes catalog rows. `AuditedModelAdmin` gives each of those saves and deletions
one event, `<noun>.create` / `<noun>.update` / `<noun>.delete` (`LlmModel` -> `llm_model.delete`), in
the transaction of the change. `before` and `after` are the row's concrete fields as stored, read from
the database rather than the form, so they say exactly what was and what was written: Decimals as exact
strings, datetimes and dates as ISO 8601, foreign keys by id (`tenant_id`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from functools import partial
from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import Model, QuerySet

from .models import AuditEvent, Tenant
from .scope import Actor
from .services import audit_record

# Never copied into the log, whichever model carries them.
SECRET_FIELDS = frozenset({"secret_hash", "password"})


def admin_actor(request: Any) -> Actor:
    return Actor(user=request.user)


def audit_noun(model: type[Model]) -> str:
    """`LlmModel` -> `llm_model`: the prefix of a model's actions, spelled as the services spell theirs."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()


def audit_tenant_id(obj: Model) -> int | None:
    """The tenant an event about `obj` belongs to: the tenant itself, the row's tenant, or None
    (platform-wide: the catalog, workflows, platform keys)."""
    if isinstance(obj, Tenant):
        return obj.pk
    return getattr(obj, "tenant_id", None)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    if isinstance(value, Decimal):
        return str(value)  # exact, with the column's decimal places as stored
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def stored_rows(model: type[Model], pks: Iterable[Any]) -> dict[Any, dict[str, Any]]:
    """The rows' concrete fields as stored now, by primary key, locked until the transaction ends so
    a concurrent edit cannot slip between this read and the change it describes."""
    names = [f.attname for f in model._meta.concrete_fields if f.name not in SECRET_FIELDS]
    pk_name = model._meta.pk.attname
    rows = model._base_manager.select_for_update().filter(pk__in=list(pks)).values(*names)
    return {row[pk_name]: {k: _json_safe(v) for k, v in row.items()} for row in rows}


def stored_snapshot(obj: Model) -> dict[str, Any] | None:
    """`obj`'s row as stored now, or None when it has none (yet)."""
    if obj.pk is None:
        return None
    return stored_rows(type(obj), [obj.pk]).get(obj.pk)


def _unchanged(model: type[Model], before: dict[str, Any], after: dict[str, Any] | None) -> bool:
    # `updated_at` moves on every save; a save that changed nothing else is not a change.
    volatile = {f.attname for f in model._meta.concrete_fields if getattr(f, "auto_now", False)}
    return after is not None and all(before.get(k) == v for k, v in after.items() if k not in volatile)


def _record(obj: Model, verb: str, actor: Actor, before: dict | None, after: dict | None) -> AuditEvent:
    return audit_record(
        action=f"{audit_noun(type(obj))}.{verb}",
        actor=actor,
        tenant_id=audit_tenant_id(obj),
        target=obj,
        before=before,
        after=after,
    )


def audited_save(obj: Model, *, actor: Actor, save: Callable[[], object] | None = None) -> AuditEvent | None:
    """Save `obj` (through `save`, else `obj.save()`) and record `<noun>.create` or `<noun>.update`;
    a save that changed nothing records nothing."""
    with transaction.atomic():
        before = stored_snapshot(obj)
        (save or obj.save)()
        after = stored_snapshot(obj)
        if before is not None and _unchanged(type(obj), before, after):
            return None
        return _record(obj, "update" if before is not None else "create", actor, before, after)


def audited_delete(obj: Model, *, actor: Actor, delete: Callable[[], object] | None = None) -> None:
    """Delete `obj` (through `delete`, else `obj.delete()`) and record `<noun>.delete`."""
    with transaction.atomic():
        before = stored_snapshot(obj)
        if before is not None:
            # Written first, while the instance still has its id; the delete rolls back with it.
            _record(obj, "delete", actor, before, None)
        (delete or obj.delete)()


def audited_delete_queryset(queryset: QuerySet, *, actor: Actor, delete: Callable[[], object] | None = None) -> None:
    """Delete every row of `queryset` (through `delete`, else `queryset.delete()`), one `<noun>.delete`
    event per row."""
    with transaction.atomic():
        objs = list(queryset)
        before = stored_rows(queryset.model, [obj.pk for obj in objs])
        for obj in objs:
            if obj.pk in before:
                _record(obj, "delete", actor, before[obj.pk], None)
        (delete or queryset.delete)()


def audited_formset_save(formset: Any, *, actor: Actor, service_save: Callable[[Any], object] | None = None) -> None:
    """Save an admin inline formset as `formset.save()` does, auditing each row it deletes, changes or
    adds. With `service_save`, added and changed rows are saved through that service, which audits them
    itself; only deletions are recorded here."""
    instances = formset.save(commit=False)
    for obj in formset.deleted_objects:
        audited_delete(obj, actor=actor)
    for obj in instances:
        if service_save is not None:
            service_save(obj)
        else:
            audited_save(obj, actor=actor)
    formset.save_m2m()


class AuditedModelAdmin(admin.ModelAdmin):
    """A model admin whose saves and deletions, bulk deletion and inline rows included, each write one
    `AuditEvent` in the transaction of the change. An admin whose rows are saved by a service overrides
    `save_model` to call it: the service's event then stands for the save, and deletions stay audited."""

    def save_model(self, request, obj, form, change):
        audited_save(obj, actor=admin_actor(request), save=partial(super().save_model, request, obj, form, change))

    def delete_model(self, request, obj):
        audited_delete(obj, actor=admin_actor(request), delete=partial(super().delete_model, request, obj))

    def delete_queryset(self, request, queryset):
        audited_delete_queryset(
            queryset, actor=admin_actor(request), delete=partial(super().delete_queryset, request, queryset)
        )

    def save_formset(self, request, form, formset, change):
        audited_formset_save(formset, actor=admin_actor(request))
