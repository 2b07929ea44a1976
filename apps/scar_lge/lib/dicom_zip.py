"""A DICOM series that arrives as one ZIP file, unpacked safely into a series folder.

Used by every route a study can arrive by (datastore upload, infer upload, upload session). The archive's
member names never become paths: members are written under fresh numbered names, so a name such as
``../../etc/x`` or an absolute path cannot reach outside the folder, and links are refused. Sizes are
bounded against archive bombs. The folder must then read as one short-axis stack (lib/label_io).
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile

import SimpleITK as sitk

from .errors import InputError
from .label_io import read_geometry

MAX_MEMBERS = 5_000  # a cardiac study has tens to a few hundred slices
MAX_UNPACKED_BYTES = 2 * 1024**3


def is_zip_upload(path: str) -> bool:
    return path.lower().endswith(".zip")


def unpack_dicom_zip(zip_path: str, folder: str) -> str:
    """Unpack ``zip_path`` into the new folder ``folder`` as one flat DICOM series; returns ``folder``.

    Raises:
        InputError: not a ZIP, too large, links inside, or not one readable series (HTTP 422);
            ``folder`` is removed again.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"not a readable ZIP file: {e}") from e
    os.makedirs(folder)
    try:
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if not members:
                raise InputError("the ZIP file holds no files")
            if len(members) > MAX_MEMBERS:
                raise InputError(f"the ZIP file holds {len(members)} files; a DICOM series has at most {MAX_MEMBERS}")
            if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
                raise InputError("the ZIP file unpacks to more than 2 GiB; a DICOM series is far smaller")
            for n, member in enumerate(members):
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise InputError(f"the ZIP file holds a link ({member.filename!r}); send the files themselves")
                with archive.open(member) as source, open(os.path.join(folder, f"{n:05d}.dcm"), "wb") as target:
                    shutil.copyfileobj(source, target)
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        if len(series) != 1:
            raise InputError(f"the ZIP file holds {len(series)} DICOM series; send one series per ZIP")
        read_geometry(folder)  # one frame per slice position, a 3D stack
        return folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
