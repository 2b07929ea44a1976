"""Names that become paths: one allowed form, and every path resolved inside its folder.

Image ids, label tags, model, strategy and scoring names and session ids all end up as file or folder
names on the server. Each is checked against one conservative form before it reaches the file
system, and each path built from one is resolved (symlinks included) and checked to lie inside the
folder it was meant for.
"""

from __future__ import annotations

import os
import re
import tempfile

from .errors import InputError

# Letters, digits, '.', '_' and '-', starting with a letter or digit (so never '.' or '..'), at most
# 128 characters: wide enough for DICOM-derived ids and study names, narrow enough that no id is a
# path, a hidden file or a shell metacharacter.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_FORM = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
# How MONAI Label's infer endpoint names an uploaded file: tempfile.NamedTemporaryFile(suffix=<the
# upload's suffixes>) in the temp folder.
_UPLOAD_NAME = re.compile(r"tmp[a-z0-9_]{8}(\.[A-Za-z0-9_-]+)*")


def check_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe name, else raise :class:`InputError` (HTTP 422) saying the allowed form.

    Args:
        kind: what the name is, for the message ("image id", "label tag", ...).
        value: the name as received.
    """
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise InputError(f"{kind} {value!r} is not allowed; use {NAME_FORM}")
    return value


def is_name(value: object) -> bool:
    """True when ``value`` passes :func:`check_name`."""
    return isinstance(value, str) and bool(NAME_PATTERN.fullmatch(value)) and ".." not in value


def resolve_inside(folder: str, *parts: str) -> str:
    """``folder/parts...`` resolved (symlinks followed); :class:`InputError` (422) if it leaves ``folder``."""
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, path]) != root:
        raise InputError(f"{os.path.join(*parts)!r} resolves outside its folder")
    return path


def is_upload(path: str, session_store: str | None = None) -> bool:
    """True for a file the infer endpoint saved an upload to, or an image inside the upload-session store.

    These are the only server paths infer reads; every other image is a datastore id. The endpoint's
    ``params`` cannot name a path (lib/infer_route.py), so a path here was put there by the server.
    """
    real = os.path.realpath(path)
    if not os.path.exists(real):
        return False
    if os.path.dirname(real) == os.path.realpath(tempfile.gettempdir()) and _UPLOAD_NAME.fullmatch(
        os.path.basename(real)
    ):
        return True
    if session_store:
        store = os.path.realpath(session_store)
        return real != store and os.path.commonpath([store, real]) == store
    return False


def discard_upload(path: str) -> None:
    """Delete the temp file the server saved a refused upload to (MONAI Label removes uploads only after a
    successful answer, so a refused study would otherwise stay in the temp folder). Anything else is kept."""
    if isinstance(path, str) and is_upload(path) and os.path.isfile(path):
        os.remove(path)
