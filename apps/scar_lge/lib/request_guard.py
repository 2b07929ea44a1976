"""Checks every request before MONAI Label's endpoints see it: names, train options, model readiness.

MONAI Label's endpoints turn names from the URL straight into file paths and start background
processes before asking the app anything, and answer several user errors with a bare 500. This ASGI
middleware refuses such requests first with a 4xx (or 503) and a reason. The app and its datastore
check the same names again where they become paths, so the server stays safe without it too.
"""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import parse_qsl

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from .errors import InputError
from .names import check_name

logger = logging.getLogger(__name__)

# Query parameters whose value becomes (part of) a path: image ids, label tags, session ids, models.
NAME_PARAMS = {"image": "image id", "id": "image id", "label": "image id", "tag": "label tag",
               "session_id": "session id", "model": "model name"}  # fmt: skip
# Routes whose last path segment is a name, and what kind of name it is.
NAME_ROUTES = [
    (re.compile(r"/infer/([^/]*)/?"), "model name"),
    (re.compile(r"/batch/infer/([^/]*)/?"), "model name"),
    (re.compile(r"/train/([^/]+)/?"), "model name"),
    (re.compile(r"/activelearning/([^/]*)/?"), "strategy name"),
    (re.compile(r"/scoring/([^/]+)/?"), "scoring method"),
    (re.compile(r"/model/info/([^/]*)/?"), "model name"),
    (re.compile(r"/model/([^/]*)/?"), "model name"),
    (re.compile(r"/session/([^/]+)/?"), "session id"),
]
# Whole-slide inference (pathology) has no meaning for cardiac MRI stacks.
WSI_ROUTE = re.compile(r"/infer/wsi(_v2)?/.*")
MAX_TRAIN_BODY_BYTES = 64 * 1024
# Routes that start background runs. run_sync would run one inside the server (frozen meanwhile, and
# beyond the reach of DELETE /train/ and of shutdown); enqueue would queue runs that start later.
BACKGROUND_ROUTES = re.compile(r"/(train|scoring|batch/infer)(/[^/]*)?/?")
# Request keys MONAI Label itself sets on the way to a background run; a caller may not.
SERVER_SET_KEYS = ("bundle_path", "gpus", "model", "local_rank", "method")


class Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _check_names(path: str, query: str) -> None:
    for pattern, kind in NAME_ROUTES:
        match = pattern.fullmatch(path)
        if match:
            _name(kind, match.group(1))
            break
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in NAME_PARAMS and value != "":
            _name(NAME_PARAMS[key], value)


def _name(kind: str, value: str) -> None:
    try:
        check_name(kind, value)
    except InputError as e:
        raise Refused(422, str(e)) from e


def _app():
    from monailabel.interfaces.utils.app import app_instance

    return app_instance()


def _as_refusal(e: HTTPException) -> Refused:
    return Refused(e.status_code, str(e.detail))


class RequestGuard:
    """ASGI middleware: see the module docstring. Wraps MONAI Label's FastAPI app."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            if WSI_ROUTE.fullmatch(path):
                raise Refused(404, "this app has no whole-slide (pathology) models; use POST /infer/scar")
            _check_names(path, query)
            if method in ("PUT", "DELETE") and path.rstrip("/").startswith("/model/"):
                raise Refused(
                    405,
                    "models are published by training (POST /train/scar) and rolled back with "
                    "apps/scar_lge/scripts/models.py; they are not uploaded or deleted over HTTP",
                )
            if method == "GET" and path.rstrip("/") == "/datastore/dataset":
                # MONAI Label zips the whole datastore into the temp folder and never deletes the archive.
                raise Refused(404, "the dataset archive is not offered; copy the studies folder instead")
            if method == "POST" and BACKGROUND_ROUTES.fullmatch(path):
                flags = {k: v.lower() for k, v in parse_qsl(query)}
                if flags.get("run_sync", "false") != "false" or flags.get("enqueue", "false") != "false":
                    raise Refused(
                        422, "training and scoring run in the background only: run_sync and enqueue are refused"
                    )
            if method == "POST" and path.rstrip("/") == "/train":
                # MONAI Label's deprecated train-everything route merges the whole body into each request.
                raise Refused(404, "start training with POST /train/scar and a JSON object of options")
            if method == "POST" and path.startswith("/infer/"):
                # Before the upload is read and stored; the infer task refuses the same way behind it.
                _app().require_model(path.strip("/").split("/")[1])
            if method == "POST" and path.startswith("/scoring"):
                app = _app()
                parts = path.strip("/").split("/")
                if len(parts) > 1 and parts[1] not in app._scoring_methods:
                    raise Refused(
                        404, f"unknown scoring method {parts[1]!r}; available: {sorted(app._scoring_methods)}"
                    )
                app.require_model()
            if method == "POST" and BACKGROUND_ROUTES.fullmatch(path) and path.rstrip("/") != "/train":
                body = await _read_body(receive)
                receive = _replay(body)
                params = _json_object(body)
                if path.startswith("/train/"):
                    _app().check_train_request(path.strip("/").split("/")[1], params)
                named = sorted(k for k in params if k in SERVER_SET_KEYS)
                if named:
                    raise Refused(422, f"the request may not set {named}: the server sets them")
        except HTTPException as e:
            return await _send(send, _as_refusal(e))
        except Refused as e:
            return await _send(send, e)
        return await self.app(scope, receive, send)


def _json_object(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except ValueError as e:
        raise Refused(422, f"the request body is not JSON: {e}") from e
    if not isinstance(params, dict):
        raise Refused(422, f"the request body must be a JSON object of options, got {type(params).__name__}")
    return params


async def _read_body(receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_TRAIN_BODY_BYTES:
            raise Refused(413, f"a request body of options is a few hundred bytes, not {size}")
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _send(send, refused: Refused) -> None:
    response = JSONResponse({"detail": refused.detail}, status_code=refused.status)
    logger.info("refused: %s %s", refused.status, refused.detail)

    async def noop_receive():
        return {"type": "http.disconnect"}

    await response({"type": "http"}, noop_receive, send)
