"""Published versions of the scar model: numbered, with their stats, and a pointer to the current one.

Layout of the model folder (``--conf model_dir``)::

    versions/v1/scar.pt            a checkpoint, with its recipe and provenance (lib/model.py)
    versions/v1/train_stats.json   the training run that made it
    current.json                   {"version": "v2", "history": [...]}: which version infers

With no published version the current model is the shipped default, which is only ever read. A
version folder appears whole (written under a temporary name, then renamed) and the pointer is
replaced atomically, so a reader never sees half a model. A run killed while publishing leaves at
most a ``.staging-*`` folder (removed by the next publish) or a numbered version that never became
current; the current model is unchanged either way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass

import torch
from torch import nn

from .constants import MODEL_NAME
from .model import CheckpointError, build_network, load_checkpoint, read_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "default"
_VERSION = re.compile(r"v([1-9][0-9]*)")


@dataclass(frozen=True)
class ModelVersion:
    """One usable model: its id ("default", "v1", "v2", ...) and checkpoint file."""

    version: str
    path: str


def file_stamp(path: str) -> tuple:
    """(path, mtime in ns, size) of a checkpoint file, (path, None, None) when it is missing: changes on any rewrite."""
    try:
        stat = os.stat(path)
        return path, stat.st_mtime_ns, stat.st_size
    except OSError:
        return path, None, None


def write_json_atomic(path: str, data: dict) -> None:
    """Write JSON to ``path`` so a reader sees the old file or the new one, never a mix."""
    folder = os.path.dirname(path) or "."
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".tmp-", suffix=".json", delete=False) as f:
        json.dump(data, f, indent=2)
        tmp = f.name
    os.replace(tmp, path)


class ModelStore:
    """The versions of the ``scar`` model in ``model_dir``, and the shipped default beside them.

    Args:
        model_dir: folder of published versions; created if missing. Never the shipped model's folder.
        shipped_path: the read-only default checkpoint that ships with the app.
    """

    def __init__(self, model_dir: str, shipped_path: str):
        self.model_dir = os.path.realpath(model_dir)
        self.shipped_path = os.path.realpath(shipped_path)
        if self.model_dir == os.path.dirname(self.shipped_path):
            raise ValueError(
                f"model_dir {model_dir} is the shipped model's folder; published models go to a folder of their own"
            )
        self.versions_dir = os.path.join(self.model_dir, "versions")
        self.pointer_path = os.path.join(self.model_dir, "current.json")
        os.makedirs(self.versions_dir, exist_ok=True)
        self._checked: tuple[tuple, CheckpointError | None] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # A store handed to a training rank (another process, lib/distributed.py) gets a lock of its own: the
        # lock orders the threads of one process, and rank 0 alone publishes.
        # Nor is the last check carried over: it may hold a CheckpointError, which does not unpickle.
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_checked")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._checked = None

    def _path(self, version: str) -> str:
        if version == DEFAULT_VERSION:
            return self.shipped_path
        if not _VERSION.fullmatch(version or ""):
            raise ValueError(f"model version {version!r} is not valid; use 'default' or v1, v2, ...")
        return os.path.join(self.versions_dir, version, f"{MODEL_NAME}.pt")

    def versions(self) -> list[str]:
        """Published versions, oldest first (the shipped default is not listed)."""
        found = [d for d in os.listdir(self.versions_dir) if _VERSION.fullmatch(d)]
        return sorted(found, key=lambda v: int(v[1:]))

    def _pointer(self) -> dict:
        if not os.path.exists(self.pointer_path):
            return {"version": DEFAULT_VERSION, "history": []}
        with open(self.pointer_path) as f:
            return json.load(f)

    def current(self) -> ModelVersion:
        """The version inference uses now: the pointer's, or the shipped default when none is published."""
        version = self._pointer().get("version", DEFAULT_VERSION)
        return ModelVersion(version, self._path(version))

    def problem(self, version: ModelVersion) -> CheckpointError | None:
        """Why ``version``'s checkpoint cannot be used (missing, unreadable, other recipe), or None.

        Kept while the file is unchanged (path, mtime, size), so each request does not re-read 7 MB.
        """
        stamp = file_stamp(version.path)
        with self._lock:
            if self._checked is not None and self._checked[0] == stamp:
                return self._checked[1]
        try:
            read_checkpoint(version.path)
            problem = None
        except CheckpointError as e:
            problem = e
        with self._lock:
            self._checked = (stamp, problem)
        return problem

    def stats(self, version: str) -> dict:
        """The training stats a published version was made with ({} for the shipped default)."""
        path = os.path.join(os.path.dirname(self._path(version)), "train_stats.json")
        if version == DEFAULT_VERSION or not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def _point_to(self, version: str, reason: str) -> ModelVersion:
        pointer = self._pointer()
        history = pointer.get("history", [])
        history.append({"version": version, "from": pointer.get("version"), "reason": reason, "at": now_iso()})
        write_json_atomic(self.pointer_path, {"version": version, "history": history})
        logger.info("current model is now %s (%s)", version, reason)
        return ModelVersion(version, self._path(version))

    def publish(self, network: nn.Module, provenance: dict, stats: dict) -> ModelVersion:
        """Store ``network`` as the next version with its provenance and stats, then make it current."""
        for left in os.listdir(self.versions_dir):  # from a run killed while publishing; one run at a time
            if left.startswith(".staging-"):
                shutil.rmtree(os.path.join(self.versions_dir, left), ignore_errors=True)
        staging = tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir)
        try:
            existing = self.versions()
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
            provenance = {**provenance, "version": version}
            save_checkpoint(network, os.path.join(staging, f"{MODEL_NAME}.pt"), provenance)
            write_json_atomic(os.path.join(staging, "train_stats.json"), {**stats, "version": version})
            os.rename(staging, os.path.join(self.versions_dir, version))  # fails rather than merge if it exists
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self._point_to(version, "published after training")

    def rollback(self, to: str | None = None) -> ModelVersion:
        """Make an earlier version current: ``to`` by id, or by default the one before the current.

        Raises:
            ValueError: ``to`` is not a usable version, or there is nothing earlier to go back to.
        """
        current = self.current().version
        if to is None:
            ordered = [DEFAULT_VERSION, *self.versions()]
            if current not in ordered or ordered.index(current) == 0:
                raise ValueError(f"the current model is {current}: there is no earlier version to roll back to")
            to = ordered[ordered.index(current) - 1]
        read_checkpoint(self._path(to))  # refuse a missing or mismatched checkpoint before pointing at it
        return self._point_to(to, f"rolled back from {current}")

    def served_copy(self, version: ModelVersion) -> str:
        """A path to give MONAI Label's model endpoints instead of the checkpoint itself.

        ``DELETE /model/{model}`` renames whatever file it is given; without the request guard in front
        (a plain ``start_server``), that would be a published version or the shipped default. A hard
        link (a copy across file systems) in ``served/`` can be renamed without touching either.
        """
        folder = os.path.join(self.model_dir, "served")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{version.version}-{MODEL_NAME}.pt")
        tmp = f"{path}.tmp"
        if os.path.exists(tmp):
            os.remove(tmp)
        try:
            os.link(version.path, tmp)
        except OSError:
            shutil.copyfile(version.path, tmp)
        os.replace(tmp, path)
        return path

    def describe(self) -> dict:
        """Versions, the current one and the pointer's history, for /info/ and the command line."""
        pointer = self._pointer()
        return {
            "model_dir": self.model_dir,
            "current": pointer.get("version", DEFAULT_VERSION),
            "versions": [DEFAULT_VERSION, *self.versions()],
            "history": pointer.get("history", [])[-20:],
        }


class CurrentNetwork:
    """The current version's network on one device, loaded once per checkpoint file, for infer and scoring.

    Loading checks the recipe (:func:`lib.model.load_checkpoint`) and never falls back to random
    weights. A publish or rollback is picked up by the next :meth:`get`, without a restart.

    Args:
        store: the model versions.
        device: where the network lives.
    """

    def __init__(self, store: ModelStore, device: str | torch.device):
        self.store = store
        self.device = torch.device(device)
        self._loaded: tuple[tuple, ModelVersion, nn.Module, dict] | None = None
        self._lock = threading.Lock()

    def get(self) -> tuple[ModelVersion, nn.Module, dict]:
        """(version, network in eval mode, provenance) of the current model.

        Raises:
            CheckpointError: the current checkpoint is missing, unreadable or made for other labels,
                grid or architecture.
        """
        version = self.store.current()
        stamp = file_stamp(version.path)
        with self._lock:
            if self._loaded is None or self._loaded[0] != stamp:
                network = build_network()
                provenance = load_checkpoint(network, version.path)
                self._loaded = (stamp, version, network.to(self.device).eval(), provenance)
            return self._loaded[1], self._loaded[2], self._loaded[3]


def now_iso() -> str:
    """Local time with its UTC offset, as every stats and provenance record gives it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
