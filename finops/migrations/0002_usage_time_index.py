from django.db import migrations

# A time index for range scans (re-pricing, rollup rebuilds). On PostgreSQL a BRIN index: usage
# arrives roughly in time order, so block ranges summarise it well, and it costs almost nothing
# on the ingest path, unlike a fourth B-tree.


def create(apps, schema_editor):
    method = "USING brin " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"CREATE INDEX IF NOT EXISTS usage_time ON finops_usagerecord {method}(occurred_at)")


def drop(apps, schema_editor):
    schema_editor.execute("DROP INDEX IF EXISTS usage_time")


class Migration(migrations.Migration):
    dependencies = [("finops", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
