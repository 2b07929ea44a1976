"""Putting this app's endpoint in place of one of MONAI Label 0.8.5's routes."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.routing import APIRoute


def replace_route(router: APIRouter, path: str, method: str, endpoint: Callable) -> None:
    """Serve ``endpoint`` at ``method path`` of MONAI Label's ``router`` instead of its own, same summary and
    OpenAPI extras.

    Done before the server starts; the app includes that router, so the replacement is what it serves.

    Raises:
        RuntimeError: the router has not exactly one such route (another MONAI Label version).
    """
    full = f"{router.prefix}{path}"
    old = [r for r in router.routes if isinstance(r, APIRoute) and r.path == full and method in r.methods]
    if len(old) != 1:
        raise RuntimeError(f"MONAI Label's router has {len(old)} {method} {full} routes; is this MONAI Label 0.8.5?")
    router.add_api_route(path, endpoint, methods=[method], summary=old[0].summary, openapi_extra=old[0].openapi_extra)
    router.routes.remove(old[0])
