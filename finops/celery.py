import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")

app = Celery("finops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The beat schedule lives here, in one place: each entry says why it runs and when it expires.
app.conf.beat_schedule = {
    # Dashboards read rollups: recompute the tenant-days that new, late or re-priced usage marked.
    "refresh-rollups": {
        "task": "finops.tasks.refresh_rollups",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # Safety net for re-pricing: a price edit queues its own job on commit; this catches records of
    # models the catalog learned through the admin or a fixture load.
    "reprice-unpriced-usage": {
        "task": "finops.tasks.reprice_unpriced_usage",
        "schedule": 300.0,
        "options": {"expires": 240},
    },
    # Outbox: jobs recorded with a change (re-pricing after a price edit) that the broker did not take
    # then, because it was down, or that a dead worker left unfinished, are sent again.
    "sweep-pending-jobs": {
        "task": "finops.tasks.sweep_pending_jobs",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # Budgets: release reservations whose usage never came, start and end ladder controls, raise
    # alerts, correct window drift against rollups, and retry notification deliveries that are due.
    "expire-reservations": {
        "task": "budgets.tasks.expire_reservations",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    "evaluate-budgets": {
        "task": "budgets.tasks.evaluate_budgets",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "reconcile-budget-windows": {
        "task": "budgets.tasks.reconcile_windows",
        "schedule": 600.0,
        "options": {"expires": 540},
    },
    "deliver-notifications": {
        "task": "budgets.tasks.deliver_due_notifications",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    # Anomalies: score each tenant x workflow's last closed hour from the hourly rollups, a few minutes
    # after the hour closes (rollups refresh every minute), then again in the hour for tenants whose
    # rollups were still being recomputed; a run for an hour already scored changes nothing.
    "detect-anomalies": {
        "task": "budgets.tasks.detect_anomalies",
        "schedule": crontab(minute="3,18,33,48"),
        "options": {"expires": 600},
    },
    # Envelopes: propose each used workflow's expected envelope from every tenant's last four weeks of daily
    # rollups, where none is set or it is more than 20% off; operators accept it on the workflow page.
    # PostgreSQL's monthly usage partitions: the next USAGE_PARTITIONS_AHEAD months exist before any record
    # needs them (a record of a month without one waits in the default partition, moved out here), and
    # raw months past USAGE_RAW_RETENTION_MONTHS go once their rollups are complete. Run-once under a lock.
    "maintain-usage-partitions": {
        "task": "finops.tasks.maintain_usage_partitions",
        "schedule": crontab(hour=3, minute=10),
        "options": {"expires": 3600},
    },
    "propose-envelopes": {
        "task": "finops.tasks.propose_envelopes",
        "schedule": crontab(hour=4, minute=40),
        "options": {"expires": 3600},
    },
}


@worker_process_init.connect
def _preload_encodings(**kwargs) -> None:
    # Load tiktoken encodings once per worker process rather than inside the first task.
    from finops.tokens import preload

    preload()
