"""MONAI Label's upload sessions, with session ids checked before they become folder names."""

from __future__ import annotations

import logging

from fastapi import HTTPException
from monailabel.utils.sessions import Sessions

from .names import is_name

logger = logging.getLogger(__name__)


class ScarSessions(Sessions):
    """Upload sessions whose ids are safe names.

    Stock ``get_session('..')`` takes the parent folder for a dangling session and deletes it. Here an
    unsafe id is never found and never removed (the request guard answers it with 422), so neither a
    request nor the periodic clean-up of expired sessions can reach outside the session store.
    Compressed uploads are refused: an archive's member names could point anywhere.
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
        if uncompress:
            raise HTTPException(status_code=422, detail="compressed sessions are not accepted; upload the files")
        return super().add_session(data_file, expiry, False, session_id)
