"""The annotate-retrain loop through a real server: correct, save, train, publish a version, infer, roll back."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from monailabel.client import MONAILabelClient

from lib.constants import MVO, SCAR
from lib.losses import DEFAULT_LOSS
from lib.model import build_network, load_checkpoint, read_checkpoint
from lib.phantoms import make_phantom
from tests.conftest import APP_DIR, DEFAULT_MODEL

from .conftest import start_server

UNLABELED = {"lge_010", "lge_011", "lge_012", "lge_013", "lge_dicom_014"}


def _poor_model():
    """The default segmenter with Gaussian noise of one SD added to each weight tensor: a current model
    that is poor on this data (validation score about 0.1) but whose features fine-tuning can recover
    within two epochs."""
    torch.manual_seed(0)
    network = build_network()
    load_checkpoint(network, str(DEFAULT_MODEL))
    with torch.no_grad():
        for weight in network.segmenter.parameters():
            if weight.numel() > 1:
                weight.add_(weight.std() * torch.randn_like(weight))
    return network


@pytest.fixture(scope="module")
def loop_server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("loop"), network=_poor_model())
    yield s
    s.stop()


def _truth(server, image_id: str, seed: int, scar: bool, tmp_path) -> str:
    """The phantom's exact label, written on the study's grid: what an annotator's correction converges to.

    Seeds and the scar flag are those of scripts/make_sample_data.py for these studies.
    """
    image = nib.load(str(server.studies / f"{image_id}.nii.gz"))
    path = tmp_path / f"{image_id}_corrected.nii.gz"
    nib.save(nib.Nifti1Image(make_phantom(seed, scar=scar).label, image.affine), str(path))
    return str(path)


def _stats(server) -> dict:
    return requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"]["scar"]


def test_correct_retrain_publish_a_version_with_progress(loop_server, tmp_path):
    server = loop_server
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="loop")
    assert server.current_model()["version"] == "v1"

    before_file, before = client.infer("scar", "lge_010", {})
    assert before["model"]["version"] == "v1"
    before_label = np.asarray(nib.load(before_file).dataobj).copy()

    # Corrections: one infarct study and one scar-free study (all-zero scar is a valid label).
    client.save_label("lge_010", _truth(server, "lge_010", 10, True, tmp_path), tag="final")
    scar_free = _truth(server, "lge_011", 11, False, tmp_path)
    assert not np.isin(np.asarray(nib.load(scar_free).dataobj), (SCAR, MVO)).any()
    client.save_label("lge_011", scar_free, tag="final")
    saved = nib.load(str(server.studies / "labels" / "final" / "lge_011.nii.gz"))
    assert np.array_equal(saved.affine, nib.load(str(server.studies / "lge_011.nii.gz")).affine)
    # A DICOM series study takes a NIfTI label on its grid (the phantom's own affine).
    dicom_truth = tmp_path / "lge_dicom_014_corrected.nii.gz"
    dicom_phantom = make_phantom(14, scar=True)
    nib.save(nib.Nifti1Image(dicom_phantom.label, dicom_phantom.affine), str(dicom_truth))
    client.save_label("lge_dicom_014", str(dicom_truth), tag="final")
    corrected = {"lge_010", "lge_011", "lge_dicom_014"}
    for strategy in ("first", "random"):
        assert client.next_sample(strategy, {})["id"] in UNLABELED - corrected

    info = requests.get(f"{server.url}/info/", timeout=10).json()
    validation = set(info["validation"]["studies"])
    assert validation == {"lge_002", "lge_005", "lge_009", "lge_011"}  # by hash, fixed for good

    progress: list[dict] = []
    task = server.train({"max_epochs": 2, "lr": 1e-3}, progress=progress)
    assert task["status"] == "DONE", task
    stats = _stats(server)
    assert stats["published"] is True and stats["judged"] is True, stats["reason"]
    assert stats["candidate"]["score"] >= stats["current"]["score"]
    assert set(stats["validation_images"]) == validation and not validation & set(stats["train_images"])
    assert corrected - validation <= set(stats["train_images"])
    assert stats["version"] == "v2" and server.current_model()["version"] == "v2"
    assert (stats["epoch"], stats["total_epochs"], stats["total_time"] > 0) == (2, 2, True)
    assert 0 < stats["best_metric"] <= 1
    # Trained with the loss the noisy-label benchmark supports (docs/benchmarks/noisy-labels.md).
    provenance = read_checkpoint(str(server.model_dir / "versions" / "v2" / "scar.pt"))["provenance"]
    assert provenance["loss"].startswith(f"{DEFAULT_LOSS}:")

    # While it ran, /info/ showed what MONAI Label's Slicer plugin reads: epoch k of n, no total_time yet.
    running = [p for p in progress if p.get("status") == "running"]
    assert running and all(p["total_time"] is None and p["total_epochs"] == 2 for p in running)
    assert {p["epoch"] for p in running} <= {0, 1, 2}
    details = requests.get(f"{server.url}/train/", timeout=10).json()["details"]
    assert any(line.startswith("epoch 1 of 2: segmenter loss") and "s left" in line for line in details), details
    assert not [line for line in details if "warning" in line.lower()], details

    after_file, after = client.infer("scar", "lge_010", {})  # no restart: the new version is used
    assert after["model"]["version"] == "v2"
    assert not np.array_equal(np.asarray(nib.load(after_file).dataobj), before_label)

    # Active learning re-ranks with the new version: at once with a fallback, then from background scores.
    first = client.next_sample("scar_uncertainty", {})
    assert first["model_version"] == "v2" and first["id"] in UNLABELED - corrected
    deadline = time.time() + 240
    while "fallback" in first and time.time() < deadline:
        time.sleep(3)
        first = client.next_sample("scar_uncertainty", {})
    assert "fallback" not in first, first
    assert set(first["scores"]) == UNLABELED - corrected
    saved = json.loads((server.model_dir / "uncertainty" / "v2.json").read_text())
    assert set(saved["scores"]) == UNLABELED - corrected


def test_a_worse_run_never_replaces_the_current_model(loop_server, tmp_path):
    server = loop_server
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    current = server.current_model()
    reference_file, _ = client.infer("scar", "lge_002", {})
    reference = np.asarray(nib.load(reference_file).dataobj).copy()

    # Started as the Slicer plugin starts it: MONAILabelClient with a client id (sent with the options).
    slicer = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="slicer-1")
    started = slicer.train_start("scar", {"max_epochs": 1, "lr": 1.0})  # a learning rate that wrecks the network
    progress: list[dict] = []
    task = server.wait_for_training(started["id"], progress)
    assert task["status"] == "DONE", task
    # The last run's stats (finished, with a total_time) never show while this one runs. This run's own
    # final record may: it is written just before its process exits, while the task still reads RUNNING.
    stats = _stats(server)
    assert progress
    for p in progress:
        if p["status"] == "finished":
            assert p.get("started") == stats["started"], p  # this run's, not the previous run's
        else:
            assert p["status"] in ("starting", "running") and p["total_time"] is None, p
    assert stats["published"] is False and stats["candidate"]["score"] < stats["current"]["score"], stats["reason"]
    assert server.current_model() == current
    again_file, again = client.infer("scar", "lge_002", {})
    assert again["model"]["version"] == current["version"]
    assert np.array_equal(np.asarray(nib.load(again_file).dataobj), reference)


def test_rollback_is_one_command_and_the_next_infer_uses_it(loop_server, tmp_path):
    server = loop_server
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    script = [sys.executable, str(APP_DIR / "scripts" / "models.py"), "--model-dir", str(server.model_dir)]
    out = subprocess.run([*script, "rollback"], capture_output=True, text=True, check=True)
    assert "v2 -> v1" in out.stdout
    assert client.infer("scar", "lge_002", {})[1]["model"]["version"] == "v1"
    subprocess.run([*script, "rollback", "--to", "v2"], capture_output=True, text=True, check=True)
    assert client.infer("scar", "lge_002", {})[1]["model"]["version"] == "v2"
    info = requests.get(f"{server.url}/info/", timeout=10).json()["model_versions"]
    assert info["current"] == "v2" and info["versions"] == ["default", "v1", "v2"]


def test_a_crashing_run_leaves_the_model_and_reports_error(loop_server):
    server = loop_server
    current = server.current_model()
    label = server.studies / "labels" / "final" / "lge_000.nii.gz"
    good = label.read_bytes()
    label.write_bytes(b"\x1f\x8b not a label any more")  # corrupted on disk behind the server's back
    try:
        task = server.train({"max_epochs": 1})
    finally:
        label.write_bytes(good)
    assert task["status"] == "ERROR"
    assert server.current_model() == current
    assert _stats(server)["status"] == "failed"
