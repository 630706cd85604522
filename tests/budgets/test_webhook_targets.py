"""Webhook targets inside the network (loopback, link-local, private, metadata) are refused when a channel is
registered and again at delivery, where the connection goes only to the address that was checked."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from budgets.models import Notification, NotificationChannel
from budgets.services.notifications import notification_deliver
from budgets.webhook_targets import address_is_public
from tests.budgets.test_alerts import _person
from tests.budgets.test_alerts import admin_a as admin_a  # the fixture
from tests.budgets.test_notifications import T0, _alert

CHANNELS = "/api/v1/notification-channels"
INTERNAL = [
    "https://127.0.0.1/hook",
    "https://localhost:8443/hook",
    "https://[::1]/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.5/hook",
    "https://192.168.1.1/hook",
    "https://172.16.0.1/hook",
    "https://100.64.0.1/hook",
    "https://0.0.0.0/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[fe80::1]/hook",
    "https://[fd00::1]/hook",
]


@pytest.mark.parametrize("target", INTERNAL)
def test_tenant_admins_cannot_register_internal_https_targets(admin_a, tenant_a, target):  # noqa: F811
    response = _person(admin_a).post(f"{CHANNELS}?tenant=acme", {"kind": "webhook", "target": target}, format="json")
    assert response.status_code == 400, response.content
    assert "target" in response.json()["error"]["details"]
    assert not NotificationChannel.objects.exists()


@pytest.mark.parametrize("target", ["http://127.0.0.1:6379/", "http://169.254.169.254/", "http://localhost:5432/"])
def test_platform_keys_cannot_register_internal_http_targets(api_platform, target):
    response = api_platform.client.post(CHANNELS, {"kind": "webhook", "target": target}, format="json")
    assert response.status_code == 400, response.content
    assert not NotificationChannel.objects.exists()


def test_an_operator_setting_allows_a_named_internal_host(api_platform, settings):
    settings.WEBHOOK_ALLOWED_INTERNAL_HOSTS = ["localhost"]
    allowed = api_platform.client.post(
        CHANNELS, {"kind": "webhook", "target": "http://localhost:9000/h"}, format="json"
    )
    other = api_platform.client.post(CHANNELS, {"kind": "webhook", "target": "http://127.0.0.1:9000/h"}, format="json")
    assert allowed.status_code == 201 and other.status_code == 400


def test_public_addresses_are_public():
    assert address_is_public("93.184.215.14") and address_is_public("2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert not any(address_is_public(a) for a in ["127.0.0.1", "169.254.169.254", "10.1.2.3", "::1", "fc00::1"])


class _Receiver:
    def __init__(self):
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.hits += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_delivery_checks_again_when_dns_changed_after_registration(tenant_a, monkeypatch):
    """Registered while its name resolved outside (or not at all); now it resolves to loopback: not connected."""
    receiver = _Receiver()
    port = receiver.server.server_port
    channel = NotificationChannel.objects.create(
        tenant=tenant_a, kind="webhook", target=f"http://hooks.acme.example:{port}/h", secret="s"
    )
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        return real("127.0.0.1" if host == "hooks.acme.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    try:
        alert = _alert(tenant_a)
        notification, _ = Notification.objects.get_or_create(
            alert=alert, channel=channel, defaults={"next_attempt_at": alert.created_at}
        )
        attempt = notification_deliver(notification, now=T0)
    finally:
        receiver.close()
    assert attempt is not None and not attempt.ok
    assert "non-public" in attempt.error and str(port) not in attempt.error
    assert receiver.hits == 0


def test_delivery_to_an_allowed_internal_host_connects(tenant_a, settings):
    settings.WEBHOOK_ALLOWED_INTERNAL_HOSTS = ["127.0.0.1"]
    receiver = _Receiver()
    channel = NotificationChannel.objects.create(
        tenant=tenant_a, kind="webhook", target=f"http://127.0.0.1:{receiver.server.server_port}/h", secret="s"
    )
    try:
        alert = _alert(tenant_a)
        notification, _ = Notification.objects.get_or_create(
            alert=alert, channel=channel, defaults={"next_attempt_at": alert.created_at}
        )
        attempt = notification_deliver(notification, now=T0)
    finally:
        receiver.close()
    assert attempt is not None and attempt.ok and receiver.hits == 1
