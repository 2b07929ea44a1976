"""MONAI Label's upload sessions, with session ids checked before they become folder names."""

from __future__ import annotations

import logging
import os
import tempfile

from fastapi import HTTPException
from monailabel.utils.sessions import Sessions

from .dicom_zip import is_zip_upload, unpack_dicom_zip
from .errors import InputError, as_http
from .names import is_name

logger = logging.getLogger(__name__)


class ScarSessions(Sessions):
    """Upload sessions whose ids are safe names.

    Stock ``get_session('..')`` takes the parent folder for a dangling session and deletes it. Here an
    unsafe id is never found and never removed (the request guard answers it with 422), so neither a
    request nor the periodic clean-up of expired sessions can reach outside the session store.
    A DICOM series may come as one ZIP file (``uncompress=true`` or a ``.zip`` name); it is unpacked by
    :func:`lib.dicom_zip.unpack_dicom_zip`, never under the archive's own member names.
    """

    def get_session(self, session_id: str, update_ts: bool = True, fetch_cache: bool = True):
        if not is_name(session_id):
            return None
        return super().get_session(session_id, update_ts=update_ts, fetch_cache=fetch_cache)

    def remove_session(self, session_id: str):
        if not is_name(session_id):
            logger.warning("not removing session %r: not a safe name", session_id)
            return None
        return super().remove_session(session_id)

    def add_session(self, data_file: str, expiry: int = 0, uncompress: bool = False, session_id=None):
        if not (uncompress or is_zip_upload(data_file)):
            return super().add_session(data_file, expiry, False, session_id)
        if not is_zip_upload(data_file):
            raise HTTPException(status_code=422, detail="a compressed session must be one DICOM series as a .zip file")
        # MONAI Label's own unpacking (shutil.unpack_archive) writes members under their own names.
        with tempfile.TemporaryDirectory(prefix="scar_lge-session-") as unpacked:
            folder = os.path.join(unpacked, "series")  # moved into the session store by add_session
            try:
                unpack_dicom_zip(data_file, folder)
            except InputError as e:
                raise as_http(e, "session not created") from e
            finally:
                os.remove(data_file)
            return super().add_session(folder, expiry, False, session_id)
