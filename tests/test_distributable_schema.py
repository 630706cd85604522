"""The schema stays distributable by tenant (docs/scaling.md, "Running on Citus").

On a distributed PostgreSQL (Citus) the tenant-owned tables are sharded by `tenant_id`, so that one
tenant's rows, and every statement about one tenant, stay on one node. That works only if:

- every primary key and unique constraint of a distributed table includes `tenant_id` (a node can only
  check uniqueness among the rows it holds);
- every foreign key between two distributed tables includes `tenant_id` on both sides (the two rows
  must be on the same node); a distributed table may point at a reference table, never the reverse;
- `tenant_id` is never NULL in a distributed table (a row needs a shard).

Every table is classified: REFERENCE (small, shared: replicated to every node), LOCAL (kept on the
coordinator only), or distributed by tenant (every other table; it must have a `tenant_id` or point at a
table that has one, otherwise the test asks for a classification). The rules are read from Django's
model meta and, on PostgreSQL, from the real constraints and indexes in pg_catalog (which also sees
what migrations made with raw SQL).

The schema does not meet the rules today. KNOWN_VIOLATIONS lists every exception with what Citus would
need instead: it is the migration plan. A new violation fails the test; fixing one fails it too until
its line is removed, so the list only shrinks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.db import connection, models
from django.test.utils import isolate_apps

from finops.models import LlmModel, UsageRecord
from tenants.models import Tenant

TENANT_TABLE = "tenants_tenant"
TENANT_COLUMN = "tenant_id"

# Replicated to every node: the catalog, the tenants themselves, keys and memberships (looked up by key
# prefix or by person, across tenants, on every request), Django's users and permissions, and the
# all-tenant rollups (platform dashboards only; written once per day per refresh batch).
REFERENCE = {
    "tenants_tenant",
    "tenants_apikey",
    "tenants_membership",
    "finops_modeltier",
    "finops_llmmodel",
    "finops_modelprice",
    "finops_workflow",
    "finops_envelopeproposal",
    "finops_alltenantsrollup",
    "finops_alltenantsworkflowrollup",
    "finops_alltenantsmodelrollup",
    "finops_alltenantshourrollup",
    "budgets_learnedsafetyfactor",  # preflight's input safety factors: a few rows per model family, read whole
    "auth_user",
    "auth_group",
    "auth_permission",
    "auth_group_permissions",
    "auth_user_groups",
    "auth_user_user_permissions",
    "django_content_type",
}
# On the coordinator only: written per sign-in or admin action, never joined with tenant data.
LOCAL = {
    "django_session",
    "django_admin_log",
    "finops_pendingjob",  # the job outbox: rows of one database's own work, never joined to tenant data
}

# Every way today's schema breaks the rules, with what Citus needs. The surrogate `id` keys are the
# common case: each becomes (tenant_id, id), and each foreign key to such a table gains tenant_id.
_PK = "PK (id) -> (tenant_id, id)"
KNOWN_VIOLATIONS: dict[str, str] = {
    # tenants
    "tenants_auditevent: primary key (id)": _PK,
    "tenants_auditevent: tenant_id nullable": "platform events (no tenant) go to a platform tenant row "
    "(e.g. tenant 0), then tenant_id NOT NULL",
    # finops: usage, rollups, per-tenant workflow settings, prompts
    "finops_usagerecord: primary key (id)": "PK (id), on PostgreSQL (id, occurred_at) as the monthly partitions "
    "need -> (tenant_id, id, occurred_at); the idempotency key (tenant_id, request_id) is finops_usagekey's PK, "
    "already right for Citus (docs/scaling.md)",
    "finops_usagerollup: primary key (id)": _PK,
    "finops_usagetagrollup: primary key (id)": _PK,
    "finops_tenantworkflowrollup: primary key (id)": _PK,
    "finops_tenantdayrollup: primary key (id)": _PK,
    "finops_rollupdirtyday: primary key (id)": _PK + " (or the (tenant_id, day) key as PK)",
    "finops_tenantworkflowpolicy: primary key (id)": _PK + " (or the (tenant_id, workflow_id) key as PK)",
    "finops_tenantworkflowenvelope: primary key (id)": _PK + " (or the (tenant_id, workflow_id) key as PK)",
    "finops_promptversion: primary key (id)": _PK,
    # budgets: budgets and windows. Platform-wide budgets (tenant NULL) are charged by every tenant:
    # they live on a platform tenant's shard, and a charge to one is a two-node transaction.
    "budgets_budget: primary key (id)": _PK,
    "budgets_budget: tenant_id nullable": "platform-wide budgets on a platform tenant row, tenant_id NOT NULL",
    "budgets_budgetwindow: no tenant_id": "add tenant_id (copied from the budget)",
    "budgets_budgetwindow: primary key (id)": _PK,
    "budgets_budgetwindow: unique (budget_id, starts_at)": "-> (tenant_id, budget_id, starts_at)",
    "budgets_budgetwindow: fk (budget_id) -> budgets_budget (id)": "-> (tenant_id, budget_id)",
    # reservations: a hold on a platform-wide window crosses tenants, so that FK cannot be colocated
    "budgets_reservation: primary key (id)": _PK,
    "budgets_reservationhold: no tenant_id": "add tenant_id (the reservation's)",
    "budgets_reservationhold: primary key (id)": _PK,
    "budgets_reservationhold: fk (reservation_id) -> budgets_reservation (id)": "-> (tenant_id, reservation_id)",
    "budgets_reservationhold: fk (window_id) -> budgets_budgetwindow (id)": "-> (tenant_id, window_id) for "
    "the tenant's own windows; holds on platform-wide windows keep no FK (checked by budgets_reserve())",
    # controls, approvals, alerts, notifications, anomalies
    "budgets_control: primary key (id)": _PK,
    "budgets_control: tenant_id nullable": "platform-wide controls on a platform tenant row",
    "budgets_control: fk (budget_id) -> budgets_budget (id)": "-> (tenant_id, budget_id)",
    "budgets_control: fk (window_id) -> budgets_budgetwindow (id)": "-> (tenant_id, window_id)",
    "budgets_approvalrequest: primary key (id)": _PK,
    "budgets_approvalrequest: fk (budget_id) -> budgets_budget (id)": "-> (tenant_id, budget_id); a platform "
    "budget's approval keeps no FK",
    "budgets_approvalrequest: fk (window_id) -> budgets_budgetwindow (id)": "-> (tenant_id, window_id); "
    "as for budget_id",
    "budgets_approvalrequest: fk (prompt_version_id) -> finops_promptversion (id)": "-> (tenant_id, prompt_version_id)",
    "budgets_alert: primary key (id)": _PK,
    "budgets_alert: tenant_id nullable": "platform-wide alerts on a platform tenant row",
    "budgets_alert: unique (window_id, kind, level)": "-> (tenant_id, window_id, kind, level)",
    "budgets_alert: fk (budget_id) -> budgets_budget (id)": "-> (tenant_id, budget_id)",
    "budgets_alert: fk (window_id) -> budgets_budgetwindow (id)": "-> (tenant_id, window_id)",
    "budgets_notificationchannel: primary key (id)": _PK,
    "budgets_notificationchannel: tenant_id nullable": "platform channels on a platform tenant row; a "
    "platform channel receiving a tenant's alert then crosses tenants (deliver by id, no FK)",
    "budgets_notification: no tenant_id": "add tenant_id (the alert's)",
    "budgets_notification: primary key (id)": _PK,
    "budgets_notification: unique (alert_id, channel_id)": "-> (tenant_id, alert_id, channel_id)",
    "budgets_notification: fk (alert_id) -> budgets_alert (id)": "-> (tenant_id, alert_id)",
    "budgets_notification: fk (channel_id) -> budgets_notificationchannel (id)": "-> (tenant_id, channel_id) "
    "for the tenant's channels; platform channels keep no FK",
    "budgets_notificationattempt: no tenant_id": "add tenant_id (the notification's)",
    "budgets_notificationattempt: primary key (id)": _PK,
    "budgets_notificationattempt: fk (notification_id) -> budgets_notification (id)": "-> (tenant_id, notification_id)",
    "budgets_anomaly: primary key (id)": _PK,
    "budgets_anomaly: fk (alert_id) -> budgets_alert (id)": "-> (tenant_id, alert_id)",
    "budgets_anomaly_controls: no tenant_id": "a through model with tenant_id replaces the implicit M2M table",
    "budgets_anomaly_controls: primary key (id)": _PK,
    "budgets_anomaly_controls: unique (anomaly_id, control_id)": "-> (tenant_id, anomaly_id, control_id)",
    "budgets_anomaly_controls: fk (anomaly_id) -> budgets_anomaly (id)": "-> (tenant_id, anomaly_id)",
    "budgets_anomaly_controls: fk (control_id) -> budgets_control (id)": "-> (tenant_id, control_id)",
}


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]


@dataclass
class Table:
    """What the rules need to know about one table, from the models or from pg_catalog."""

    name: str
    columns: dict[str, bool] = field(default_factory=dict)  # column -> nullable
    primary_key: tuple[str, ...] = ()
    uniques: set[tuple[str, ...]] = field(default_factory=set)
    foreign_keys: set[ForeignKey] = field(default_factory=set)

    def merge(self, other: Table) -> None:
        self.columns.update(other.columns)
        self.primary_key = self.primary_key or other.primary_key
        self.uniques |= other.uniques
        self.foreign_keys |= other.foreign_keys


def tables_from_models() -> dict[str, Table]:
    """Every table Django manages (many-to-many tables included), as its models declare it."""
    return {
        model._meta.db_table: table_from_model(model)
        for model in apps.get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy
    }


def table_from_model(model: type[models.Model]) -> Table:
    meta = model._meta
    table = Table(meta.db_table)
    by_name = {f.name: f for f in meta.concrete_fields}
    for f in meta.concrete_fields:
        table.columns[f.column] = f.null
        if f.unique and not f.primary_key:
            table.uniques.add((f.column,))
        if isinstance(f, models.ForeignKey):
            target = f.related_model._meta
            table.foreign_keys.add(ForeignKey((f.column,), target.db_table, (f.target_field.column,)))
    # A CompositePrimaryKey (Django 5.2) lists its fields; a plain key is one field.
    table.primary_key = tuple(f.column for f in meta.pk_fields)
    for together in meta.unique_together:
        table.uniques.add(tuple(by_name[name].column for name in together))
    for constraint in meta.constraints:
        if isinstance(constraint, models.UniqueConstraint) and constraint.fields:
            table.uniques.add(tuple(by_name[name].column for name in constraint.fields))
    return table


def tables_from_postgres(names: set[str]) -> dict[str, Table]:
    """The same tables as PostgreSQL holds them: columns, primary keys, every unique index (partial
    and raw-SQL ones too) and every foreign-key constraint."""
    tables = {name: Table(name) for name in names}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, a.attname, NOT a.attnotnull
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
              AND pg_table_is_visible(c.oid)
            """,
            [sorted(names)],
        )
        for table, column, nullable in cursor.fetchall():
            tables[table].columns[column] = nullable
        cursor.execute(
            """
            SELECT c.relname, i.indisprimary,
                   array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            WHERE c.relname = ANY(%s) AND i.indisunique AND pg_table_is_visible(c.oid)
            """,
            [sorted(names)],
        )
        for table, primary, columns in cursor.fetchall():
            if primary:
                tables[table].primary_key = tuple(columns)
            else:
                tables[table].uniques.add(tuple(columns))
        cursor.execute(
            """
            SELECT c.relname, t.relname,
                   array(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.n),
                   array(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum ORDER BY u.n)
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class t ON t.oid = k.confrelid
            WHERE k.contype = 'f' AND c.relname = ANY(%s) AND pg_table_is_visible(c.oid)
            """,
            [sorted(names)],
        )
        for table, target, columns, target_columns in cursor.fetchall():
            tables[table].foreign_keys.add(ForeignKey(tuple(columns), target, tuple(target_columns)))
    return tables


def distributed_tables(tables: dict[str, Table], reference: set[str], local: set[str]) -> set[str]:
    """Every table that is neither reference nor local is distributed by tenant."""
    return set(tables) - reference - local


def violations(tables: dict[str, Table], reference: set[str], local: set[str]) -> set[str]:
    """Each way the tables break the distribution rules, one line each (the keys of KNOWN_VIOLATIONS)."""
    distributed = distributed_tables(tables, reference, local)
    found = set()
    for name in sorted(tables):
        table = tables[name]
        if name in distributed:
            parents = {fk.target for fk in table.foreign_keys} & distributed
            if TENANT_COLUMN not in table.columns:
                if not parents:
                    found.add(f"{name}: not classified (no tenant_id, no tenant-owned parent): REFERENCE or LOCAL?")
                    continue
                found.add(f"{name}: no tenant_id")
            elif table.columns[TENANT_COLUMN]:
                found.add(f"{name}: tenant_id nullable")
            if TENANT_COLUMN not in table.primary_key:
                found.add(f"{name}: primary key ({', '.join(table.primary_key)})")
            for columns in sorted(table.uniques):
                if TENANT_COLUMN not in columns:
                    found.add(f"{name}: unique ({', '.join(columns)})")
        for fk in sorted(table.foreign_keys, key=lambda fk: (fk.columns, fk.target)):
            target_distributed = fk.target in distributed
            if name in distributed and target_distributed:
                if TENANT_COLUMN in fk.columns and TENANT_COLUMN in fk.target_columns:
                    continue
                # A Django ForeignKey is one column; its composite database constraint (made by a migration,
                # with db_constraint=False on the field) makes the relation colocated.
                if any(
                    other.target == fk.target
                    and set(fk.columns) < set(other.columns)
                    and TENANT_COLUMN in other.columns
                    and TENANT_COLUMN in other.target_columns
                    for other in table.foreign_keys
                ):
                    continue
                found.add(f"{name}: fk ({', '.join(fk.columns)}) -> {fk.target} ({', '.join(fk.target_columns)})")
            elif name not in distributed and target_distributed:
                kind = "reference" if name in reference else "local"
                columns = ", ".join(fk.columns)
                found.add(f"{name}: fk ({columns}) -> {fk.target}: a {kind} table cannot point at a distributed one")
    return found


def schema_tables() -> dict[str, Table]:
    tables = tables_from_models()
    if connection.vendor == "postgresql":
        for name, table in tables_from_postgres(set(tables)).items():
            tables[name].merge(table)
    return tables


def _postgresql_or_skip(reason: str) -> None:
    """Skips on SQLite on a developer's machine; fails when CI asks for the services (REQUIRE_SERVICES=1)."""
    if connection.vendor == "postgresql":
        return
    if os.environ.get("REQUIRE_SERVICES", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"REQUIRE_SERVICES=1 but the database is {connection.vendor}: {reason}")
    pytest.skip(reason)


# --- the rules on today's schema -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_new_violation_of_the_distribution_rules():
    new = violations(schema_tables(), REFERENCE, LOCAL) - set(KNOWN_VIOLATIONS)
    assert not new, (
        "The schema would no longer distribute by tenant (docs/scaling.md): include tenant_id in the key, "
        "classify the table, or (a decision, say why) add the line to KNOWN_VIOLATIONS:\n" + "\n".join(sorted(new))
    )


@pytest.mark.django_db
def test_every_known_violation_still_exists():
    """A fixed exception leaves the list, so the list stays the migration plan still to do."""
    _postgresql_or_skip("the full picture (raw-SQL indexes and constraints) is PostgreSQL's")
    gone = set(KNOWN_VIOLATIONS) - violations(schema_tables(), REFERENCE, LOCAL)
    assert not gone, "Fixed, remove from KNOWN_VIOLATIONS:\n" + "\n".join(sorted(gone))


def test_every_classified_table_exists_and_the_classes_do_not_overlap():
    tables = tables_from_models()
    assert not (REFERENCE | LOCAL) - set(tables)
    assert not REFERENCE & LOCAL


def test_usage_rollups_and_windows_are_distributed_and_the_catalog_is_reference():
    """The split docs/scaling.md describes: usage, rollups and budget windows by tenant; catalog shared."""
    distributed = distributed_tables(tables_from_models(), REFERENCE, LOCAL)
    for name in (
        "finops_usagerecord",
        "finops_usagerollup",
        "finops_tenantdayrollup",
        "budgets_budgetwindow",
        "budgets_reservation",
        "budgets_budget",
        "tenants_auditevent",
    ):
        assert name in distributed
    for name in ("finops_llmmodel", "finops_modelprice", "finops_modeltier", "finops_workflow", "tenants_tenant"):
        assert name not in distributed


@pytest.mark.django_db
def test_the_idempotency_key_of_usage_is_already_tenant_scoped():
    """The one key ingest relies on for 'nothing twice' needs no change on Citus: the usage table's own
    unique constraint on SQLite, finops_usagekey's primary key where usage is partitioned (PostgreSQL)."""
    tables = schema_tables()
    assert (TENANT_COLUMN, "request_id") in tables["finops_usagerecord"].uniques
    assert tables["finops_usagekey"].primary_key == (TENANT_COLUMN, "request_id")
    assert not any(line.startswith("finops_usagerecord: unique") for line in KNOWN_VIOLATIONS)


# --- the checker itself: a deliberately bad schema is reported ------------------------------------------------


def _good_pair() -> dict[str, Table]:
    return {
        "catalog": Table("catalog", {"id": False}, ("id",)),
        "parent": Table(
            "parent",
            {"tenant_id": False, "id": False},
            ("tenant_id", "id"),
            foreign_keys={ForeignKey(("catalog_id",), "catalog", ("id",))},
        ),
        "child": Table(
            "child",
            {"tenant_id": False, "id": False, "parent_id": False},
            ("tenant_id", "id"),
            uniques={("tenant_id", "parent_id")},
            foreign_keys={
                ForeignKey(("parent_id",), "parent", ("id",)),
                ForeignKey(("tenant_id", "parent_id"), "parent", ("tenant_id", "id")),
            },
        ),
    }


def test_a_schema_that_follows_the_rules_has_no_violation():
    assert violations(_good_pair(), {"catalog"}, set()) == set()


def test_a_bad_schema_is_reported_line_by_line():
    tables = _good_pair()
    child = tables["child"]
    child.primary_key = ("id",)
    child.uniques.add(("request_id",))
    child.foreign_keys = {ForeignKey(("parent_id",), "parent", ("id",))}
    tables["parent"].columns["tenant_id"] = True
    tables["grandchild"] = Table(
        "grandchild", {"id": False}, ("id",), foreign_keys={ForeignKey(("child_id",), "child", ("id",))}
    )
    tables["orphan"] = Table("orphan", {"id": False}, ("id",))
    tables["catalog"].foreign_keys.add(ForeignKey(("owner_id",), "parent", ("id",)))

    assert violations(tables, {"catalog"}, set()) == {
        "child: primary key (id)",
        "child: unique (request_id)",
        "child: fk (parent_id) -> parent (id)",
        "parent: tenant_id nullable",
        "grandchild: no tenant_id",
        "grandchild: primary key (id)",
        "grandchild: fk (child_id) -> child (id)",
        "orphan: not classified (no tenant_id, no tenant-owned parent): REFERENCE or LOCAL?",
        "catalog: fk (owner_id) -> parent: a reference table cannot point at a distributed one",
    }


@isolate_apps("finops")
def test_a_bad_django_model_is_reported():
    """A model someone might add: a nullable tenant, a unique request id without the tenant, a link to a
    usage record by id, and a key per record. Each is a line the test would fail on."""

    class UsageNote(models.Model):
        tenant = models.ForeignKey(Tenant, null=True, on_delete=models.CASCADE)
        record = models.ForeignKey(UsageRecord, on_delete=models.CASCADE)
        request_id = models.CharField(max_length=64, unique=True)

        class Meta:
            app_label = "finops"
            constraints = [models.UniqueConstraint(fields=["record"], name="usagenote_once")]

        def __str__(self) -> str:
            return self.request_id

    tables = tables_from_models()
    tables[UsageNote._meta.db_table] = table_from_model(UsageNote)
    new = violations(tables, REFERENCE, LOCAL) - set(KNOWN_VIOLATIONS)
    assert new == {
        "finops_usagenote: tenant_id nullable",
        "finops_usagenote: primary key (id)",
        "finops_usagenote: unique (request_id)",
        "finops_usagenote: unique (record_id)",
        "finops_usagenote: fk (record_id) -> finops_usagerecord (id)",
    }


@isolate_apps("finops")
def test_a_model_with_the_tenant_in_every_key_passes():
    class TenantNote(models.Model):
        pk = models.CompositePrimaryKey("tenant_id", "id")
        id = models.BigIntegerField()
        tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE)
        model = models.ForeignKey(LlmModel, on_delete=models.PROTECT)
        request_id = models.CharField(max_length=64)

        class Meta:
            app_label = "finops"
            constraints = [models.UniqueConstraint(fields=["tenant", "request_id"], name="tenantnote_once")]

        def __str__(self) -> str:
            return self.request_id

    tables = tables_from_models()
    tables[TenantNote._meta.db_table] = table_from_model(TenantNote)
    assert violations(tables, REFERENCE, LOCAL) - set(KNOWN_VIOLATIONS) == set()


@pytest.mark.django_db
def test_a_bad_table_made_in_postgresql_is_reported():
    """A table made with raw SQL (as a migration might): its surrogate key, its unique index without the
    tenant and its foreign key to usage by (id, occurred_at) are all found in pg_catalog, and the test would fail."""
    _postgresql_or_skip("reads pg_catalog")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TABLE finops_badusagenote (
                id bigserial PRIMARY KEY,
                tenant_id bigint NOT NULL REFERENCES tenants_tenant (id),
                usage_id bigint NOT NULL,
                usage_at timestamptz NOT NULL,
                request_id text NOT NULL,
                FOREIGN KEY (usage_id, usage_at) REFERENCES finops_usagerecord (id, occurred_at)
            );
            CREATE UNIQUE INDEX finops_badusagenote_request ON finops_badusagenote (request_id);
            """
        )
    tables = schema_tables()
    tables.update(tables_from_postgres({"finops_badusagenote"}))
    new = violations(tables, REFERENCE, LOCAL) - set(KNOWN_VIOLATIONS)
    assert new == {
        "finops_badusagenote: primary key (id)",
        "finops_badusagenote: unique (request_id)",
        "finops_badusagenote: fk (usage_id, usage_at) -> finops_usagerecord (id, occurred_at)",
    }
