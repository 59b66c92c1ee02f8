"""The server's /docs page on a machine without internet: FastAPI's page loads Swagger UI's script
and style from a CDN, so offline it is blank. Here the server hands them out itself, from the
fastapi-offline package's copy (Swagger UI 5, which reads FastAPI's OpenAPI 3.1)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"  # swagger-ui-bundle.js, swagger-ui.css, favicon.png


def serve_docs_offline(app: FastAPI) -> None:
    """Replace `app`'s Swagger UI page (app.docs_url) by one whose script and style `app` serves itself."""
    app.router.routes = [route for route in app.router.routes if getattr(route, "path", None) != app.docs_url]
    app.mount(ASSETS_PATH, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - docs",
                                   swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png")

    app.add_api_route(app.docs_url, docs, include_in_schema=False)
