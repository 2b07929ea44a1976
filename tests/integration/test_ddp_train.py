"""The server's train task on 2 DDP ranks (gloo, on CPU): one run, one published version, rank 0's record.

The multi-GPU path of the train task is the same code with NCCL and one rank per GPU; ``--conf cpu_ranks 2``
runs it here without a GPU. ``pytest -k ddp`` selects this test.
"""

from __future__ import annotations

import os
import shutil

import requests

from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import Server


def test_ddp_train_task_on_two_ranks_publishes_exactly_one_version(tmp_path):
    shutil.copytree(SAMPLE_DATA, tmp_path / "studies")
    (tmp_path / "model").mkdir()
    server = Server(tmp_path, tmp_path / "model", conf={"cpu_ranks": "2"})
    try:
        before = server.current_model()
        task = server.train({"max_epochs": 1, "lr": 1e-4, "batch_size": 4, "publish": "force"})
        assert task["status"] == "DONE", task
        stats = requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"]["scar"]
        assert stats["status"] == "finished" and stats["ranks"] == 2, stats
        assert stats["published"] is True and stats["epoch"] == 1 and len(stats["history"]) == 1
        after = server.current_model()
        assert before["versions"] == [] and after["versions"] == ["v1"] and after["version"] == "v1"
        assert sorted(os.listdir(tmp_path / "model" / "versions")) == ["v1"]
        # The model the ranks trained answers: infer works with the new version.
        answer = requests.post(f"{server.url}/infer/scar", params={"image": "lge_010", "output": "json"}, timeout=120)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "v1"
    finally:
        server.stop()
