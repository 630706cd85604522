"""Keep the demo alive: send realistic usage to the running app's ingest API every few seconds, with a
scripted incident every so often (finops/services/seed/demo_live.py). `manage.py serve` starts it in
demo mode unless DEMO_TRAFFIC=false."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from finops.services.seed import DEMO_PLATFORM_KEY
from finops.services.seed.demo_live import DemoTraffic, demo_pairs, incident_name
from tenants.errors import ApplicationError

READY = "demo traffic: sending"


def http_poster(base_url: str, key: str, timeout: float = 10.0) -> Callable[[list[dict]], int]:
    """POST a batch to the app's /api/v1/usage with the key, as a service would; returns the status."""

    def post(records: list[dict]) -> int:
        request = urllib.request.Request(
            f"{base_url.rstrip('/')}/api/v1/usage",
            data=json.dumps({"records": records}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    return post


class Command(BaseCommand):
    help = "Send the demo's live usage (and its scripted incidents) to the running app, every few seconds."

    def add_arguments(self, parser):
        parser.add_argument("--url", default=settings.PUBLIC_BASE_URL, help="The running app (PUBLIC_BASE_URL).")
        parser.add_argument("--interval", type=float, default=settings.DEMO_TRAFFIC_INTERVAL_SECONDS)
        parser.add_argument("--speed", type=float, default=settings.DEMO_TRAFFIC_SPEED)
        parser.add_argument("--incident-every", type=float, default=settings.DEMO_INCIDENT_EVERY_SECONDS)
        parser.add_argument("--ticks", type=int, default=0, help="Stop after this many ticks (0: run until stopped).")

    def handle(self, *args, url: str, interval: float, speed: float, incident_every: float, ticks: int, **options):
        try:
            traffic = DemoTraffic(pairs=demo_pairs(), interval=interval, speed=speed, incident_every=incident_every)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        post = http_poster(url, DEMO_PLATFORM_KEY)
        self.stdout.write(
            f"{READY} usage to {url}/api/v1/usage every {interval:g} s; "
            f"an incident every {incident_every / 60:g} min, the first in {traffic.first_incident_after:g} s.",
        )
        try:
            self._run(traffic, post, interval, ticks)
        except KeyboardInterrupt:  # Ctrl-C on `make run` stops every process: no traceback for it
            self.stdout.write("demo traffic: stopped.")

    def _run(self, traffic: DemoTraffic, post: Callable[[list[dict]], int], interval: float, ticks: int) -> None:
        sent, running, done = 0, None, 0
        while not ticks or done < ticks:
            now = datetime.now(UTC)
            incident = traffic.incident(now)
            kind = incident[0] if incident else None
            if kind != running:
                self.stdout.write(
                    f"demo traffic: incident started: {incident_name(kind)}" if kind else "demo traffic: incident over"
                )
                running = kind
            records = traffic.batch(now)
            if records:
                try:
                    status = post(records)
                except OSError as error:  # the web server is starting or restarting: try again next tick
                    self.stderr.write(f"demo traffic: the app is not answering ({error}); retrying")
                else:
                    if status >= 300 and status != 207:
                        self.stderr.write(f"demo traffic: the ingest API answered {status}")
                    else:
                        sent += len(records)
            done += 1
            if done % max(1, int(60 / interval)) == 0:
                self.stdout.write(f"demo traffic: {sent:,} calls sent so far")
            if not ticks or done < ticks:
                time.sleep(interval)
