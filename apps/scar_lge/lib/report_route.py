"""``GET /report/``: the clinical report of a study's saved label (e.g. the reader's corrected ``final``).

The infer answer carries the report of the model's label; once a reader has corrected and saved it, this
route gives the report of what was saved, as JSON, the bullseye PNG or the one-page PDF, from the local
folder or the DICOMweb store alike (the datastore resolves both to files).
"""

from __future__ import annotations

import os
import tempfile
from enum import Enum

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from .errors import InputError, as_http
from .report.figures import save_bullseye, save_pdf
from .report.from_files import read_study, report_of


class ReportFormat(str, Enum):
    json = "json"
    png = "png"
    pdf = "pdf"


def api_report(
    image: str,
    background_tasks: BackgroundTasks,
    tag: str = "final",
    output: ReportFormat = ReportFormat.json,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    datastore = app_instance().datastore()
    image_uri = datastore.get_image_uri(image)
    if not image_uri:
        raise HTTPException(status_code=404, detail=f"unknown image id '{image}'")
    label_uri = datastore.get_label_uri(image, tag)
    if not label_uri or not os.path.exists(label_uri):
        raise HTTPException(status_code=404, detail=f"study '{image}' has no '{tag}' label to report on")
    try:
        study = read_study(image_uri, label_uri)
        report = report_of(study)
        if output == ReportFormat.json:
            return report
        out = tempfile.NamedTemporaryFile(suffix=f".{output.value}", delete=False).name
        background_tasks.add_task(os.remove, out)
        if output == ReportFormat.png:
            save_bullseye(report, out)
            return FileResponse(out, media_type="image/png", filename=f"{image}-bullseye.png")
        save_pdf(report, study.image, study.label, out, title=image)
        return FileResponse(out, media_type="application/pdf", filename=f"{image}-report.pdf")
    except InputError as e:
        raise as_http(e, f"no report for '{image}' ({tag})") from e


def add_report_route(app: FastAPI) -> None:
    """Serve :func:`api_report` at ``GET /report/``. A plain function: FastAPI runs it in its thread pool."""
    app.add_api_route(
        "/report/", api_report, methods=["GET"], tags=["Report"], summary="Clinical scar report of a saved label"
    )
