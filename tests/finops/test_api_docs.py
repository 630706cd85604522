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
