import pytest

pytestmark = pytest.mark.django_db


def test_openapi_schema_documents_the_v1_api_and_bearer_keys(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    assert {"/api/v1/usage", "/api/v1/usage/{record_id}", "/api/v1/tokens/count"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["scheme"] == "bearer"
    post = schema["paths"]["/api/v1/usage"]["post"]
    assert {"200", "207", "400", "413", "415"} <= set(post["responses"])


def test_api_docs_page_serves_its_assets_locally(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
    asset = html.split("/static/drf_spectacular_sidecar/")[1].split('"')[0]
    assert client.get(f"/static/drf_spectacular_sidecar/{asset}").status_code == 200


def test_the_schema_generates_without_warnings_and_with_unique_operation_ids():
    """drf-spectacular resolved the spend_read collision (/spend and /spend.csv) with numeral suffixes and
    a warning; `--fail-on-warn` keeps such lies out of the schema."""
    import io

    import yaml
    from django.core.management import call_command

    out = io.StringIO()
    call_command("spectacular", "--fail-on-warn", "--validate", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    operations = [
        op
        for item in schema["paths"].values()
        for m, op in item.items()
        if m in ("get", "post", "put", "patch", "delete")
    ]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert {"spend_read", "spend_read_csv"} <= set(ids)
    csv = schema["paths"]["/api/v1/spend.csv"]["get"]["responses"]["200"]["content"]
    assert list(csv) == ["text/csv"]
    # Every v1 operation documents the JSON error shape for the errors any request can meet.
    for path, item in schema["paths"].items():
        if path.startswith("/api/v1/") and "/otlp/" not in path:
            for method, op in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    for code in ("400", "401", "403", "404", "429", "503"):
                        ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                        assert ref == "#/components/schemas/Error", (path, method, code)
