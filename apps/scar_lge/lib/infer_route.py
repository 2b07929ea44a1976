"""``POST /infer/{model}``: MONAI Label's infer endpoint, with its ``params`` form field checked first.

MONAI Label merges the ``params`` JSON into the request after it has put the uploaded file's path
there, so ``params`` could name any server file as the image (or label, or session) to read. This
endpoint refuses such keys with 422 and answers a request with no image at all with 422 (MONAI
Label answers 500), then calls MONAI Label's own ``run_inference`` unchanged.
"""

from __future__ import annotations

import json

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
from monailabel.config import settings
from monailabel.endpoints import infer as infer_endpoints
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.user.auth import RBAC, User

from .route_swap import replace_route

# Request keys that name server files or sessions: only the endpoint itself may set them.
PATH_KEYS = ("image", "image_id", "label", "session", "session_id", "image_path", "model_filename", "bundle_path")


def checked_params(params: str) -> str:
    """The ``params`` form field, refused (HTTP 422) if it is not a JSON object or names a server path."""
    try:
        parsed = json.loads(params) if params else {}
    except ValueError as e:
        raise HTTPException(status_code=422, detail=f"params is not JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise HTTPException(status_code=422, detail="params must be a JSON object")
    named = sorted(k for k in parsed if k in PATH_KEYS)
    if named:
        raise HTTPException(
            status_code=422,
            detail=f"params may not set {named}: give the image as ?image=<id>, an uploaded file or ?session_id=",
        )
    return json.dumps(parsed)


async def api_run_inference(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: ResultType | None = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    if not file and not image and not session_id:
        raise HTTPException(status_code=422, detail="give an image id (?image=...), a session_id, or upload a file")
    return run_inference(background_tasks, model, image, session_id, checked_params(params), file, label, output)


def replace_infer_route() -> None:
    """Put :func:`api_run_inference` in place of MONAI Label's ``POST /infer/{model}``, same path and docs."""
    replace_route(infer_endpoints.router, "/{model}", "POST", api_run_inference)
