"""Local datastore that refuses unsafe names and labels and images the app could not use, before touching disk."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from .dicom_zip import unpack_dicom_zip
from .errors import InputError, as_http
from .label_io import NIFTI_SUFFIXES, check_label, read_geometry, write_label_like
from .names import check_name, discard_upload, is_name, resolve_inside

logger = logging.getLogger(__name__)

# A DICOM series is stored as a folder named <id>.dicom holding its slice files.
STUDY_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.dicom")
# What an upload may be: a NIfTI or NRRD file, or a DICOM series as one ZIP file (stored as <id>.dicom).
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".zip")


class ScarDatastore(LocalDatastore):
    """LocalDatastore plus name and input checks.

    Every image id and label tag must be a safe name (:mod:`lib.names`) and every path built from one
    must resolve inside the studies folder (a symlink pointing out is refused), so no request reads,
    writes or deletes anything elsewhere. Files in the studies folder whose names are not safe ids
    are not listed. A label must lie on its image's grid and hold EMIDEC values 0-4; an image must be
    a readable 3D stack and must not replace an existing study. What fails is answered with HTTP 4xx
    and a reason, and nothing is written, so a bad save never replaces a good label; the refused
    upload is deleted at once (MONAI Label removes uploads only after a successful answer). A label is
    stored re-written on the image's own header, so stored file and study overlay exactly.
    """

    def __init__(self, datastore_path: str, **kwargs: Any):
        self._root = os.path.realpath(datastore_path)
        super().__init__(datastore_path, extensions=STUDY_PATTERNS, **kwargs)

    # ---- names and paths

    def _name(self, kind: str, value: Any) -> str:
        try:
            return check_name(kind, value)
        except InputError as e:
            raise as_http(e, "refused") from e

    def _inside(self, uri: str) -> str:
        if not uri:
            return uri
        try:
            return resolve_inside(self._root, os.path.relpath(uri, self._root))
        except InputError as e:
            logger.warning("refused a study path that leaves the studies folder: %s", uri)
            raise as_http(e, "refused") from e

    def _stays_inside(self, path: str) -> bool:
        """``path``, and every file in it if it is a (DICOM series) folder, resolves inside the studies folder."""
        paths = [path] + ([os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [])
        return all(os.path.commonpath([self._root, os.path.realpath(p)]) == self._root for p in paths)

    def _list_files(self, path, patterns):
        files = super()._list_files(path, patterns)
        kept = {}
        for name, file in files.items():
            study_id, _ = self._to_id(name)
            if not is_name(study_id) or not self._stays_inside(os.path.join(path, file)):
                logger.warning("not listed: %s (unsafe name, or a link that leaves the studies folder)", name)
                continue
            kept[name] = file
        return kept

    def _writable(self, *parts: str) -> None:
        """Refuse (422) a write whose destination, followed through any link, would land outside."""
        try:
            resolve_inside(self._root, *parts[:-1])
            resolve_inside(self._root, *parts)
        except InputError as e:
            raise as_http(e, "not written") from e

    def get_image_uri(self, image_id: str) -> str:
        uri = self._inside(super().get_image_uri(self._name("image id", image_id)))
        # The index can outlive a study's file for a moment (a delete racing the folder watcher's
        # reload): a study whose file is gone is unknown, not a path to hand on.
        return uri if uri and os.path.exists(uri) else ""

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        self._name("label tag", label_tag)
        return self._inside(super().get_label_uri(self._name("image id", label_id), label_tag))

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        return super().get_image_info(self._name("image id", image_id))

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"unknown image id '{self._name('image id', image_id)}'")
        return super().update_image_info(image_id, info)

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        self._name("label tag", label_tag)
        return super().get_label_info(self._name("image id", label_id), label_tag)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        self._name("image id", label_id)
        self._name("label tag", label_tag)
        if not self._datastore.label(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"no '{label_tag}' label for image '{label_id}'")
        return super().update_label_info(label_id, label_tag, info)

    # ---- changes

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        try:
            return self._save_label(image_id, label_filename, label_tag, label_info)
        except BaseException:
            discard_upload(label_filename)
            raise

    def _save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        self._name("label tag", label_tag)
        image_path = self.get_image_uri(image_id)
        if not image_path:
            raise HTTPException(status_code=404, detail=f"unknown image id '{image_id}'")
        try:
            label = check_label(label_filename, image_path)
        except InputError as e:
            raise as_http(e, "label not saved") from e
        return self._store_checked_label(image_id, image_path, label, label_tag, label_info)

    def _store_checked_label(
        self, image_id: str, image_path: str, label_xyz, label_tag: str, label_info: dict[str, Any]
    ) -> str:
        """Store a label already checked against its study (:func:`check_label`), on the study's own header."""
        suffix = ".nii.gz" if image_path.endswith(NIFTI_SUFFIXES) or os.path.isdir(image_path) else ".nrrd"
        self._writable("labels", label_tag, f"{image_id}{suffix}")
        with tempfile.TemporaryDirectory() as tmp:
            clean = write_label_like(label_xyz, image_path, os.path.join(tmp, f"label{suffix}"))
            return LocalDatastore.save_label(self, image_id, clean, label_tag, label_info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        if not self.get_label_uri(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"no '{label_tag}' label for image '{label_id}'")
        return super().remove_label(label_id, label_tag)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        try:
            return self._add_image(image_id, image_filename, image_info)
        except BaseException:
            discard_upload(image_filename)
            raise

    def _add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        suffix = next((s for s in UPLOAD_SUFFIXES if image_filename.endswith(s)), None)
        if suffix is None:
            raise HTTPException(
                status_code=422,
                detail="image not added: upload a NIfTI or NRRD file, or a DICOM series as one ZIP "
                f"({', '.join(UPLOAD_SUFFIXES)})",
            )
        image_id = image_id or self._to_id(os.path.basename(image_filename))[0]
        self._name("image id", image_id)
        if image_id in self._datastore.objects:
            raise HTTPException(
                status_code=409,
                detail=f"image not added: '{image_id}' already exists; delete it first or choose another id",
            )
        if suffix == ".zip":
            return self._add_dicom_zip(image_id, image_filename)
        self._writable(f"{image_id}{suffix}")
        try:
            read_geometry(image_filename)
        except InputError as e:
            raise as_http(e, "image not added") from e
        return super().add_image(image_id, image_filename, image_info)

    def _add_dicom_zip(self, image_id: str, zip_path: str) -> str:
        """A zipped DICOM series becomes the series folder ``<id>.dicom``, whole or not at all."""
        self._writable(f"{image_id}.dicom")
        partial = tempfile.mkdtemp(prefix=".upload-", dir=self._root)
        try:
            unpack_dicom_zip(zip_path, os.path.join(partial, "series"))
            os.rename(os.path.join(partial, "series"), os.path.join(self._root, f"{image_id}.dicom"))
        except InputError as e:
            raise as_http(e, "image not added") from e
        finally:
            shutil.rmtree(partial, ignore_errors=True)
            discard_upload(zip_path)
        self.refresh()
        return image_id

    def remove_image(self, image_id: str) -> None:
        if not self.get_image_uri(image_id):
            raise HTTPException(status_code=404, detail=f"unknown image id '{image_id}'")
        return super().remove_image(image_id)
