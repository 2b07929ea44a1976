"""Versioned checkpoints with their recipe: publish, roll back, refuse what the code cannot use."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from lib.model import CheckpointError, build_network, checkpoint_recipe, load_checkpoint, read_checkpoint
from lib.model_store import DEFAULT_VERSION, ModelStore
from tests.conftest import APP_DIR, DEFAULT_MODEL


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def store(tmp_path):
    return ModelStore(str(tmp_path / "models"), str(DEFAULT_MODEL))


def _network(seed: int):
    torch.manual_seed(seed)
    return build_network()


def test_shipped_default_carries_its_recipe_and_provenance():
    checkpoint = read_checkpoint(str(DEFAULT_MODEL))
    assert checkpoint["recipe"] == checkpoint_recipe()
    assert checkpoint["recipe"]["labels"] == {"background": 0, "lv_cavity": 1, "myocardium": 2, "scar": 3, "mvo": 4}
    assert checkpoint["provenance"]["version"] == "default"
    assert checkpoint["provenance"]["mvo_validation"]["studies_with_mvo"] == 5


def test_without_a_published_version_the_shipped_default_is_current(store):
    assert store.current().version == DEFAULT_VERSION
    assert store.current().path == str(DEFAULT_MODEL)


def test_publish_numbers_versions_and_never_touches_the_shipped_file(store):
    shipped = _sha(DEFAULT_MODEL)
    v1 = store.publish(_network(1), {"base_version": "default"}, {"score": 0.5})
    v2 = store.publish(_network(2), {"base_version": "v1"}, {"score": 0.6})
    assert (v1.version, v2.version) == ("v1", "v2")
    assert store.current() == v2 and store.versions() == ["v1", "v2"]
    assert _sha(DEFAULT_MODEL) == shipped
    assert store.stats("v1")["score"] == 0.5
    provenance = load_checkpoint(build_network(), v2.path)
    assert provenance["version"] == "v2" and provenance["base_version"] == "v1"
    assert not [p for p in os.listdir(store.versions_dir) if p.startswith(".")]  # no staging folder left


def test_rollback_goes_to_the_previous_version_then_to_the_default(store):
    store.publish(_network(1), {}, {})
    store.publish(_network(2), {}, {})
    assert store.rollback().version == "v1"
    assert store.rollback().version == DEFAULT_VERSION
    with pytest.raises(ValueError, match="no earlier version"):
        store.rollback()
    assert store.rollback("v2").version == "v2"
    assert [h["version"] for h in store.describe()["history"]] == ["v1", "v2", "v1", "default", "v2"]


def test_rollback_refuses_a_missing_or_bad_version(store):
    with pytest.raises(CheckpointError, match="no such file"):
        store.rollback("v7")
    with pytest.raises(ValueError, match="not valid"):
        store.rollback("../x")


def test_rollback_command_line(tmp_path):
    store = ModelStore(str(tmp_path / "models"), str(DEFAULT_MODEL))
    store.publish(_network(1), {}, {})
    script = APP_DIR / "scripts" / "models.py"
    out = subprocess.run(
        [sys.executable, str(script), "--model-dir", str(tmp_path / "models"), "rollback"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "v1 -> default" in out.stdout and store.current().version == DEFAULT_VERSION
    listing = subprocess.run(
        [sys.executable, str(script), "--model-dir", str(tmp_path / "models"), "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(listing.stdout)["versions"] == ["default", "v1"]


def test_model_dir_is_never_the_shipped_models_folder():
    with pytest.raises(ValueError, match="shipped model's folder"):
        ModelStore(str(DEFAULT_MODEL.parent), str(DEFAULT_MODEL))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["recipe"]["spec"].update(spacing_mm=1.0), "recipe does not match this code.*spec"),
        (lambda c: c["recipe"]["labels"].update(scar=4, mvo=3), "recipe does not match this code.*labels"),
        (lambda c: c["recipe"]["architecture"]["segmenter"].update(channels=[8, 16]), "architecture"),
        (lambda c: c.pop("recipe"), "carries no recipe"),
    ],
)
def test_a_checkpoint_made_for_other_preprocessing_labels_or_network_is_refused(tmp_path, change, message):
    checkpoint = torch.load(str(DEFAULT_MODEL), map_location="cpu", weights_only=True)
    change(checkpoint)
    path = tmp_path / "other.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(build_network(), str(path))


def test_missing_and_unreadable_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(build_network(), str(tmp_path / "nope.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(build_network(), str(tmp_path / "bad.pt"))


def test_the_file_handed_to_model_endpoints_can_be_renamed_without_touching_the_checkpoint(store):
    shipped = _sha(DEFAULT_MODEL)
    served = store.served_copy(store.current())
    os.rename(served, served + ".deleted")  # what MONAI Label's DELETE /model/{model} does
    assert _sha(DEFAULT_MODEL) == shipped and store.current().path == str(DEFAULT_MODEL)
    assert _sha(served + ".deleted") == shipped
