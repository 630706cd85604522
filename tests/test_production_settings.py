"""Production settings (DJANGO_DEBUG=false): Secure cookies, HSTS, the proxy's TLS header from the
environment, and `manage.py check --deploy` clean with production-like values."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def _production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        {
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "finops.example.com",
            "DJANGO_CSRF_TRUSTED_ORIGINS": "https://finops.example.com",
            "DJANGO_SECURE_SSL_REDIRECT": "true",
            "DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
            **extra,
        }
    )
    return env


def _settings_in(env: dict[str, str], expression: str) -> str:
    code = f"import django; django.setup(); from django.conf import settings as s; print({expression})"
    env = {**env, "DJANGO_SETTINGS_MODULE": "finops.settings"}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_check_deploy_passes_with_production_like_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=_production_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_defaults_are_secure_and_configurable():
    env = _production_env()
    expression = (
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER, "
        "s.SECURE_SSL_REDIRECT"
    )
    assert _settings_in(env, expression) == "True True 31536000 ('HTTP_X_FORWARDED_PROTO', 'https') True"
    off = _production_env(DJANGO_SECURE_HSTS_SECONDS="0", DJANGO_SECURE_SSL_REDIRECT="false")
    del off["DJANGO_SECURE_PROXY_SSL_HEADER"]
    assert _settings_in(off, "s.SECURE_HSTS_SECONDS, getattr(s, 'SECURE_PROXY_SSL_HEADER', None)") == "0 None"


def test_a_malformed_proxy_header_setting_fails_at_start():
    env = _production_env(DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _settings_in(env, "1")
    assert "DJANGO_SECURE_PROXY_SSL_HEADER" in failed.value.stderr


def test_session_and_csrf_cookies_are_secure_and_hsts_is_sent(client, django_user_model):
    assert not settings.DEBUG
    django_user_model.objects.create_user("alice", password="a-long-password-1")
    page = client.get("/accounts/login/", secure=True)
    assert page["Strict-Transport-Security"].startswith("max-age=31536000")
    assert page.cookies[settings.CSRF_COOKIE_NAME]["secure"]
    client.post("/accounts/login/", {"username": "alice", "password": "a-long-password-1"}, secure=True)
    assert client.cookies["sessionid"]["secure"] and client.cookies["sessionid"]["httponly"]


def test_behind_a_tls_proxy_the_forwarded_scheme_counts_as_secure(client, settings, db):
    # (db: the sign-in page asks whether any user exists yet, for the first-run hint)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    page = client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    assert "Strict-Transport-Security" in page
    assert "Strict-Transport-Security" not in client.get("/accounts/login/")
