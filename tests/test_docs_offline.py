"""training.docs_offline: the /docs page loads Swagger UI from the server itself, never a CDN, and
the page's script and style are there. The real server's /docs is checked in test_serve.py."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from training.docs_offline import serve_docs_offline


def test_docs_load_swagger_ui_from_the_server_itself():
    app = FastAPI(title="Tagger")

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    serve_docs_offline(app)
    client = TestClient(app)
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(asset.startswith("/docs-assets/") for asset in assets), assets
    assert "cdn" not in page.text and "'/openapi.json'" in page.text
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200 and len(answer.content) > 1000, asset
    assert re.search(r'"5\.\d+\.\d+"', client.get("/docs-assets/swagger-ui-bundle.js").text)  # UI 5: OpenAPI 3.1
    assert [route.path for route in app.routes].count("/docs") == 1
    assert "/docs" not in client.get("/openapi.json").json()["paths"]
