"""A scar_lge server process on loopback, started as ``scripts/serve.sh`` starts it.

The one place the server command line is written for Python callers: the integration tests (whose
fixtures build on it) and the benchmarks (which stay free of test fixtures) both start servers here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "apps" / "scar_lge"
SAMPLE_DATA = ROOT / "sample-data"
STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on loopback, in its own process group, logging to ``root/server.log``.

    ``studies`` is a folder or a DICOMweb URL; ``conf`` adds ``--conf key value`` pairs.
    """

    def __init__(self, root: Path, studies: Path | str, model_dir: Path, conf: dict[str, str] | None = None):
        self.root, self.studies, self.model_dir = root, studies, model_dir
        self.port = free_port()
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
            str(studies),
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
        for key, value in (conf or {}).items():
            cmd += ["--conf", key, value]
        with open(self.log, "w") as log:
            # A new session, so stop() also ends the train and scoring subprocesses the server starts.
            self.process = subprocess.Popen(
                cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self) -> float:
        """Poll ``GET /info/`` until it answers 200; returns the seconds it took."""
        start = time.perf_counter()
        deadline = time.time() + STARTUP_TIMEOUT_S
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return time.perf_counter() - start
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server did not answer in {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) to the whole process group, also when the server itself has already
        ended (its training or scoring processes may not have); SIGKILL if it has not ended in 20 s."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def run_training(
    url: str, params: dict, timeout_s: float, request_timeout_s: float = 60
) -> tuple[dict, float, float, float]:
    """``POST /train/scar`` with ``params`` and poll until the run ends; returns (task, sent, answered, ended)."""
    start = time.perf_counter()
    r = requests.post(f"{url}/train/scar", json=params, timeout=request_timeout_s)
    answered = time.perf_counter()
    if r.status_code != 200:
        raise RuntimeError(f"POST /train/scar answered {r.status_code}: {r.text[:500]}")
    task_id = r.json()["id"]
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        r = requests.get(f"{url}/train/", params={"all": "true"}, timeout=request_timeout_s)
        tasks = r.json() if r.status_code == 200 else []
        task = next((t for t in tasks if isinstance(t, dict) and t.get("id") == task_id), None)
        if task and task.get("status") in ("DONE", "ERROR", "STOPPED"):
            return task, start, answered, time.perf_counter()
        time.sleep(1)
    raise TimeoutError(f"training did not finish in {timeout_s} s")
