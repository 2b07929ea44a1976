"""A real MONAI Label server process on loopback, on a copy of the sample data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import APP_DIR, DEFAULT_MODEL, SAMPLE_DATA

STARTUP_TIMEOUT_S = 120
TRAIN_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Handle on a running server: its URL, studies folder, model file and log."""

    def __init__(self, root: Path, model_dir: Path):
        self.root, self.studies, self.model_dir = root, root / "studies", model_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        env = {
            **os.environ,
            "MONAI_LABEL_TRACKING_ENABLED": "false",
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "true",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(APP_DIR),
        }
        cmd = [
            sys.executable,
            "-m",
            "monailabel.main",
            "start_server",
            "--app",
            str(APP_DIR),
            "--studies",
            str(self.studies),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--uvicorn_app",
            "lib.server:app",
            "--conf",
            "model_dir",
            str(model_dir),
        ]
        # A new session, so stop() also ends the train subprocesses the server starts.
        self.process = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + STARTUP_TIMEOUT_S
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/info/", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server did not answer in {STARTUP_TIMEOUT_S} s: {self.log.read_text()[-3000:]}")

    def current_model(self) -> dict:
        """The current version, its checkpoint's SHA-256 and every published version, read from the model folder."""
        import hashlib

        from lib.model_store import ModelStore

        store = ModelStore(str(self.model_dir), str(DEFAULT_MODEL))
        current = store.current()
        sha = hashlib.sha256(open(current.path, "rb").read()).hexdigest() if os.path.exists(current.path) else None
        return {"version": current.version, "sha": sha, "versions": store.versions()}

    def current_model(self) -> dict:
        """The current version, its checkpoint's SHA-256 and every published version, read from the model folder."""
        import hashlib

        from lib.model_store import ModelStore

        store = ModelStore(str(self.model_dir), str(DEFAULT_MODEL))
        current = store.current()
        sha = hashlib.sha256(open(current.path, "rb").read()).hexdigest() if os.path.exists(current.path) else None
        return {"version": current.version, "sha": sha, "versions": store.versions()}

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def train(self, params: dict, progress: list | None = None) -> dict:
        """Start a training run through the API and wait for it; returns the finished task.

        ``progress``, if given, collects what ``GET /info/`` showed as ``train_stats`` while the run went.
        """
        r = requests.post(f"{self.url}/train/scar", json=params, timeout=30)
        r.raise_for_status()
        task_id = r.json()["id"]
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
