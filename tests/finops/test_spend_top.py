"""GET /api/v1/spend?top=N: the N costliest groups plus one rest group, in groups and per bucket.

Every answer is checked against the same query without `top`: the kept groups and their points are
the untruncated ones, the rest is the exact sum of the others (per bucket and over the range), and
the totals do not change.
"""

import csv
import io
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest

from finops.models import UsageRecord
from finops.services.rollups import rollups_refresh
from tests.finops.test_rollups import NOW, post, sample

pytestmark = pytest.mark.django_db

START = (NOW - timedelta(days=5)).isoformat()
MEASURES = ("calls", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")


def _more(prefix: str, n: int) -> list[dict]:
    """sample()'s records spread over more workflows and models, so a rest has several groups."""
    records = sample(prefix, n)
    for i, r in enumerate(records):
        r["workflow"] = f"wf-{i % 7}"
        r["input_tokens"] += 1_000 * (i % 7)  # workflows of different costs
    return records


def spend(client, **params):
    response = client.get("/api/v1/spend", {"start": START, **params})
    assert response.status_code == 200, response.content
    return response.json()


def _usd(value: str) -> Decimal:
    return Decimal(value)


def assert_top_is_the_truncated_full_answer(full: dict, top: dict, n: int) -> None:
    assert top["top"] == n and full["top"] is None
    assert top["totals"] == full["totals"]
    kept, rest = full["groups"][:n], full["groups"][n:]
    if rest:
        assert top["groups"][:-1] == kept
        rest_group = top["groups"][-1]
        assert rest_group["key"] is None and rest_group["rest_groups"] == len(rest)
        for m in MEASURES:
            assert rest_group[m] == sum(g[m] for g in rest)
        assert _usd(rest_group["cost_usd"]) == sum(_usd(g["cost_usd"]) for g in rest)
    else:
        assert top["groups"] == kept
    # The groups with the rest add up to the totals, to the nano-dollar.
    assert sum(_usd(g["cost_usd"]) for g in top["groups"]) == _usd(full["totals"]["cost_usd"])
    assert sum(g["calls"] for g in top["groups"]) == full["totals"]["calls"]

    kept_keys = [g["key"] for g in kept]
    expected: dict = defaultdict(lambda: [0, 0, Decimal(0)])
    for p in full["series"]:
        key = repr(p["key"]) if p["key"] in kept_keys else None
        acc = expected[(p["bucket"], key)]
        acc[0] += p["calls"]
        acc[1] += p["tokens"]
        acc[2] += _usd(p["cost_usd"])
    got = {(p["bucket"], None if p["key"] is None else repr(p["key"])): [p["calls"], p["tokens"], _usd(p["cost_usd"])]
           for p in top["series"]}  # fmt: skip
    assert len(got) == len(top["series"])  # one point per (bucket, kept group) and one rest point per bucket
    assert got == dict(expected)
    assert sum(v[2] for v in got.values()) == _usd(full["totals"]["cost_usd"])
    buckets = [p["bucket"] for p in top["series"]]
    assert buckets == sorted(buckets)


@pytest.mark.parametrize(
    "group_by", ["workflow", "model", "tier", "environment", "model,environment", "workflow,model", "tag:region"]
)
@pytest.mark.parametrize("n", [1, 2, 100])
def test_top_keeps_the_costliest_groups_and_sums_the_rest_exactly(api_a, api_b, catalog, group_by, n):
    post(api_a.client, _more("a", 60))
    post(api_b.client, _more("b", 20))
    rollups_refresh()
    full = spend(api_a.client, group_by=group_by)
    top = spend(api_a.client, group_by=group_by, top=str(n))
    assert len(full["groups"]) > 2 or group_by in ("tier", "environment", "tag:region")
    assert_top_is_the_truncated_full_answer(full, top, n)


@pytest.mark.parametrize("group_by", ["tenant", "tenant,workflow", "workflow", "model"])
@pytest.mark.parametrize("granularity", ["day", "month", "hour"])
def test_top_across_tenants_for_a_platform_key(api_platform, api_a, api_b, catalog, group_by, granularity):
    post(api_a.client, _more("a", 40))
    post(api_b.client, _more("b", 25))
    rollups_refresh()
    params = {"group_by": group_by, "granularity": granularity}
    if granularity == "hour":
        params["start"] = (NOW - timedelta(days=3)).isoformat()
    full = spend(api_platform.client, **params)
    top = spend(api_platform.client, **params, top="2")
    assert full["totals"]["calls"] == 65
    assert_top_is_the_truncated_full_answer(full, top, 2)


def test_a_tenant_keys_rest_holds_only_its_own_groups(api_a, api_b, catalog):
    """The rest is summed inside the caller's scope: another tenant's spend is in no group, kept or not."""
    post(api_a.client, _more("a", 30))
    others = _more("marker-b", 30)
    for r in others:
        r["workflow"] = "marker-tenant-b-workflow"
        r["input_tokens"] *= 1_000  # the costliest workflow of all, if it were visible
    post(api_b.client, others)
    rollups_refresh()
    response = api_a.client.get("/api/v1/spend", {"start": START, "group_by": "workflow", "top": "1"})
    assert response.status_code == 200
    assert b"marker-tenant-b" not in response.content and b"globex" not in response.content
    body = response.json()
    own = UsageRecord.objects.filter(tenant=api_a.key.tenant)
    own_cost = Decimal(sum(r.cost_nanos or 0 for r in own)) / 10**9
    assert _usd(body["totals"]["cost_usd"]) == own_cost and body["totals"]["calls"] == 30
    assert sum(_usd(g["cost_usd"]) for g in body["groups"]) == own_cost
    assert sum(g["calls"] for g in body["groups"]) == 30 and body["groups"][-1]["rest_groups"] == 6
    assert sum(_usd(p["cost_usd"]) for p in body["series"]) == own_cost
    by_tenant = api_a.client.get("/api/v1/spend", {"start": START, "group_by": "tenant", "top": "1"}).json()
    assert [g["key"] for g in by_tenant["groups"]] == [{"tenant": "acme"}]  # no rest: B is not another group
    assert (
        api_a.client.get("/api/v1/spend", {"tenant": "globex", "group_by": "workflow", "top": "1"}).status_code == 404
    )
    assert (
        api_a.client.get("/api/v1/spend.csv", {"tenant": "globex", "group_by": "workflow", "top": "1"}).status_code
        == 404
    )


def test_csv_with_top_has_the_kept_groups_a_rest_row_and_the_total(api_a, catalog):
    post(api_a.client, _more("a", 35))
    rollups_refresh()
    full = list(
        csv.reader(
            io.StringIO(
                api_a.client.get("/api/v1/spend.csv", {"start": START, "group_by": "workflow"}).content.decode()
            )
        )
    )
    response = api_a.client.get("/api/v1/spend.csv", {"start": START, "group_by": "workflow", "top": "3"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == full[0] and rows[1:4] == full[1:4] and rows[-1] == full[-1]
    assert rows[4][0] == "(rest)" and len(rows) == 6
    header = rows[0]
    for column in ("calls", "input_tokens", "output_tokens"):
        i = header.index(column)
        assert int(rows[4][i]) == sum(int(r[i]) for r in full[4:-1])
    cost = header.index("cost_usd")
    assert sum(Decimal(r[cost]) for r in rows[1:5]) == Decimal(rows[-1][cost])


@pytest.mark.parametrize(
    "query",
    [
        "top=0",
        "top=-1",
        "top=101",
        "top=1000000000000000000000000000000",
        "top=" + "9" * 5000,  # int() refuses more than 4,300 digits: must not be a 500
        "top=" + "0" * 4999 + "5",
        "top=1.5",
        "top=1e1",
        "top=%2B5",  # +5
        "top=%205",  # a space, then 5
        "top=abc",
        "top=true",
        "top=%C2%B2",  # superscript two: isdigit() but not int()
        "top=%D9%A1%D9%A0",  # Arabic-Indic 10: int() would read it
        "top=2&top=3",
        "top=",
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/spend", "/api/v1/spend.csv"])
def test_bad_top_answers_400_in_the_json_error_shape(api_a, catalog, query, path):
    response = api_a.client.get(f"{path}?group_by=workflow&{query}")
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "invalid" and "top" in error["details"]


def test_top_without_group_by_is_refused(api_a, catalog):
    response = api_a.client.get("/api/v1/spend?top=5")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"top": ["Needs group_by."]}


def test_page_size_with_non_ascii_or_huge_digits_is_a_400(api_a):
    for value in ("%C2%B2", "9" * 5000):
        response = api_a.client.get(f"/api/v1/alerts?page_size={value}")
        assert response.status_code == 400, response.content[:300]
        assert "page_size" in response.json()["error"]["details"]
