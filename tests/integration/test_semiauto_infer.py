"""The semi-automatic scar tasks (scar_nsd, scar_fwhm, scar_ewa) through a real server."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from lib.constants import FOREGROUND_LABELS, LABELS, LV_WALL, MYOCARDIUM_DENSITY_G_PER_ML, TOTAL_SCAR
from lib.label_io import read_geometry
from lib.semiauto import ewa_scar, fwhm_scar, nsd_scar
from tests.integration.conftest import start_server

RULES = {"scar_nsd": nsd_scar, "scar_fwhm": fwhm_scar, "scar_ewa": ewa_scar}
STUDY = "lge_002"  # a sample study with scar, MVO and a final label
UNLABELLED = "lge_012"
DICOM = "lge_dicom_014"
NO_SPACING = "lge_nospacing"  # lge_002 and its final label, their headers stripped of the voxel spacing


def _prepare(studies, model_dir):
    """What an administrator could drop into the studies folder: a label off its image's grid, one without a
    wall, and a study (with its final label) whose header records no voxel spacing."""
    final = studies / "labels" / "final"
    (studies / "labels" / "offgrid").mkdir()
    shutil.copy(final / "lge_000.nii.gz", studies / "labels" / "offgrid" / "lge_001.nii.gz")
    source = nib.load(str(final / "lge_000.nii.gz"))
    values = np.asarray(source.dataobj)
    no_wall = np.where(np.isin(values, LV_WALL), 0, values).astype(np.uint8)
    (studies / "labels" / "nowall").mkdir()
    out = studies / "labels" / "nowall" / "lge_000.nii.gz"
    nib.save(nib.Nifti1Image(no_wall, source.affine, source.header), str(out))
    for path, out in [
        (studies / f"{STUDY}.nii.gz", studies / f"{NO_SPACING}.nii.gz"),
        (final / f"{STUDY}.nii.gz", final / f"{NO_SPACING}.nii.gz"),
    ]:
        stripped = nib.Nifti1Image(np.asarray(nib.load(str(path)).dataobj), None)  # pixdim 1, no units
        stripped.header.set_xyzt_units(xyz=0)
        nib.save(stripped, str(out))


@pytest.fixture(scope="module")
def semi_server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("semiauto"), prepare=_prepare)
    yield s
    s.stop()


def _post(server, model: str, image: str, params: dict | None = None) -> requests.Response:
    return requests.post(
        f"{server.url}/infer/{model}",
        params={"image": image, "output": "json"},
        data={"params": json.dumps(params or {})},
        timeout=120,
    )


def _voxels(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_info_lists_the_rules_with_the_scar_labels(semi_server):
    models = requests.get(f"{semi_server.url}/info/", timeout=10).json()["models"]
    for model, rule in [("scar_nsd", "n-SD"), ("scar_fwhm", "FWHM"), ("scar_ewa", "EWA")]:
        assert models[model]["labels"] == models["scar"]["labels"] == dict(FOREGROUND_LABELS)
        assert models[model]["label_values"] == models["scar"]["label_values"] == dict(LABELS)
        assert rule in models[model]["description"] and models[model]["config"]["wall_from"] == "final"


@pytest.mark.parametrize("model", sorted(RULES))
def test_rule_redraws_scar_inside_the_final_wall_only(semi_server, tmp_path, model):
    label_file, result = MONAILabelClient(semi_server.url, tmpdir=str(tmp_path)).infer(model, STUDY, {})
    image = nib.load(str(semi_server.studies / f"{STUDY}.nii.gz"))
    out_image = nib.load(label_file)
    assert out_image.shape == image.shape and np.array_equal(out_image.affine, image.affine)
    assert read_geometry(label_file).matches(read_geometry(str(semi_server.studies / f"{STUDY}.nii.gz")))
    out = np.asarray(out_image.dataobj)
    source = _voxels(semi_server.studies / "labels" / "final" / f"{STUDY}.nii.gz")
    wall = np.isin(source, LV_WALL)
    assert np.array_equal(out[~wall], source[~wall]) and np.isin(out[wall], LV_WALL).all()
    assert np.isin(out, TOTAL_SCAR).any()
    # Exactly the rule on the study's voxels, read here independently (nibabel, file order = (H, W, D)).
    spacing = [float(s) for s in image.header.get_zooms()[:3]]
    expected = RULES[model](np.asarray(image.dataobj, np.float32), source, spacing_mm=spacing)
    assert np.array_equal(out, expected.label)
    assert result["semi_automatic"]["method"] == json.loads(json.dumps(expected.method))
    assert result["semi_automatic"]["method"]["remote"]["definition"] == "darkest wall sector of each slice"
    assert result["semi_automatic"]["wall_source"] == {"tag": "final"}
    # The scar task's figures, consistent with the label returned.
    voxel_ml = float(np.prod(spacing)) / 1000
    assert result["scar_volume_ml"] == pytest.approx(np.isin(out, TOTAL_SCAR).sum() * voxel_ml, abs=0.01)
    assert result["lv_myocardial_mass_g"] == pytest.approx(
        wall.sum() * voxel_ml * MYOCARDIUM_DENSITY_G_PER_ML, abs=0.01
    )
    pixel_mm2 = spacing[0] * spacing[1]
    assert [s["scar_area_mm2"] for s in result["per_slice"]] == pytest.approx(
        [np.isin(out[..., k], TOTAL_SCAR).sum() * pixel_mm2 for k in range(out.shape[2])], abs=0.1
    )
    assert "mvo_not_validated" in [w["code"] for w in result["warnings"]] and result["mvo_mass_g"] is None


def test_a_header_without_spacing_gives_shares_but_no_mass(semi_server):
    spaced, bare = (_post(semi_server, "scar_nsd", image) for image in (STUDY, NO_SPACING))
    assert spaced.status_code == bare.status_code == 200, (spaced.text, bare.text)
    spaced, bare = spaced.json(), bare.json()
    assert "no_spacing" in [w["code"] for w in bare["warnings"]]
    assert "no_spacing" not in [w["code"] for w in spaced["warnings"]]
    # Shares of the LV are counted in voxels and stay (near the spaced study's: the rules' minimum areas, in
    # mm^2, read ITK's 1 mm default); masses would take that default as a measurement, so they go.
    assert bare["scar_percent_lv_mass"] == pytest.approx(spaced["scar_percent_lv_mass"], rel=0.1)
    for figure in ("scar_mass_g", "scar_volume_ml", "lv_myocardial_mass_g"):
        assert spaced[figure] > 0 and bare[figure] is None, figure
    assert all(s["scar_area_mm2"] is None for s in bare["per_slice"])


def test_higher_n_sd_marks_less_or_equal_scar(semi_server):
    volumes = []
    for n_sd in (2, 3.5, 5, 8):
        r = _post(semi_server, "scar_nsd", STUDY, {"n_sd": n_sd})
        assert r.status_code == 200, r.text
        assert r.json()["semi_automatic"]["method"]["n_sd"] == n_sd
        volumes.append(r.json()["scar_volume_ml"])
    assert volumes == sorted(volumes, reverse=True) and volumes[0] > volumes[-1], volumes


def test_a_given_remote_sector_is_used_and_stated(semi_server, tmp_path):
    label_file, result = MONAILabelClient(semi_server.url, tmpdir=str(tmp_path)).infer(
        "scar_fwhm", STUDY, {"remote_start_deg": 90, "remote_width_deg": 90}
    )
    image = nib.load(str(semi_server.studies / f"{STUDY}.nii.gz"))
    source = _voxels(semi_server.studies / "labels" / "final" / f"{STUDY}.nii.gz")
    expected = fwhm_scar(
        np.asarray(image.dataobj, np.float32), source, spacing_mm=image.header.get_zooms()[:3], remote=(90, 90)
    )
    assert np.array_equal(_voxels(label_file), expected.label)
    remote = result["semi_automatic"]["method"]["remote"]
    assert remote["definition"] == "the given wall sector" and remote["width_deg"] == 90
    assert {s for s in remote["start_deg"] if s is not None} == {90}


def test_wall_from_the_scar_model_or_a_tag_on_a_dicom_series(semi_server, tmp_path):
    client = MONAILabelClient(semi_server.url, tmpdir=str(tmp_path))
    series = str(semi_server.studies / f"{DICOM}.dicom")
    scar_file, _ = client.infer("scar", DICOM, {"save_label": True})  # also stored as the 'original' label
    predicted = _voxels(scar_file)
    semi_file, result = client.infer("scar_ewa", DICOM, {"wall_from": "scar"})
    assert read_geometry(semi_file).matches(read_geometry(series))
    out = _voxels(semi_file)
    wall = np.isin(predicted, LV_WALL)
    assert np.array_equal(out[~wall], predicted[~wall]) and np.isin(out[wall], LV_WALL).all()
    assert result["semi_automatic"]["wall_source"] == {"model": "scar", "version": "default"}
    tagged_file, tagged = client.infer("scar_ewa", DICOM, {"wall_from": "original"})
    assert tagged["semi_automatic"]["wall_source"] == {"tag": "original"}
    assert read_geometry(tagged_file).matches(read_geometry(series)) and np.array_equal(_voxels(tagged_file), out)


def test_an_upload_takes_its_wall_from_the_model_not_a_tag(semi_server, tmp_path):
    path = semi_server.studies / f"{UNLABELLED}.nii.gz"
    with open(path, "rb") as f:
        r = requests.post(
            f"{semi_server.url}/infer/scar_nsd",
            params={"output": "json"},
            files={"file": (path.name, f)},
            data={"params": "{}"},
            timeout=120,
        )
    assert r.status_code == 422 and "needs a datastore study" in r.json()["detail"], r.text
    assert "wall_from='scar'" in r.json()["detail"]
    label_file, result = MONAILabelClient(semi_server.url, tmpdir=str(tmp_path)).infer(
        "scar_nsd", "", {"wall_from": "scar"}, file=str(path)
    )
    out, image = nib.load(label_file), nib.load(str(path))
    assert out.shape == image.shape and np.array_equal(out.affine, image.affine)
    assert result["semi_automatic"]["wall_source"]["model"] == "scar"


@pytest.mark.parametrize(
    "model, image, params, status, reason",
    [
        ("scar_nsd", STUDY, {"n_sd": 0.5}, 422, "n_sd must be between 1 and 10"),
        ("scar_nsd", STUDY, {"n_sd": "many"}, 422, "n_sd must be a number"),
        ("scar_nsd", STUDY, {"n_sd": True}, 422, "n_sd must be a number"),
        ("scar_fwhm", STUDY, {"n_sd": 3}, 422, "n_sd applies to scar_nsd only"),
        ("scar_ewa", STUDY, {"remote_width_deg": 5}, 422, "width must be 10-180 degrees"),
        ("scar_nsd", STUDY, {"remote_start_deg": "north"}, 422, "remote_start_deg must be a number"),
        ("scar_nsd", STUDY, {"wall_from": "../final"}, 422, "wall_from label tag '../final' is not allowed"),
        ("scar_nsd", STUDY, {"wall_from": "nosuchtag"}, 404, "no study has a label tagged 'nosuchtag'"),
        ("scar_nsd", UNLABELLED, {}, 404, f"study '{UNLABELLED}' has no 'final' label"),
        ("scar_fwhm", "lge_000", {"wall_from": "nowall"}, 422, "no LV wall"),
        ("scar_ewa", "lge_001", {"wall_from": "offgrid"}, 422, "label grid differs from its image"),
        ("scar_nsd", STUDY, {"result_extension": ".exe"}, 422, "result_extension '.exe' is not allowed"),
        ("scar_nsd", STUDY, {"image_id": "lge_000"}, 422, "params may not set ['image_id']"),
    ],
)
def test_bad_requests_answer_4xx_with_the_reason(semi_server, model, image, params, status, reason):
    r = _post(semi_server, model, image, params)
    assert r.status_code == status and reason in r.json()["detail"], r.text


def test_the_rules_are_not_trainable_and_have_no_weights(semi_server):
    r = requests.post(f"{semi_server.url}/train/scar_nsd", json={}, timeout=30)
    assert r.status_code == 404 and "unknown model to train 'scar_nsd'" in r.json()["detail"], r.text
    r = requests.get(f"{semi_server.url}/model/scar_nsd", timeout=30)
    assert r.status_code == 404, r.text


def test_tags_need_no_model_but_wall_from_scar_does(semi_server):
    """Run last: the model is made unusable (current version v9, which does not exist) and then restored."""
    pointer = semi_server.model_dir / "current.json"
    pointer.write_text(json.dumps({"version": "v9", "history": []}))
    try:
        assert requests.get(f"{semi_server.url}/info/", timeout=10).json()["models"]["scar"]["ready"] is False
        r = _post(semi_server, "scar_fwhm", STUDY)
        assert r.status_code == 200 and r.json()["semi_automatic"]["wall_source"] == {"tag": "final"}, r.text
        r = _post(semi_server, "scar_fwhm", STUDY, {"wall_from": "scar"})
        assert r.status_code == 503 and "no usable model" in r.json()["detail"], r.text
    finally:
        pointer.unlink()
