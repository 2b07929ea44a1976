"""A real MONAI Label server process on loopback, on a copy of the sample data."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import DEFAULT_MODEL, ROOT, SAMPLE_DATA

sys.path.insert(0, str(ROOT / "scripts"))

from local_server import Server as LocalServer  # noqa: E402
from local_server import free_port  # noqa: E402

TRAIN_TIMEOUT_S = 300


class Server(LocalServer):
    """A running server on ``root/studies`` or ``studies`` (see scripts/local_server.py), ready when constructed."""

    def __init__(self, root: Path, model_dir: Path, studies=None, conf: dict | None = None):
        super().__init__(root, studies or root / "studies", model_dir, conf)
        try:
            self.wait_ready()
        except RuntimeError:
            self.stop(kill=True)
            raise

    def current_model(self) -> dict:
        """The current version, its checkpoint's SHA-256 and every published version, read from the model folder."""
        from lib.model_store import ModelStore

        store = ModelStore(str(self.model_dir), str(DEFAULT_MODEL))
        current = store.current()
        sha = hashlib.sha256(open(current.path, "rb").read()).hexdigest() if os.path.exists(current.path) else None
        return {"version": current.version, "sha": sha, "versions": store.versions()}

    def train(self, params: dict, progress: list | None = None) -> dict:
        """Start a training run through the API and wait for it; returns the finished task."""
        r = requests.post(f"{self.url}/train/scar", json=params, timeout=30)
        r.raise_for_status()
        return self.wait_for_training(r.json()["id"], progress)

    def wait_for_training(self, task_id: str, progress: list | None = None) -> dict:
        """Poll ``GET /train/`` until run ``task_id`` ends; returns the task.

        ``progress``, if given, collects what ``GET /info/`` showed as ``train_stats`` while the run went.
        """
        deadline = time.time() + TRAIN_TIMEOUT_S
        while time.time() < deadline:
            task = requests.get(f"{self.url}/train/", params={"all": True}, timeout=10).json()
            task = next((t for t in task if t["id"] == task_id), None)
            if task and task["status"] in ("DONE", "ERROR", "STOPPED"):
                return task
            if progress is not None and task and task["status"] == "RUNNING":
                progress.append(requests.get(f"{self.url}/info/", timeout=10).json()["train_stats"]["scar"])
            time.sleep(1)
        raise TimeoutError(f"training did not finish in {TRAIN_TIMEOUT_S} s")


def start_server(tmp: Path, network=None, prepare=None) -> Server:
    """A server on a copy of the sample studies, with an empty model folder (current: the shipped default).

    ``network``, if given, is published as version v1 first, so it is the current model. ``prepare``,
    if given, is called with (studies folder, model folder) before the server starts.
    """
    shutil.copytree(SAMPLE_DATA, tmp / "studies")
    model_dir = tmp / "model"
    model_dir.mkdir()
    if prepare:
        prepare(tmp / "studies", model_dir)
    if network is not None:
        from lib.model_store import ModelStore

        ModelStore(str(model_dir), str(DEFAULT_MODEL)).publish(network, {"note": "test model"}, {"note": "test"})
    return Server(tmp, model_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Server with the shipped default model, for tests that do not train."""
    s = start_server(tmp_path_factory.mktemp("server"))
    yield s
    s.stop()


SAMPLE_STUDIES_FOR_DICOMWEB = [SAMPLE_DATA / f"lge_{i:03d}.nii.gz" for i in range(3)] + [
    SAMPLE_DATA / "lge_dicom_014.dicom"
]


def start_dicomweb_store(root: Path):
    """A private Orthanc (lib/orthanc.py) holding a few sample studies; ``.series`` maps study name -> series UID."""
    from lib.orthanc import start_orthanc, store_studies

    orthanc = start_orthanc(root / "orthanc", port=free_port())
    try:
        orthanc.series = store_studies(orthanc.dicomweb, SAMPLE_STUDIES_FOR_DICOMWEB, root / "dicom")
    except BaseException:
        orthanc.stop()
        raise
    return orthanc


def start_dicomweb_server(root: Path, store, network=None) -> Server:
    """The app on ``store``'s DICOMweb root, its mirror in ``root``; ready when returned.

    ``network``, if given, is published as version v1 first, so it is the current model.
    """
    (root / "model").mkdir(parents=True)
    if network is not None:
        from lib.model_store import ModelStore

        ModelStore(str(root / "model"), str(DEFAULT_MODEL)).publish(network, {"note": "test model"}, {"note": "test"})
    return Server(root, root / "model", store.dicomweb, {"dicomweb_mirror": str(root / "mirror")})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A private Orthanc with a few sample studies, one per test module that asks for it."""
    orthanc = start_dicomweb_store(tmp_path_factory.mktemp("orthanc"))
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def dicomweb_server(store, tmp_path_factory):
    """The app on ``store``, with the shipped default model."""
    s = start_dicomweb_server(tmp_path_factory.mktemp("dicomweb_server"), store)
    yield s
    s.stop()
