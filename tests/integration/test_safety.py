"""A server that touches nothing outside its folders, refuses to answer without a model, checks train
requests on arrival and says when its figures should not be trusted."""

from __future__ import annotations

import json
import os
import shutil
import time

import nibabel as nib
import numpy as np
import pytest
import requests
import torch

from tests.conftest import DEFAULT_MODEL, REAL_DATA, copy_first_phase

from .conftest import start_server

OUTSIDE = "outside.nii.gz"


def _files(root) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def _plant_link(studies, model_dir):
    """Links that lead out of the studies folder: a study, a label and a not-yet-added study's name."""
    shutil.copy(studies / "lge_000.nii.gz", studies.parent / OUTSIDE)
    os.symlink(studies.parent / OUTSIDE, studies / "escape.nii.gz")
    shutil.copy(studies / "labels" / "final" / "lge_001.nii.gz", studies.parent / "outside_label.nii.gz")
    (studies / "labels" / "final" / "lge_001.nii.gz").unlink()
    os.symlink(studies.parent / "outside_label.nii.gz", studies / "labels" / "final" / "lge_001.nii.gz")
    os.symlink(studies.parent / "outside_new.nii.gz", studies / "newstudy.nii.gz")  # dangling until written


@pytest.fixture(scope="module")
def safe_server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("safety"), prepare=_plant_link)
    yield s
    s.stop()


LGE = "sample-data/lge_000.nii.gz"
LABEL = "sample-data/labels/final/lge_000.nii.gz"
LABEL1 = "sample-data/labels/final/lge_001.nii.gz"

# (method, path, query, multipart file field or None, form params or None, status, words in the reason)
TRAVERSALS = [
    ("PUT", "/datastore/image", {"image": "../../pwned"}, ("file", LGE), None, 422, "image id '../../pwned'"),
    ("PUT", "/datastore/image", {"image": "/tmp/pwned"}, ("file", LGE), None, 422, "is not allowed"),
    ("PUT", "/datastore/label", {"image": "lge_000", "tag": "../../../x"}, ("label", LABEL), None, 422, "label tag"),
    ("PUT", "/datastore/label", {"image": "../lge_000", "tag": "final"}, ("label", LABEL), None, 422, "image id"),
    ("DELETE", "/datastore/image", {"id": "../../pwned"}, None, None, 422, "image id"),
    ("DELETE", "/datastore/image", {"id": "no_such_study"}, None, None, 404, "unknown image id"),
    ("DELETE", "/datastore/label", {"id": "lge_000", "tag": "../final"}, None, None, 422, "label tag"),
    ("GET", "/datastore/image", {"image": "../../etc"}, None, None, 422, "image id"),
    ("GET", "/datastore/label", {"label": "lge_000", "tag": ".."}, None, None, 422, "label tag"),
    ("GET", "/datastore/image/info", {"image": "../x"}, None, None, 422, "image id"),
    ("GET", "/session/%2E%2E", {}, None, None, 422, "session id '..'"),
    ("DELETE", "/session/%2E%2E", {}, None, None, 422, "session id '..'"),
    ("POST", "/infer/scar", {"image": "/etc/passwd"}, None, None, 422, "image id '/etc/passwd'"),
    (
        "POST",
        "/infer/scar",
        {"image": "lge_000"},
        None,
        {"image": "/etc/hostname"},
        422,
        "params may not set ['image']",
    ),
    ("POST", "/infer/scar", {}, ("file", LGE), {"image": "/tmp/tmpab12cd34.nii.gz"}, 422, "may not set ['image']"),
    ("POST", "/infer/scar", {"image": "lge_000"}, None, {"session": {"image": "/etc"}}, 422, "may not set ['session']"),
    ("POST", "/infer/scar", {"image": "lge_000"}, None, {"result_extension": "/../../x"}, 422, "result_extension"),
    ("POST", "/infer/scar", {"session_id": "../x"}, None, None, 422, "session id"),
    ("POST", "/infer/scar", {}, None, None, 422, "give an image id"),
    ("POST", "/infer/scar", {}, None, {}, 422, "give an image id"),
    ("POST", "/infer/scar", {"image": "escape"}, None, None, 404, "unknown image id"),
    ("POST", "/infer/%2E%2E", {"image": "lge_000"}, None, None, 422, "model name '..'"),
    ("POST", "/train/%2E%2E", {}, None, None, 422, "model name '..'"),
    ("POST", "/activelearning/%2E%2E", {}, None, None, 422, "strategy name '..'"),
    ("POST", "/scoring/%2E%2E", {}, None, None, 422, "scoring method '..'"),
    ("POST", "/scoring/nope", {}, None, None, 404, "unknown scoring method"),
    ("GET", "/model/%2E%2E", {}, None, None, 422, "model name '..'"),
    ("PUT", "/model/scar", {}, ("file", LGE), None, 405, "not uploaded or deleted over HTTP"),
    ("DELETE", "/model/scar", {}, None, None, 405, "not uploaded or deleted over HTTP"),
    ("PUT", "/datastore/image", {"image": "lge_000"}, ("file", LGE), None, 409, "already exists"),
    ("GET", "/model/info/%2E%2E", {}, None, None, 422, "model name '..'"),
    ("POST", "/train/", {}, None, None, 404, "POST /train/scar"),
    ("POST", "/infer/wsi/scar", {"image": "lge_000"}, None, None, 404, "no whole-slide"),
    ("POST", "/infer/scar", {"image": "lge_010"}, None, {"save_label": True, "label_tag": "final"}, 422, "'original'"),
    ("POST", "/infer/scar", {"image": "apps"}, None, None, 404, "unknown image id 'apps'"),
    ("PUT", "/datastore/image", {"image": "newstudy"}, ("file", LGE), None, 422, "outside its folder"),
    ("PUT", "/datastore/label", {"image": "lge_001", "tag": "final"}, ("label", LABEL1), None, 422, "outside"),
    ("GET", "/datastore/dataset", {}, None, None, 404, "not offered"),
]


@pytest.mark.parametrize("method, path, query, upload, form, status, reason", TRAVERSALS)
def test_names_that_would_leave_their_folder_are_refused_and_nothing_changes(
    safe_server, method, path, query, upload, form, status, reason
):
    root = safe_server.root.parent  # the folder holding this server's folder: "../.." lands here
    before = _files(root)
    files = None
    if upload:
        field, source = upload
        files = {field: (os.path.basename(source), open(source, "rb").read())}
    data = {"params": json.dumps(form)} if form is not None else None
    if data is not None and files is None:
        files = {"params": (None, data.pop("params"))}
    r = requests.request(method, f"{safe_server.url}{path}", params=query, files=files, data=data, timeout=60)
    assert r.status_code == status and reason in r.json()["detail"], (r.status_code, r.text)
    after = _files(root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # Only the server's log, the datastore index and the uncertainty cache (background scoring) may
    # change; never a study, a label or a file outside.
    bookkeeping = ("server.log", "datastore_v2.json", ".lock")
    assert {k for k in changed if not k.endswith(bookkeeping) and "/model/uncertainty/" not in k} == set(), changed


def test_uploads_and_upload_sessions_are_the_server_paths_infer_accepts(safe_server, tmp_path):
    with open(LGE, "rb") as f:
        r = requests.post(
            f"{safe_server.url}/infer/scar",
            params={"output": "json"},
            files={"file": ("study.v2.nii.gz", f)},
            timeout=120,
        )
    assert r.status_code == 200 and r.json()["lv_myocardial_mass_g"] > 20, r.text
    with open(LGE, "rb") as f:
        session = requests.put(f"{safe_server.url}/session/", files={"files": ("lge.nii.gz", f)}, timeout=60).json()
    r = requests.post(
        f"{safe_server.url}/infer/scar", params={"session_id": session["session_id"], "output": "json"}, timeout=120
    )
    assert r.status_code == 200 and r.json()["lv_myocardial_mass_g"] > 20, r.text


def test_refused_uploads_do_not_stay_in_the_temp_folder(safe_server, tmp_path):
    """MONAI Label deletes an upload only after a successful answer; a refused study must not linger."""
    import tempfile

    def uploads() -> set:
        return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("tmp") and p.endswith(".nii.gz")}

    before = uploads()
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64), np.int16), np.eye(4)), str(flat))
    for method, path, field, query in [
        ("POST", "/infer/scar", "file", {}),
        ("PUT", "/datastore/image", "file", {"image": "flat_study"}),
        ("PUT", "/datastore/label", "label", {"image": "lge_000", "tag": "final"}),
    ]:
        with open(flat, "rb") as f:
            r = requests.request(method, f"{safe_server.url}{path}", params=query, files={field: ("x.nii.gz", f)})
        assert r.status_code == 422, r.text
    assert uploads() - before == set()


def test_a_study_linked_from_outside_the_studies_folder_is_not_listed(safe_server):
    listed = requests.get(f"{safe_server.url}/datastore/", params={"output": "all"}, timeout=10).json()["objects"]
    assert "lge_000" in listed and "escape" not in listed and "newstudy" not in listed
    assert "final" not in listed["lge_001"]["labels"]  # its label file is a link out of the folder
    assert (safe_server.studies.parent / OUTSIDE).exists()
    assert not (safe_server.studies.parent / "outside_new.nii.gz").exists()


def test_deleting_a_study_removes_it_and_its_labels(safe_server):
    r = requests.delete(f"{safe_server.url}/datastore/image", params={"id": "lge_013"}, timeout=30)
    assert r.status_code == 200, r.text
    assert not (safe_server.studies / "lge_013.nii.gz").exists()
    r = requests.post(f"{safe_server.url}/infer/scar", params={"image": "lge_013"}, timeout=30)
    assert r.status_code == 404


@pytest.mark.parametrize(
    "path, query, body, reason",
    [
        ("/train/scar", {}, {"bundle_path": "/tmp/evil"}, "unknown train option(s) ['bundle_path']"),
        ("/scoring/scar_uncertainty", {}, {"bundle_path": "/tmp/evil"}, "may not set ['bundle_path']"),
        ("/batch/infer/scar", {}, {"gpus": "0", "bundle_path": "/tmp/evil"}, "may not set ['bundle_path', 'gpus']"),
        ("/train/scar", {"run_sync": "true"}, {}, "run_sync and enqueue are refused"),
        ("/scoring/scar_uncertainty", {"run_sync": "true"}, {}, "run_sync and enqueue are refused"),
        ("/train/scar", {"enqueue": "true"}, {}, "run_sync and enqueue are refused"),
    ],
)
def test_background_runs_cannot_be_steered_by_the_caller(safe_server, path, query, body, reason):
    r = requests.post(f"{safe_server.url}{path}", params=query, json=body, timeout=30)
    assert r.status_code == 422 and reason in r.json()["detail"], r.text


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"lr": -1}, "lr=-1 is out of range"),
        ({"max_epochs": "five"}, "max_epochs='five' is not a number"),
        ({"max_epochs": 0}, "max_epochs=0 is out of range"),
        ({"max_epochs": 1e9}, "max_epochs=1000000000.0 is out of range; allowed: a whole number 1-500"),
        ({"max_epoch": 5}, "unknown train option(s) ['max_epoch']; known options"),
        ({"publish": "maybe"}, "publish='maybe' is not valid"),
    ],
)
def test_bad_train_requests_are_refused_on_arrival(safe_server, body, reason):
    r = requests.post(f"{safe_server.url}/train/scar", json=body, timeout=30)
    assert r.status_code == 422 and reason in r.json()["detail"], r.text
    tasks = requests.get(f"{safe_server.url}/train/", params={"all": True}, timeout=10)
    assert tasks.status_code == 404 or not tasks.json()  # no training process was started
    nan = requests.post(
        f"{safe_server.url}/train/scar", data='{"lr": NaN}', headers={"content-type": "application/json"}, timeout=30
    )
    assert nan.status_code == 422 and "lr=nan" in nan.json()["detail"]


def test_infer_json_warns_and_withholds_mvo_from_a_model_not_validated_for_it(safe_server):
    r = requests.post(f"{safe_server.url}/infer/scar", params={"image": "lge_002", "output": "json"}, timeout=120)
    result = r.json()
    assert [w["code"] for w in result["warnings"]] == ["mvo_not_validated"]
    assert result["mvo_mass_g"] is None and "not validated for MVO" in result["null_reasons"]["mvo_mass_g"]
    assert result["scar_mass_g"] > 0 and result["model"]["version"] == "default"


def test_fewer_than_three_slices_give_no_lv_mass(safe_server, tmp_path):
    image = nib.load(str(safe_server.studies / "lge_002.nii.gz"))
    middle = image.shape[2] // 2
    two = nib.Nifti1Image(np.asarray(image.dataobj)[:, :, middle : middle + 2], image.affine, image.header)
    nib.save(two, str(tmp_path / "two.nii.gz"))
    with open(tmp_path / "two.nii.gz", "rb") as f:
        r = requests.post(
            f"{safe_server.url}/infer/scar", params={"output": "json"}, files={"file": ("two.nii.gz", f)}, timeout=120
        )
    result = r.json()
    assert "too_few_slices" in [w["code"] for w in result["warnings"]], result["warnings"]
    assert result["lv_myocardial_mass_g"] is None and result["scar_percent_lv_mass"] is None


@pytest.mark.skipif(not (REAL_DATA / "sunnybrook").is_dir(), reason=f"real data folder {REAL_DATA} is absent")
def test_cine_ssfp_dicom_gets_no_scar_figures(safe_server):
    folder = REAL_DATA / "sunnybrook" / "dicoms" / "SCD0000101"
    copy_first_phase(folder, safe_server.studies / "cine_101.dicom")
    requests.get(f"{safe_server.url}/datastore/", timeout=10)  # let the datastore list the new study
    for _ in range(30):
        r = requests.post(f"{safe_server.url}/infer/scar", params={"image": "cine_101", "output": "json"}, timeout=120)
        if r.status_code != 404:
            break
        time.sleep(1)
    result = r.json()
    assert "not_inversion_recovery" in [w["code"] for w in result["warnings"]], result
    assert result["scar_mass_g"] is None and result["scar_percent_lv_mass"] is None


# ---- no model, no answer


def _unusable_model(kind: str):
    def prepare(studies, model_dir):
        version = model_dir / "versions" / "v1"
        version.mkdir(parents=True)
        (model_dir / "current.json").write_text(json.dumps({"version": "v1", "history": []}))
        if kind == "unreadable":
            (version / "scar.pt").write_bytes(b"truncated download")
        elif kind == "other recipe":
            checkpoint = torch.load(str(DEFAULT_MODEL), map_location="cpu", weights_only=True)
            checkpoint["recipe"]["spec"]["spacing_mm"] = 1.0
            torch.save(checkpoint, version / "scar.pt")

    return prepare


@pytest.mark.parametrize(
    "kind, reason",
    [("unreadable", "unreadable"), ("missing", "no such file"), ("other recipe", "recipe does not match")],
)
def test_no_usable_model_means_no_answer(tmp_path, kind, reason):
    server = start_server(tmp_path, prepare=_unusable_model(kind))
    try:
        info = requests.get(f"{server.url}/info/", timeout=10).json()
        assert info["models"]["scar"]["ready"] is False and reason in info["models"]["scar"]["not_ready_reason"]
        r = requests.post(f"{server.url}/infer/scar", params={"image": "lge_002"}, timeout=60)
        assert r.status_code == 503, r.text
        assert (
            reason in r.json()["detail"] and str(server.model_dir / "versions" / "v1" / "scar.pt") in r.json()["detail"]
        )
        r = requests.post(f"{server.url}/scoring/scar_uncertainty", timeout=60)
        assert r.status_code == 503 and reason in r.json()["detail"], r.text
        if kind == "missing":
            task = server.train({"max_epochs": 1, "publish": "never"})
            assert task["status"] == "DONE", task
            stats = requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"]["scar"]
            assert stats["started_from"] == "scratch (no checkpoint)" and stats["published"] is False
    finally:
        server.stop()
