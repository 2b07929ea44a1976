"""Stopping the server stops the training and scoring processes it started, and publishes nothing."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import requests

from .conftest import start_server


def _background_runs(pid: int) -> list[psutil.Process]:
    runs = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "monailabel.interfaces.utils.app" in " ".join(child.cmdline()):
                runs.append(child)
        except psutil.NoSuchProcess:
            pass
    return runs


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGKILL, None], ids=["SIGTERM", "SIGKILL", "cancel"])
def test_stopping_the_server_alone_stops_its_training_run(tmp_path, sent):
    """SIGTERM or SIGKILL to the server's PID alone, or ``DELETE /train/`` (cancel, server stays up)."""
    server = start_server(tmp_path)
    try:
        r = requests.post(f"{server.url}/train/scar", json={"max_epochs": 500}, timeout=30)
        assert r.status_code == 200, r.text
        deadline = time.time() + 180
        while time.time() < deadline:
            stats = requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"].get("scar", {})
            if stats.get("status") == "running":  # the run has its studies and is loading or training
                break
            time.sleep(1)
        else:
            pytest.fail("the training run never started")
        runs = _background_runs(server.process.pid)
        assert any("-m train" in " ".join(p.cmdline()) for p in runs)

        training = [p for p in runs if "-m train" in " ".join(p.cmdline())]
        if sent is None:
            assert requests.delete(f"{server.url}/train/", timeout=30).json()["status"] == "STOPPED"
            runs = training  # background scoring may go on: only the run was cancelled
        else:
            os.kill(server.process.pid, sent)  # the server's PID alone, as a process manager sends it
            server.process.wait(timeout=60)
        gone, alive = psutil.wait_procs(runs, timeout=30)
        assert not alive, [" ".join(p.cmdline())[:120] for p in alive]
        current = server.current_model()
        assert current["version"] == "default" and current["versions"] == []  # nothing was published
        if sent is None:
            stats = requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"]["scar"]
            assert stats["status"] == "interrupted" and stats["epoch"] < 500
            r = requests.post(f"{server.url}/infer/scar", params={"image": "lge_002", "output": "json"}, timeout=120)
            assert r.json()["model"]["version"] == "default"
    finally:
        server.stop()
