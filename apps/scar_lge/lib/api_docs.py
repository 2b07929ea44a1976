"""The API docs page at ``/``, served from an installed package, so it works without internet.

MONAI Label 0.8.5 builds ``/`` with FastAPI's default Swagger UI page, which loads its script and styles
from a CDN (cdn.jsdelivr.net): on a hospital network without internet the page stays blank. Here the
same page takes them from the ``fastapi-offline`` package's copy of Swagger UI 5 (the 4.x of the
``swagger-ui-bundle`` package cannot read FastAPI's OpenAPI 3.1), served under ``/swagger-ui/``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.staticfiles import StaticFiles

ASSETS = "/swagger-ui"  # not under /static, which MONAI Label mounts for its own files


def serve_docs_offline(app: FastAPI) -> None:
    """Replace ``GET /`` of MONAI Label's app with a Swagger UI page whose assets this server serves."""
    import fastapi_offline

    assets = os.path.join(os.path.dirname(fastapi_offline.__file__), "static")

    old = [r for r in app.router.routes if isinstance(r, APIRoute) and r.path == "/" and "GET" in r.methods]
    for route in old:
        app.router.routes.remove(route)
    app.mount(ASSETS, StaticFiles(directory=assets), name="swagger-ui")

    @app.get("/", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - APIs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
            swagger_ui_parameters={"defaultModelsExpandDepth": -1},
        )
        return HTMLResponse(page.body.decode("utf-8"))
