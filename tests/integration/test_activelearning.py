"""Active learning through a real server: answers at once, scores in the background, shares work between annotators.

One server for the module; the tests run in file order and build on each other (the reservations
they make last the whole module).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import nibabel as nib
import numpy as np
import pytest
import requests

from lib.model import build_network, load_checkpoint
from lib.model_store import ModelStore
from tests.conftest import DEFAULT_MODEL

from .conftest import start_server

UNLABELED = {"lge_010", "lge_011", "lge_012", "lge_013", "lge_dicom_014"}
SCORING_TIMEOUT_S = 240  # 5 studies x 8 dropout passes, plus the subprocess rebuilding the app, on 2 cores


@pytest.fixture(scope="module")
def al_server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("activelearning"))
    yield s
    s.stop()


HELD: dict[str, str] = {}  # client -> the study the server last handed it (so holds now)


def _ask(server, strategy: str, client_id: str | None) -> tuple[dict, float]:
    """POST /activelearning/{strategy}; the reply and how long it took (s)."""
    body = {"client_id": client_id} if client_id else {}
    start = time.perf_counter()
    r = requests.post(f"{server.url}/activelearning/{strategy}", json=body, timeout=60)
    elapsed = time.perf_counter() - start
    assert r.status_code == 200, r.text
    reply = r.json()
    if client_id and reply.get("id"):
        HELD[client_id] = reply["id"]
    return reply, elapsed


def _scoring_tasks(server) -> list[dict]:
    r = requests.get(f"{server.url}/scoring/", params={"all": True}, timeout=10)
    return r.json() if r.status_code == 200 else []  # 404 until the first task


def _wait_for_scoring(server, runs: int = 1) -> dict:
    """Poll GET /scoring/ until ``runs`` tasks exist and none is queued or running; the last task."""
    deadline = time.time() + SCORING_TIMEOUT_S
    while time.time() < deadline:
        tasks = _scoring_tasks(server)
        if len(tasks) >= runs and all(t["status"] not in ("SUBMITTED", "RUNNING") for t in tasks):
            return tasks[-1]
        time.sleep(2)
    raise TimeoutError(f"scoring did not finish in {SCORING_TIMEOUT_S} s")


def _index_objects(server) -> dict[str, dict]:
    return requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=10).json()["objects"]


def _index(server) -> set[str]:
    return set(_index_objects(server))


def _wait_until(predicate, what: str, timeout_s: float = 30):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(what)


def test_first_ask_answers_at_once_with_the_fallback(al_server):
    reply, elapsed = _ask(al_server, "scar_uncertainty", "alice")
    assert elapsed < 5, f"the first ask took {elapsed:.1f} s"
    assert reply["id"] in UNLABELED
    assert "not yet scored" in reply["fallback"] and reply["model_version"] == "default"
    assert reply["scored"] + reply["unscored"] == len(UNLABELED) and reply["unscored"] > 0
    assert reply["scoring"] in ("started", "running")


def test_after_background_scoring_the_strategy_ranks_by_score_quickly(al_server):
    task = _wait_for_scoring(al_server)
    assert task["status"] == "DONE", task
    reply, elapsed = _ask(al_server, "scar_uncertainty", "carol")
    assert elapsed < 2, f"ranking from cached scores took {elapsed:.1f} s"
    assert "fallback" not in reply, reply["fallback"]
    assert set(reply["scores"]) == UNLABELED and (reply["scored"], reply["unscored"]) == (5, 0)
    best_free = max(UNLABELED - {HELD["alice"]}, key=reply["scores"].__getitem__)
    assert reply["id"] == best_free and reply["score"] == reply["scores"][best_free]
    assert (al_server.model_dir / "uncertainty" / "default.json").is_file()


def test_clients_asking_in_turn_get_different_studies_and_keep_their_own(al_server):
    bob = _ask(al_server, "scar_uncertainty", "bob")[0]["id"]
    dave = _ask(al_server, "random", "dave")[0]["id"]
    assert len({HELD["alice"], HELD["carol"], bob, dave}) == 4
    assert _ask(al_server, "scar_uncertainty", "bob")[0]["id"] == bob  # still the best he may have
    assert _ask(al_server, "first", "alice")[0]["id"] == min(UNLABELED - {HELD["carol"], bob, dave})


def test_added_studies_are_scored_in_the_background_and_a_2d_one_is_never_handed_out(al_server):
    # Written beside the folder and moved in, so the server never lists a half-written file.
    flat = al_server.root / "aaa_flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64), np.int16), np.diag([1.5, 1.5, 8.0, 1.0])), str(flat))
    os.replace(flat, al_server.studies / flat.name)
    for new in ("lge_100", "lge_101"):
        shutil.copy(al_server.studies / "lge_011.nii.gz", al_server.root / f"{new}.nii.gz")
        os.replace(al_server.root / f"{new}.nii.gz", al_server.studies / f"{new}.nii.gz")
    _wait_until(lambda: {"aaa_flat", "lge_100", "lge_101"} <= _index(al_server), "the new files are not listed")
    reply = _ask(al_server, "scar_uncertainty", "alice")[0]
    assert "2 of 7 studies not yet scored" in reply["fallback"] and reply["scoring"] in ("started", "running")
    assert "3D short-axis stack" in reply["refused"]["aaa_flat"]
    assert _wait_for_scoring(al_server, 2)["status"] == "DONE"
    reply = _ask(al_server, "scar_uncertainty", "alice")[0]
    assert "fallback" not in reply and reply["scoring"] == "idle"  # the 2D image is not waiting for a score
    assert set(reply["scores"]) == UNLABELED | {"lge_100", "lge_101"}
    for strategy in ("first", "random", "scar_uncertainty"):  # "aaa_flat" sorts first
        assert _ask(al_server, strategy, "alice")[0]["id"] != "aaa_flat"


def test_anonymous_asks_reserve_nothing_and_skip_held_studies(al_server):
    held = set(HELD.values())
    first, second = (_ask(al_server, "first", None)[0] for _ in range(2))
    assert first["id"] == second["id"] and "reserved_until" not in first
    assert first["id"] not in held and first["id"] != "aaa_flat"
    # Two annotators take studies now, as the two anonymous asks did before this rule: the later tests
    # count on those studies being held.
    assert _ask(al_server, "first", "gina")[0]["id"] == first["id"]
    assert _ask(al_server, "first", "hank")[0]["id"] not in held | {first["id"]}


def test_a_deleted_study_is_never_handed_out(al_server):
    erin = _ask(al_server, "first", "erin")[0]["id"]  # the last free study
    r = requests.delete(f"{al_server.url}/datastore/image", params={"id": erin}, timeout=30)
    assert r.status_code == 200, r.text
    _wait_until(lambda: erin not in _index(al_server), "the datastore still lists the deleted study")
    for strategy in ("first", "random", "scar_uncertainty"):
        assert _ask(al_server, strategy, "erin")[0] == {}  # not her deleted study: every other one is held
    assert erin not in _ask(al_server, "scar_uncertainty", "alice")[0]["scores"]


def test_a_published_model_is_scored_in_the_background_without_anyone_asking(al_server):
    runs = len(_scoring_tasks(al_server))
    network = build_network()
    load_checkpoint(network, str(DEFAULT_MODEL))
    version = ModelStore(str(al_server.model_dir), str(DEFAULT_MODEL)).publish(network, {"note": "test"}, {}).version
    assert _wait_for_scoring(al_server, runs + 1)["status"] == "DONE"  # started by the server's periodic check
    saved = json.loads((al_server.model_dir / "uncertainty" / f"{version}.json").read_text())
    unlabelled = {i for i, o in _index_objects(al_server).items() if "final" not in o.get("labels", {})}
    assert set(saved["scores"]) == unlabelled - {"aaa_flat"}
    reply = _ask(al_server, "scar_uncertainty", "alice")[0]
    assert reply["model_version"] == version and "fallback" not in reply
