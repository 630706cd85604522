"""The audit log becomes append-only in the database: UPDATE, DELETE and TRUNCATE on it are refused.

The application never changes an audit row; the database now makes sure nothing else does either
(a careless queryset, a shell session, a bulk fix). On PostgreSQL a trigger function raises on every
row updated or deleted and on TRUNCATE; on SQLite (the embedded default) two triggers abort UPDATE
and DELETE (SQLite has no TRUNCATE; an unfiltered DELETE fires the trigger too).

Deleting a person, an API key or a tenant used to set the event's reference to NULL, an UPDATE the
triggers now refuse. The references become historical ids without a FK constraint (DO_NOTHING), so
those deletions leave the log untouched. Reversing to 0001 puts the constraints back, which fails if
events still name rows deleted since.

The SQL is written here once; the test suite reuses it to lift the guard for its own `flush`.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MESSAGE = "the audit log is append-only"

# No '%' anywhere: these run through DB-API cursors that treat it as a placeholder.
POSTGRESQL_CREATE = (
    """
    CREATE FUNCTION {table}_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING
            MESSAGE = TG_OP || ' on ' || TG_TABLE_NAME || ' refused: {message}',
            HINT = 'Audit events are only ever inserted.';
    END
    $$
    """,
    "CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
    "FOR EACH ROW EXECUTE FUNCTION {table}_refuse_change()",
    "CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
    "FOR EACH STATEMENT EXECUTE FUNCTION {table}_refuse_change()",
)
POSTGRESQL_DROP = (
    "DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
    "DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
    "DROP FUNCTION IF EXISTS {table}_refuse_change()",
)
SQLITE_CREATE = (
    "CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
    "BEGIN SELECT RAISE(ABORT, 'UPDATE on {table} refused: {message}'); END",
    "CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
    "BEGIN SELECT RAISE(ABORT, 'DELETE on {table} refused: {message}'); END",
)
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS {table}_no_update",
    "DROP TRIGGER IF EXISTS {table}_no_delete",
)
STATEMENTS = {
    "postgresql": {"create": POSTGRESQL_CREATE, "drop": POSTGRESQL_DROP},
    "sqlite": {"create": SQLITE_CREATE, "drop": SQLITE_DROP},
}


def guard_sql(vendor: str, action: str, table: str = "tenants_auditevent") -> list[str]:
    """The statements that create or drop the guard on `vendor` (none for a backend without one)."""
    return [sql.format(table=table, message=MESSAGE) for sql in STATEMENTS.get(vendor, {}).get(action, ())]


def _run(action: str):
    def run(apps, schema_editor) -> None:
        table = apps.get_model("tenants", "AuditEvent")._meta.db_table
        for sql in guard_sql(schema_editor.connection.vendor, action, table):
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):

    dependencies = [
        ("tenants", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="actor_key",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="tenants.apikey",
            ),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="actor_user",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="tenant",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="tenants.tenant",
            ),
        ),
        # After the AlterFields: on SQLite they rebuild the table, which would drop its triggers.
        migrations.RunPython(_run("create"), _run("drop")),
    ]
