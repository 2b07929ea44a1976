"""The annotate-retrain loop through a real server: correct, save, train, publish, infer, re-rank."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from monailabel.client import MONAILabelClient

from lib.constants import MVO, SCAR
from lib.model import build_network, load_checkpoint, save_checkpoint
from lib.phantoms import make_phantom
from tests.conftest import DEFAULT_MODEL

from .conftest import start_server

UNLABELED = {"lge_010", "lge_011", "lge_012", "lge_013", "lge_dicom_014"}


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _poor_model(path) -> None:
    """The default segmenter with Gaussian noise of one SD added to each weight tensor: a published
    model that is poor on this data (validation score about 0.1) but whose features fine-tuning can
    recover within two epochs."""
    torch.manual_seed(0)
    network = build_network()
    load_checkpoint(network, str(DEFAULT_MODEL))
    with torch.no_grad():
        for weight in network.segmenter.parameters():
            if weight.numel() > 1:
                weight.add_(weight.std() * torch.randn_like(weight))
    save_checkpoint(network, str(path))


@pytest.fixture(scope="module")
def loop_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    _poor_model(tmp / "poor.pt")
    s = start_server(tmp, tmp / "poor.pt")
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


def test_correct_retrain_publish_and_rerank(loop_server, tmp_path):
    server = loop_server
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))

    before_file, before = client.infer("scar", "lge_010", {})
    before_label = np.asarray(nib.load(before_file).dataobj).copy()
    ranked = client.next_sample("scar_uncertainty", {})
    assert ranked["id"] in UNLABELED
    model_sha, model_mtime = _sha(server.model_path), server.model_path.stat().st_mtime

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
    for strategy in ("scar_uncertainty", "first", "random"):
        assert client.next_sample(strategy, {})["id"] in UNLABELED - corrected

    task = server.train({"max_epochs": 2, "lr": 1e-3})
    assert task["status"] == "DONE", task
    stats = requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"]["scar"]
    assert stats["published"] is True and stats["candidate_score"] >= stats["baseline_score"]
    assert corrected <= set(stats["train_images"]) | set(stats["validation_images"])
    assert _sha(server.model_path) != model_sha

    after_file, after = client.infer("scar", "lge_010", {})  # no restart: the new checkpoint is picked up
    assert after["model"]["checkpoint_mtime"] != before["model"]["checkpoint_mtime"]
    assert not np.array_equal(np.asarray(nib.load(after_file).dataobj), before_label)

    rescored = client.next_sample("scar_uncertainty", {})
    assert rescored["id"] in UNLABELED - corrected
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": rescored["id"]}, timeout=10).json()
    assert info["scar_uncertainty"]["model_mtime"] == pytest.approx(server.model_path.stat().st_mtime, abs=1e-3)
    assert info["scar_uncertainty"]["model_mtime"] != model_mtime


def test_a_worse_run_never_replaces_the_published_model(loop_server, tmp_path):
    server = loop_server
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    model_sha = _sha(server.model_path)
    reference_file, _ = client.infer("scar", "lge_002", {})
    reference = np.asarray(nib.load(reference_file).dataobj).copy()

    task = server.train({"max_epochs": 1, "lr": 1.0})  # a learning rate that wrecks the network
    assert task["status"] == "DONE", task
    stats = requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"]["scar"]
    assert stats["published"] is False and stats["candidate_score"] < stats["baseline_score"]
    assert _sha(server.model_path) == model_sha
    again_file, _ = client.infer("scar", "lge_002", {})
    assert np.array_equal(np.asarray(nib.load(again_file).dataobj), reference)


def test_a_crashing_run_leaves_the_model_and_reports_error(loop_server):
    server = loop_server
    model_sha = _sha(server.model_path)
    task = server.train({"max_epochs": "many"})
    assert task["status"] == "ERROR"
    assert _sha(server.model_path) == model_sha
