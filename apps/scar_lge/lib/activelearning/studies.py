"""Which unlabelled studies a strategy may hand out: present on disk and readable as a 3D LGE stack."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from monailabel.interfaces.datastore import Datastore

from ..errors import InputError
from ..label_io import read_geometry

logger = logging.getLogger(__name__)

Stamp = tuple[int, int]


@dataclass(frozen=True)
class Study:
    """One unlabelled study: datastore id, path on disk and :func:`path_stamp` when it was listed."""

    id: str
    path: str
    stamp: Stamp


def path_stamp(path: str) -> Stamp | None:
    """(newest mtime in ns, size in bytes) of a file, or of the files of a DICOM series folder; None when gone.

    A study replaced under the same id changes its stamp, so whatever was cached for it is recomputed.
    """
    try:
        if os.path.isdir(path):
            mtime, size = os.stat(path).st_mtime_ns, 0
            for entry in os.scandir(path):
                if entry.is_file():
                    stat = entry.stat()
                    mtime, size = max(mtime, stat.st_mtime_ns), size + stat.st_size
            return mtime, size
        stat = os.stat(path)
        return stat.st_mtime_ns, stat.st_size
    except FileNotFoundError:
        return None


class StudyPool:
    """The datastore's unlabelled studies, less those infer refuses (2D, 4D, colour, multi-phase, unreadable).

    Always starts from the datastore's current list, so a deleted study is gone at once. The
    readability check is cached per path and stamp: a study is read once, and again only when replaced.

    Args:
        check: raises :class:`InputError` for a study infer refuses; :func:`read_geometry` by default.
    """

    def __init__(self, check: Callable[[str], object] = read_geometry):
        self._check = check
        self._refusals: dict[str, tuple[Stamp, str | None]] = {}
        self._lock = threading.Lock()

    def refusal(self, path: str, stamp: Stamp) -> str | None:
        """Why infer refuses the study at ``path``, or None when it can be segmented."""
        with self._lock:
            cached = self._refusals.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            self._check(path)
            reason = None
        except InputError as e:
            reason = str(e)
            logger.warning("study %s is never handed out: %s", os.path.basename(path), reason)
        with self._lock:
            self._refusals[path] = (stamp, reason)
        return reason

    def unlabelled(self, datastore: Datastore, request: dict | None = None) -> tuple[list[Study], dict[str, str]]:
        """Studies that may be handed out, by id, and the refused ones with their reason.

        Args:
            datastore: its current unlabelled list is the starting point.
            request: ``label_tag`` and ``labels`` are passed on to the datastore, as MONAI Label's strategies do.
        """
        request = request or {}
        usable, refused = [], {}
        for image_id in sorted(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))):
            path = datastore.get_image_uri(image_id)
            stamp = path_stamp(path) if path else None
            if stamp is None:  # deleted on disk, not yet dropped from the index
                continue
            reason = self.refusal(path, stamp)
            if reason is None:
                usable.append(Study(image_id, path, stamp))
            else:
                refused[image_id] = reason
        return usable, refused
