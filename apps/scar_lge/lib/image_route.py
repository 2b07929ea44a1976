"""``GET /datastore/image`` and ``POST /activelearning/{strategy}``: every study handed out can be opened.

MONAI Label 0.8.5 answers 404 for a study stored as a DICOM series folder (and for a DICOMweb series),
because it sends files only, so the Slicer plugin's Next Sample could not load it. Here such a study is
sent as one NIfTI file written on exactly the series' grid (lib/label_io.read_itk; the grid a label
saved back is checked against), named ``<id>.nii.gz`` so Slicer loads it as a volume. Single-file
studies are sent as stored, as before. Next Sample's answer says where and under which name (``url``,
``name``), which the Slicer plugin downloads when ``path`` is not on its own machine.
"""

from __future__ import annotations

import os
import tempfile
from urllib.parse import quote

import SimpleITK as sitk
from fastapi import BackgroundTasks, Depends, HTTPException
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints import activelearning as activelearning_endpoints
from monailabel.endpoints import datastore as datastore_endpoints
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import get_mime_type

from .errors import InputError, as_http
from .label_io import read_itk
from .route_swap import replace_route


def download_name(image_id: str, uri: str) -> str:
    """The file name a client saves a study under: the stored name, or ``<id>.nii.gz`` for a DICOM series."""
    return f"{image_id}.nii.gz" if os.path.isdir(uri) else os.path.basename(uri)


def api_download_image(
    image: str, background_tasks: BackgroundTasks, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
):
    instance: MONAILabelApp = app_instance()
    uri = instance.datastore().get_image_uri(image)
    if not uri or not os.path.exists(uri):
        raise HTTPException(status_code=404, detail=f"unknown image id '{image}'")
    if os.path.isfile(uri):
        return FileResponse(uri, media_type=get_mime_type(uri), filename=os.path.basename(uri))
    try:
        volume = read_itk(uri)
    except InputError as e:
        raise as_http(e, "cannot send this study") from e
    out = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
    sitk.WriteImage(volume, out, useCompression=True)
    background_tasks.add_task(os.remove, out)
    return FileResponse(out, media_type="application/gzip", filename=download_name(image, uri))


# Both routes are plain functions, unlike MONAI Label's async ones: FastAPI runs them in its thread pool,
# so converting or downloading a series never stalls the server's event loop.


def replace_download_route() -> None:
    """Put :func:`api_download_image` in place of MONAI Label's ``GET /datastore/image``."""
    replace_route(datastore_endpoints.router, "/image", "GET", api_download_image)


def api_sample(
    strategy: str, params: dict | None = None, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
):
    sample = activelearning_endpoints.sample(strategy, params, user.username)
    if sample.get("id"):
        path = sample.get("path") or ""
        sample["name"] = download_name(sample["id"], path)
        sample["url"] = f"/datastore/image?image={quote(sample['id'])}"
        if os.path.isdir(path):
            # Slicer opens "path" when it exists on its machine, and a series folder is no volume file to
            # it: an empty path makes it download the series as one NIfTI file instead.
            sample["path"] = ""
    return sample


def replace_sample_route() -> None:
    """Put :func:`api_sample` in place of MONAI Label's ``POST /activelearning/{strategy}``."""
    replace_route(activelearning_endpoints.router, "/{strategy}", "POST", api_sample)
