"""Active learning without a server: reservations, the score cache, the fallback, refused and deleted studies."""

from __future__ import annotations

import json
import os
import random

import nibabel as nib
import numpy as np
import pytest

from lib.activelearning.background import RETRY_AFTER_S, BackgroundScoring
from lib.activelearning.reservations import Reservations, client_key
from lib.activelearning.score_cache import ScoreCache
from lib.activelearning.scoring import ScarUncertaintyScoring
from lib.activelearning.strategies import FirstStrategy, RandomStrategy, ScarUncertaintyStrategy
from lib.activelearning.studies import StudyPool
from lib.activelearning.uncertainty import MyocardialUncertainty
from lib.configs.scar import parse_settings
from lib.model import CheckpointError, build_network, save_checkpoint
from lib.model_store import ModelStore

GOOD = ["s1", "s2", "s3"]


class Clock:
    """A settable clock, so expiry is tested without sleeping."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeDatastore:
    """The three datastore calls the strategies make, over files in a folder."""

    def __init__(self, folder, ids):
        self.folder, self.ids = folder, list(ids)

    def get_unlabeled_images(self, label_tag=None, labels=None):
        return list(self.ids)

    def get_image_uri(self, image_id):
        return str(self.folder / f"{image_id}.nii.gz") if image_id in self.ids else ""

    def list_images(self):
        return list(self.ids)


def _nifti(path, shape, value=0):
    nib.save(nib.Nifti1Image(np.full(shape, value, np.int16), np.eye(4)), str(path))


@pytest.fixture
def world(tmp_path):
    """Three readable 3D studies, one 2D image (refused), a store whose current model is a valid checkpoint."""
    studies = tmp_path / "studies"
    studies.mkdir()
    for i, image_id in enumerate(GOOD):
        _nifti(studies / f"{image_id}.nii.gz", (40, 40, 3), i)
    _nifti(studies / "flat.nii.gz", (64, 64))
    (tmp_path / "ship").mkdir()
    save_checkpoint(build_network(), str(tmp_path / "ship" / "scar.pt"))
    store = ModelStore(str(tmp_path / "models"), str(tmp_path / "ship" / "scar.pt"))
    started = []
    pool = StudyPool()
    background = BackgroundScoring(
        store, pool, str(tmp_path / "models" / "uncertainty"), start=lambda: started.append(1) or {}, busy=lambda: False
    )
    reservations = Reservations(15, clock=Clock())
    return {
        "tmp": tmp_path,
        "datastore": FakeDatastore(studies, [*GOOD, "flat"]),
        "store": store,
        "pool": pool,
        "background": background,
        "reservations": reservations,
        "started": started,
        "strategies": {
            "scar_uncertainty": ScarUncertaintyStrategy(pool, reservations, background),
            "random": RandomStrategy(pool, reservations, rng=random.Random(0)),
            "first": FirstStrategy(pool, reservations),
        },
    }


def _write_scores(world, scores: dict[str, float]):
    model = world["store"].current()
    cache = ScoreCache(world["background"].cache_dir, model)
    studies, _ = world["pool"].unlabelled(world["datastore"])
    for study in studies:
        if study.id in scores:
            cache.put(study, score=scores[study.id])
    cache.save()


# Reservations


def test_two_clients_get_different_studies_and_one_gets_its_own_back():
    r = Reservations(15, clock=Clock())
    assert r.claim("alice", ["a", "b", "c"]) == ("a", 1000.0 + 15 * 60)
    assert r.claim("bob", ["a", "b", "c"])[0] == "b"
    assert r.claim("alice", ["a", "b", "c"])[0] == "a"  # her own, not given away
    assert r.holder("a") == "alice" and r.holder("b") == "bob" and r.holder("c") is None


def test_a_client_holds_one_study_and_asking_again_moves_it():
    r = Reservations(15, clock=Clock())
    r.claim("alice", ["a"])
    r.claim("alice", ["b"])
    assert r.holder("a") is None and r.holder("b") == "alice"
    assert r.claim("bob", ["a", "b"])[0] == "a"


def test_expiry_frees_a_study():
    clock = Clock()
    r = Reservations(15, clock=clock)
    r.claim("alice", ["a"])
    clock.now += 15 * 60 - 1
    assert r.claim("bob", ["a"]) is None  # still held: every study is someone else's
    clock.now += 1
    assert r.claim("bob", ["a"])[0] == "a"


def test_zero_minutes_turns_reservations_off():
    r = Reservations(0, clock=Clock())
    assert r.claim("alice", ["a", "b"])[0] == "a" and r.claim("bob", ["a", "b"])[0] == "a"


@pytest.mark.parametrize("minutes", [-1, float("inf"), float("nan")])
def test_bad_reservation_minutes(minutes):
    with pytest.raises(ValueError, match="reservation minutes"):
        Reservations(minutes)


def test_requests_without_client_id_have_no_client():
    assert client_key({"client_id": "alice"}) == "alice"
    assert {client_key({}), client_key({"client_id": None}), client_key({"client_id": " "})} == {None}


@pytest.mark.parametrize("value, ok", [("0", 0.0), ("2.5", 2.5), ("-1", None), ("soon", None), ("inf", None)])
def test_reserve_minutes_flag(value, ok):
    if ok is None:
        with pytest.raises(ValueError, match=rf"conf reserve_minutes='{value}' is not valid; allowed"):
            parse_settings({"reserve_minutes": value, "model_dir": "/elsewhere"}, "/app")
    else:
        assert parse_settings({"reserve_minutes": value, "model_dir": "/elsewhere"}, "/app").reserve_minutes == ok
    assert parse_settings({"model_dir": "/elsewhere"}, "/app").reserve_minutes == 15.0


# Strategies


@pytest.mark.parametrize("name", ["scar_uncertainty", "random", "first"])
def test_annotators_asking_in_turn_get_different_studies(world, name):
    strategy, ds = world["strategies"][name], world["datastore"]
    handed = [strategy({"client_id": f"c{i}"}, ds)["id"] for i in range(3)]
    assert sorted(handed) == GOOD
    assert strategy({"client_id": "c9"}, ds) is None  # everything held by someone else
    assert strategy({}, ds) is None  # nor to an anonymous ask


def test_anonymous_asks_reserve_nothing(world):
    """Otherwise calls without a client id (a script, curl) would lock every study away from annotators."""
    first, ds = world["strategies"]["first"], world["datastore"]
    replies = [first({}, ds) for _ in range(3)]
    assert [r["id"] for r in replies] == [GOOD[0]] * 3 and not any("reserved_until" in r for r in replies)
    assert first({"client_id": "alice"}, ds)["id"] == GOOD[0]  # still free for an annotator
    assert first({}, ds)["id"] == GOOD[1]  # and then held by her


def test_same_client_gets_its_reserved_study_back(world):
    strategy, ds = world["strategies"]["scar_uncertainty"], world["datastore"]
    _write_scores(world, {"s1": 0.1, "s2": 0.3, "s3": 0.2})
    assert strategy({"client_id": "alice"}, ds)["id"] == "s2"
    assert strategy({"client_id": "bob"}, ds)["id"] == "s3"
    assert strategy({"client_id": "alice"}, ds)["id"] == "s2"


def test_reservations_are_shared_between_strategies(world):
    ds = world["datastore"]
    assert world["strategies"]["first"]({"client_id": "alice"}, ds)["id"] == "s1"
    assert world["strategies"]["scar_uncertainty"]({"client_id": "bob"}, ds)["id"] == "s2"


def test_fallback_while_unscored_answers_in_id_order_and_starts_scoring(world):
    strategy, ds = world["strategies"]["scar_uncertainty"], world["datastore"]
    reply = strategy({"client_id": "alice"}, ds)
    assert reply["id"] == "s1" and "score" not in reply
    assert (reply["scored"], reply["unscored"], reply["model_version"]) == (0, 3, "default")
    assert "3 of 3 studies not yet scored by model default" in reply["fallback"]
    assert reply["scoring"] == "started" and world["started"] == [1]
    again = strategy({"client_id": "alice"}, ds)
    assert world["started"] == [1] and again["scoring"].startswith("not started: the last run")


def test_partial_scores_rank_the_scored_first(world):
    strategy, ds = world["strategies"]["scar_uncertainty"], world["datastore"]
    _write_scores(world, {"s3": 0.5})
    reply = strategy({"client_id": "alice"}, ds)
    assert reply["id"] == "s3" and reply["score"] == 0.5
    assert (reply["scored"], reply["unscored"]) == (1, 2) and "best-scored first" in reply["fallback"]
    assert strategy({"client_id": "bob"}, ds)["id"] == "s1"


def test_full_scores_rank_without_fallback_and_start_nothing(world):
    strategy, ds = world["strategies"]["scar_uncertainty"], world["datastore"]
    _write_scores(world, {"s1": 0.1, "s2": 0.3, "s3": 0.2})
    reply = strategy({"client_id": "alice"}, ds)
    assert "fallback" not in reply and reply["id"] == "s2" and reply["score"] == 0.3
    assert reply["scores"] == {"s1": 0.1, "s2": 0.3, "s3": 0.2} and (reply["scored"], reply["unscored"]) == (3, 0)
    assert reply["scoring"] == "idle" and world["started"] == []


def test_a_study_that_failed_scoring_comes_last_and_is_not_waited_for(world):
    strategy, ds = world["strategies"]["scar_uncertainty"], world["datastore"]
    _write_scores(world, {"s2": 0.1, "s3": 0.2})
    cache = ScoreCache(world["background"].cache_dir, world["store"].current())
    s1 = next(s for s in world["pool"].unlabelled(ds)[0] if s.id == "s1")
    cache.put(s1, error="no heart found")
    cache.save()
    replies = [strategy({"client_id": c}, ds) for c in ("alice", "bob", "carol")]
    assert [r["id"] for r in replies] == ["s3", "s2", "s1"]
    assert "fallback" not in replies[0] and replies[0]["failed"] == {"s1": "no heart found"}
    assert (replies[0]["scored"], replies[0]["unscored"]) == (2, 0) and world["started"] == []


def test_no_usable_model_falls_back_and_never_starts_scoring(world):
    ship = world["tmp"] / "ship" / "scar.pt"
    _write_scores(world, {"s1": 0.1, "s2": 0.3, "s3": 0.2})
    ship.write_bytes(b"not a checkpoint")
    reply = world["strategies"]["scar_uncertainty"]({"client_id": "alice"}, world["datastore"])
    assert reply["fallback"].startswith("no usable model") and str(ship) in reply["fallback"]
    assert reply["id"] == "s1" and reply["scored"] == 0 and world["started"] == []


@pytest.mark.parametrize("name", ["scar_uncertainty", "random", "first"])
def test_refused_studies_are_never_handed_out(world, name):
    strategy, ds = world["strategies"][name], world["datastore"]
    _write_scores(world, {"s1": 0.1})
    ds.ids = ["flat", *GOOD]  # first by id, and would be random's pick often enough
    handed = [strategy({"client_id": f"c{i}"}, ds) for i in range(4)]
    assert sorted(r["id"] for r in handed[:3]) == GOOD and handed[3] is None
    assert "3D short-axis stack" in handed[0]["refused"]["flat"]


def test_refusal_is_checked_once_per_file_version(world):
    calls = []
    pool = StudyPool(check=lambda path: calls.append(path))
    ds = world["datastore"]
    pool.unlabelled(ds)
    pool.unlabelled(ds)
    assert len(calls) == 4
    path = ds.get_image_uri("s1")
    _nifti(path, (40, 40, 4))
    os.utime(path, ns=(1, 1))  # a replaced study, whatever the file system's time resolution
    pool.unlabelled(ds)
    assert calls[4:] == [path]


@pytest.mark.parametrize("name", ["scar_uncertainty", "random", "first"])
def test_deleted_studies_are_never_handed_out(world, name):
    strategy, ds = world["strategies"][name], world["datastore"]
    _write_scores(world, {"s1": 0.9, "s2": 0.1, "s3": 0.2})
    ds.ids.remove("s1")  # removed from the index
    os.remove(ds.get_image_uri("s2"))  # gone on disk, index not yet reloaded
    replies = [strategy({"client_id": f"c{i}"}, ds) for i in range(3)]
    assert replies[0]["id"] == "s3" and replies[1] is None and replies[2] is None
    assert set(replies[0].get("refused", {})) == {"flat"}  # a deleted study is gone, not "refused"


# Score cache


def test_scores_belong_to_one_model_version(world):
    store, ds, folder = world["store"], world["datastore"], world["background"].cache_dir
    _write_scores(world, {"s1": 0.1, "s2": 0.3, "s3": 0.2})
    studies, _ = world["pool"].unlabelled(ds)
    assert [ScoreCache(folder, store.current()).score(s) for s in studies] == [0.1, 0.3, 0.2]
    store.publish(build_network(), {}, {})
    assert store.current().version == "v1"
    assert ScoreCache(folder, store.current()).unscored(studies) == studies  # the new model's scores are missing
    reply = world["strategies"]["scar_uncertainty"]({"client_id": "alice"}, ds)
    assert reply["model_version"] == "v1" and reply["scored"] == 0 and "fallback" in reply
    store.rollback("default")
    assert ScoreCache(folder, store.current()).score(studies[1]) == 0.3  # a rollback finds its scores again


def test_a_replaced_study_or_checkpoint_makes_its_score_stale(world):
    store, ds, folder = world["store"], world["datastore"], world["background"].cache_dir
    _write_scores(world, {"s1": 0.1, "s2": 0.3})
    path = ds.get_image_uri("s1")
    _nifti(path, (40, 40, 5))
    os.utime(path, ns=(1, 1))
    studies, _ = world["pool"].unlabelled(ds)
    cache = ScoreCache(folder, store.current())
    assert [cache.score(s) for s in studies] == [None, 0.3, None]
    save_checkpoint(build_network(), store.current().path)
    os.utime(store.current().path, ns=(2, 2))
    assert ScoreCache(folder, store.current()).score(studies[1]) is None


# Scoring method (the background task's body)


class FakeScorer(MyocardialUncertainty):
    """Loads the real current checkpoint (so an unusable one fails as in the server) but scores by table."""

    def __init__(self, store, table):
        super().__init__(store, samples=2)
        self.table = table

    def score(self, network, image_path):
        value = self.table[os.path.basename(image_path).split(".")[0]]
        if isinstance(value, Exception):
            raise value
        return value


def test_scoring_writes_after_each_study_so_progress_survives(world):
    scorer = FakeScorer(world["store"], {"s1": 0.4, "s2": RuntimeError("killed"), "s3": 0.2})
    scoring = ScarUncertaintyScoring(scorer, world["pool"], world["background"].cache_dir)
    with pytest.raises(RuntimeError, match="killed"):
        scoring({}, world["datastore"])
    saved = json.loads((world["tmp"] / "models" / "uncertainty" / "default.json").read_text())
    assert {k: v["score"] for k, v in saved["scores"].items()} == {"s1": 0.4}
    scorer.table["s2"] = 0.3
    result = scoring({}, world["datastore"])
    assert result["scored"] == {"s2": 0.3, "s3": 0.2} and result["already_scored"] == 1
    assert "flat" in result["refused"]


def test_scoring_refuses_to_run_without_a_usable_model(world):
    ship = world["tmp"] / "ship" / "scar.pt"
    ship.write_bytes(b"truncated")
    scoring = ScarUncertaintyScoring(FakeScorer(world["store"], {}), world["pool"], world["background"].cache_dir)
    with pytest.raises(CheckpointError, match=rf"{ship}: no usable model to score with: unreadable"):
        scoring({}, world["datastore"])
    assert not (world["tmp"] / "models" / "uncertainty").exists()


# Background trigger


def test_background_scoring_starts_once_and_retries_only_after_a_pause_or_a_change(world):
    started, running = [], [False]
    clock = Clock()
    background = BackgroundScoring(
        world["store"],
        world["pool"],
        world["background"].cache_dir,
        start=lambda: started.append(1) or {},
        busy=lambda: running[0],
        clock=clock,
    )
    ds = world["datastore"]
    assert background.check(ds).scoring == "started"
    running[0] = True
    assert background.check(ds).scoring == "running" and len(started) == 1
    running[0] = False  # finished without scoring anything (failed)
    assert background.check(ds).scoring.startswith("not started") and len(started) == 1
    clock.now += RETRY_AFTER_S
    assert background.check(ds).scoring == "started" and len(started) == 2
    _nifti(ds.folder / "s4.nii.gz", (40, 40, 3))
    ds.ids.append("s4")  # a study added: scored at once, no pause
    assert background.check(ds).scoring == "started" and len(started) == 3
    _write_scores(world, {"s1": 0.1, "s2": 0.3, "s3": 0.2, "s4": 0.0})
    assert background.check(ds).scoring == "idle" and len(started) == 3


def test_periodic_check_never_raises(world):
    def broken():
        raise OSError("studies folder unmounted")

    world["background"].periodic_check(broken)
    assert world["started"] == []
