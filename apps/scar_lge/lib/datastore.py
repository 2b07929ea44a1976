"""Local datastore that refuses labels and images the app could not use, before touching disk."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from .label_io import InputError, check_label, read_geometry, write_label_like

logger = logging.getLogger(__name__)

# A DICOM series is stored as a folder named <id>.dicom holding its slice files.
STUDY_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.dicom")


class ScarDatastore(LocalDatastore):
    """LocalDatastore plus input checks.

    A label must lie on its image's grid and hold EMIDEC values 0-4; an image must be a readable 3D
    stack. What fails is answered with HTTP 4xx and a reason, and nothing is written, so a bad save
    never replaces a good label. A label is stored re-written on the image's own header, so the
    stored file and the study overlay exactly in every viewer.
    """

    def __init__(self, datastore_path: str, **kwargs: Any):
        super().__init__(datastore_path, extensions=STUDY_PATTERNS, **kwargs)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        image_path = self.get_image_uri(image_id)
        if not image_path:
            raise HTTPException(status_code=404, detail=f"unknown image id '{image_id}'")
        try:
            label = check_label(label_filename, image_path)
            suffix = ".nii.gz" if image_path.endswith((".nii", ".nii.gz")) or os.path.isdir(image_path) else ".nrrd"
            with tempfile.TemporaryDirectory() as tmp:
                clean = write_label_like(label, image_path, os.path.join(tmp, f"label{suffix}"))
                return super().save_label(image_id, clean, label_tag, label_info)
        except InputError as e:
            raise HTTPException(status_code=e.status_code, detail=f"label not saved: {e}") from e

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        try:
            read_geometry(image_filename)
        except InputError as e:
            raise HTTPException(status_code=e.status_code, detail=f"image not added: {e}") from e
        return super().add_image(image_id, image_filename, image_info)
