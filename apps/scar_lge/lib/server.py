"""The ASGI app the server runs: MONAI Label's own, behind :class:`lib.request_guard.RequestGuard`, with
its blocking endpoints moved off the event loop (:mod:`lib.offload`), and two fixes to the OHIF
viewer it serves (:mod:`lib.ohif_fixes`), its API docs page served without a CDN (:mod:`lib.api_docs`), and
the clinical report of a saved label (:mod:`lib.report_route`).

Started through MONAI Label's documented hook for a custom app:
``python -m monailabel.main start_server --app apps/scar_lge ... --uvicorn_app lib.server:app``
with ``apps/scar_lge`` on ``PYTHONPATH`` (``scripts/serve.sh`` does both). Also stops the background
train and scoring processes when the server stops (Ctrl-C, SIGTERM), so none outlives it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from monailabel.app import app as monailabel_app

from .api_docs import serve_docs_offline
from .image_route import replace_download_route, replace_sample_route
from .infer_route import replace_infer_route
from .lifecycle import stop_background_runs
from .offload import OffloadBlockingEndpoints
from .ohif_fixes import OhifFixes
from .report_route import add_report_route
from .request_guard import RequestGuard

_monailabel_lifespan = monailabel_app.router.lifespan_context


@asynccontextmanager
async def _lifespan(fastapi_app):
    try:
        async with _monailabel_lifespan(fastapi_app) as state:
            yield state
    finally:
        stop_background_runs()


monailabel_app.router.lifespan_context = _lifespan
replace_infer_route()
replace_download_route()
replace_sample_route()
serve_docs_offline(monailabel_app)
add_report_route(monailabel_app)
app = OhifFixes(RequestGuard(OffloadBlockingEndpoints(monailabel_app)))
