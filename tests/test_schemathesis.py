"""Schemathesis against the app's own OpenAPI schema (/api/schema/), in the normal test suite.

Each operation gets a bounded number of generated requests, valid and invalid (SCHEMATHESIS_MAX_EXAMPLES,
default 8), sent with API keys of two tenants in turn and a platform key. Every answer must be: not a 5xx,
a status code and content type the schema declares, a body that matches the schema, invalid input
rejected (except the LENIENT operations below) and every 4xx in the JSON error shape. Requests go
through the WSGI app in-process: no server to start.
"""

from __future__ import annotations

import itertools
import os

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from tests.conftest import _keyed

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "8"))


# Loaded at collection through the WSGI app: serving the schema needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True)


@pytest.fixture(autouse=True)
def _requests_keep_the_test_connection(db):
    """As Django's test client does: a request's start and end must not close the test's database
    connection (each test runs in a transaction that is rolled back afterwards)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def callers(tenant_a, tenant_b, catalog):
    keys = [_keyed(tenant_a), _keyed(tenant_b), _keyed(None, name="platform key")]
    return itertools.cycle([{"Authorization": f"Bearer {k.raw}"} for k in keys])


# Checks left out, and why: a request valid by the schema may still be refused by the domain (an unknown
# model name, a budget over its limit), so "positive data accepted" does not hold for this API; the
# stateful resource checks need links the schema does not declare.
EXCLUDED = [
    openapi_checks.positive_data_acceptance,
    openapi_checks.use_after_free,
    openapi_checks.ensure_resource_availability,
]


# "Invalid input is rejected" holds everywhere except ingest, which answers per item (207 by design: valid
# records are stored beside rejected ones). Query strings and bodies elsewhere are strict
# (tenants/strict_input.py; tests/tenants/test_strict_input.py).
LENIENT = {
    "POST /api/v1/usage",  # per-item outcomes, by design
    "POST /api/v1/litellm/logs",  # per-item outcomes, by design
}


def _error_shape(ctx, response, case):
    """Every 4xx answer of the API (other than the OTLP receiver's protobuf answers) is the JSON error shape."""
    if 400 <= response.status_code < 500 and response.headers.get("Content-Type", [""])[0].startswith(
        "application/json"
    ):
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
        assert body["error"].get("code") and body["error"].get("message"), body
    return None


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_api_conforms_to_its_schema(case, callers):
    lenient = f"{case.operation.method.upper()} {case.operation.path}" in LENIENT
    case.call_and_validate(
        headers=next(callers),
        excluded_checks=[*EXCLUDED, openapi_checks.negative_data_rejection] if lenient else EXCLUDED,
        additional_checks=[_error_shape],
    )
