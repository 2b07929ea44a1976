"""Uncertainty scores of the unlabelled studies under one model version, in a file of their own.

Not in the datastore index: the server process rewrites ``datastore_v2.json`` whole on every label
save, so a scoring subprocess writing there would race with it. One file per version,
``<cache_dir>/<version>.json``, written only by the scoring task and atomically, so a strategy
reading it sees the old file or the new one. A rollback finds its version's scores again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

from ..model_store import ModelVersion, write_json_atomic
from .studies import Study, path_stamp

logger = logging.getLogger(__name__)


class ScoreCache:
    """Scores of one model version, each kept with the study's stamp at scoring time.

    File layout::

        {"version": "v2", "model_stamp": [mtime_ns, size],
         "scores": {"lge_010": {"stamp": [mtime_ns, size], "score": 0.0123},
                    "lge_013": {"stamp": [...], "error": "why it could not be scored"}}}

    A score counts only while the study's stamp and the checkpoint's stamp are those it was made
    with: a replaced study, or a checkpoint file replaced under the same version id, is rescored.

    Args:
        cache_dir: folder of the per-version files.
        model: the version whose scores these are.
    """

    def __init__(self, cache_dir: str, model: ModelVersion):
        self.cache_dir = cache_dir
        self.model = model
        self.path = os.path.join(cache_dir, f"{model.version}.json")
        stamp = path_stamp(model.path)
        self.model_stamp = list(stamp) if stamp else None
        self._entries: dict[str, dict] = self._load()

    def _load(self) -> dict[str, dict]:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable score cache %s: %s", self.path, e)
            return {}
        if data.get("version") != self.model.version or data.get("model_stamp") != self.model_stamp:
            return {}  # another checkpoint under the same id: every score is stale
        return dict(data.get("scores", {}))

    def _entry(self, study: Study) -> dict | None:
        entry = self._entries.get(study.id)
        return entry if entry and entry.get("stamp") == list(study.stamp) else None

    def score(self, study: Study) -> float | None:
        """The study's score under this version, or None when it has none (never scored, or replaced since)."""
        entry = self._entry(study)
        return float(entry["score"]) if entry and "score" in entry else None

    def error(self, study: Study) -> str | None:
        """Why scoring this study failed under this version, or None."""
        entry = self._entry(study)
        return entry.get("error") if entry else None

    def unscored(self, studies: Iterable[Study]) -> list[Study]:
        """The studies with neither a score nor a recorded failure under this version."""
        return [s for s in studies if self._entry(s) is None]

    def put(self, study: Study, *, score: float | None = None, error: str | None = None) -> None:
        """Record a score, or the reason a study could not be scored; :meth:`save` writes it."""
        if (score is None) == (error is None):
            raise ValueError(f"give exactly one of score or error for {study.id}, got score={score!r}, error={error!r}")
        entry = {"score": float(score)} if score is not None else {"error": error}
        self._entries[study.id] = {"stamp": list(study.stamp), **entry}

    def save(self, keep: Iterable[str] | None = None) -> None:
        """Write the file atomically; entries of studies not in ``keep`` (deleted ones) are dropped."""
        if keep is not None:
            keep = set(keep)
            self._entries = {k: v for k, v in self._entries.items() if k in keep}
        os.makedirs(self.cache_dir, exist_ok=True)
        data = {"version": self.model.version, "model_stamp": self.model_stamp, "scores": self._entries}
        write_json_atomic(self.path, data)
