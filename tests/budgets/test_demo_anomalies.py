"""The demo's spiking tenant shows an anomaly on /anomalies/ with its chart and the control it started."""

from django.test import Client
from django.utils import timezone

from budgets.models import Anomaly, Control
from finops.services import seed
from finops.services.seed.demo_specs import SPIKE_TENANT, SPIKE_WORKFLOW
from tests.factories import UserFactory


def test_the_demo_spiking_tenant_has_an_open_anomaly_with_its_control(db):
    seed.catalog_seed()
    now = timezone.now()  # hourly rollups are kept for recent days only: the demo must end now
    seed.demo_seed(days=9, now=now)
    anomaly = Anomaly.objects.get(tenant__slug=SPIKE_TENANT, workflow__slug=SPIKE_WORKFLOW, kind="runaway_loop")
    assert anomaly.status == Anomaly.Status.OPEN and anomaly.alert is not None
    control = anomaly.controls.get()
    assert control.source == Control.Source.ANOMALY and control.ends_at is None
    seed.demo_seed(days=9, now=now)  # idempotent
    assert Anomaly.objects.filter(tenant__slug=SPIKE_TENANT, kind="runaway_loop").count() == 1

    client = Client()
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    html = client.get("/anomalies/").content.decode()
    assert f'data-anomaly="{anomaly.pk}"' in html and f"anomaly-figure-{anomaly.pk}" in html
    assert f'data-control="{control.pk}"' in html
