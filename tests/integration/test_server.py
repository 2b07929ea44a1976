"""Infer, bad input and active learning through a real server, with MONAILabelClient and plain HTTP."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
import requests
import SimpleITK as sitk
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from lib.constants import MVO, SCAR
from lib.label_io import read_geometry
from lib.metrics import structure_dice
from lib.report.from_files import report_from_files

LABELED = [f"lge_{i:03d}" for i in range(10)]
UNLABELED = ["lge_010", "lge_011", "lge_012", "lge_013", "lge_dicom_014"]


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _snapshot(server) -> dict:
    """Everything a failed request must leave as it was: labels on disk, the index's labels, the model."""
    files = {
        str(p.relative_to(server.studies)): _sha(p)
        for p in sorted((server.studies / "labels").rglob("*"))
        if p.is_file()
    }
    index = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=10).json()
    labels = {k: sorted(v.get("labels", {})) for k, v in index["objects"].items()}
    return {"files": files, "labels": labels, "model": server.current_model()}


def test_info_lists_the_scar_model_with_emidec_labels_in_order(server):
    info = MONAILabelClient(server.url).info()
    assert info["models"]["scar"]["labels"] == {"lv_cavity": 1, "myocardium": 2, "scar": 3, "mvo": 4}
    assert info["labels"] == ["lv_cavity", "myocardium", "scar", "mvo"]
    assert info["models"]["scar"]["label_values"] == {
        "background": 0,
        "lv_cavity": 1,
        "myocardium": 2,
        "scar": 3,
        "mvo": 4,
    }
    assert {"scar_uncertainty", "random", "first"} <= set(info["strategies"])
    assert "scar" in info["trainers"]


def test_infer_nifti_on_input_grid_with_scar_figures(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    label_file, result = client.infer("scar", "lge_002", {})
    image = server.studies / "lge_002.nii.gz"
    assert read_geometry(label_file).matches(read_geometry(str(image)))
    assert np.array_equal(nib.load(label_file).affine, nib.load(str(image)).affine)
    label = np.asarray(nib.load(label_file).dataobj)
    truth = np.asarray(nib.load(str(server.studies / "labels" / "final" / "lge_002.nii.gz")).dataobj)
    dice = structure_dice(label, truth)
    assert dice["lv_wall"] > 0.85 and dice["lv_cavity"] > 0.9 and dice["scar"] > 0.5, dice
    spacing = nib.load(str(image)).header.get_zooms()
    voxel_ml = float(np.prod(spacing)) / 1000
    scar_voxels = int(np.isin(label, (SCAR, MVO)).sum())
    assert result["scar_volume_ml"] == pytest.approx(scar_voxels * voxel_ml, abs=0.01)
    assert result["scar_mass_g"] == pytest.approx(scar_voxels * voxel_ml * 1.05, abs=0.01)
    assert result["lv_myocardial_mass_g"] > result["scar_mass_g"] > 0
    assert result["scar_percent_lv_mass"] == pytest.approx(
        100 * result["scar_mass_g"] / result["lv_myocardial_mass_g"], abs=0.05
    )
    assert {"mvo_mass_g", "mvo_volume_ml"} <= set(result)
    assert result["localisation"]["heart_found"] is True
    assert [s["slice"] for s in result["per_slice"]] == list(range(label.shape[2]))
    assert sum(s["scar_area_mm2"] for s in result["per_slice"]) * spacing[2] / 1000 == pytest.approx(
        result["scar_volume_ml"], abs=0.05
    )
    # Scar present, with its probability, and intervals that hold the reported figures.
    assert result["scar_present"]["value"] is True and result["scar_present"]["probability"] >= 0.5
    assert result["scar_present"]["cross_validation"]["specificity"] is not None
    intervals = result["scar_intervals"]
    assert intervals["level"] == 0.9 and intervals["cross_validation"]["scar_mass_coverage"] > 0
    low, high = intervals["scar_percent_lv_mass"]
    assert low <= result["scar_percent_lv_mass"] <= high and high - low > 0
    low, high = intervals["scar_mass_g"]
    assert low <= result["scar_mass_g"] <= high
    # The clinical report of the answer: the CLI's report of the returned label, same segments and grey zone.
    report = result["report"]
    assert report["study"]["scar_mass_g"] == result["scar_mass_g"]
    assert len(report["aha"]["segments"]) == 16
    assert sum(s["wall_mass_g"] for s in report["aha"]["segments"]) == pytest.approx(
        result["lv_myocardial_mass_g"], abs=0.1
    )
    from_cli, _ = report_from_files(str(image), label_file)
    assert report["aha"]["segments"] == from_cli["aha"]["segments"]
    assert report["grey_zone"] == from_cli["grey_zone"]


def test_infer_dicom_series_folder_on_its_grid(server, tmp_path):
    r = requests.post(f"{server.url}/infer/scar", params={"image": "lge_dicom_014", "output": "all"}, timeout=120)
    assert r.status_code == 200, r.text
    # Own tmpdir: with the default /tmp the client saves under the server's temporary file name, which
    # the server deletes after answering (server and client on one machine).
    client_out = MONAILabelClient(server.url, tmpdir=str(tmp_path)).infer("scar", "lge_dicom_014", {})
    series = server.studies / "lge_dicom_014.dicom"
    assert read_geometry(client_out[0]).matches(read_geometry(str(series)))
    assert client_out[1]["lv_myocardial_mass_g"] > 20
    # The series' DICOM orientation (a short-axis stack, base first) places the segments, and agrees with the
    # LV's taper.
    report = client_out[1]["report"]
    assert report["aha"]["anchor"]["source"] == "patient_orientation"
    assert report["aha"]["base"]["first_slice_is_base"] is True
    assert "orientation_disagrees_with_anatomy" not in {w["code"] for w in report["warnings"]}
    assert len(report["aha"]["segments"]) == 16


def test_infer_uploaded_emidec_nifti_uses_real_spacing(server, real_data, tmp_path):
    image = real_data / "emidec_nifti" / "samplePositive" / "Images" / "samplePositive.nii.gz"
    with open(image, "rb") as f:
        r = _upload(server, "POST", "/infer/scar", "file", f, {"output": "all"}, name="samplePositive.nii.gz")
    assert r.status_code == 200, r.text
    result = MONAILabelClient(server.url, tmpdir=str(tmp_path)).infer("scar", "", {}, file=str(image))
    out = nib.load(result[0])
    source = nib.load(str(image))
    assert out.shape == source.shape and np.array_equal(out.affine, source.affine)
    assert result[1]["spacing_mm"] == pytest.approx([1.40625, 1.40625, 13.0])
    truth = np.asarray(
        nib.load(str(real_data / "emidec_nifti" / "samplePositive" / "Contours" / "samplePositive.nii.gz")).dataobj
    )
    assert structure_dice(np.asarray(out.dataobj), truth)["lv_wall"] > 0.6


def _resampled_in_plane(source, factor: float, out_path) -> str:
    """The same exam on an in-plane grid ``factor`` times as fine or coarse, same field of view and slices."""
    image = sitk.ReadImage(str(source))
    spacing = image.GetSpacing()
    new_spacing = (spacing[0] * factor, spacing[1] * factor, spacing[2])
    size = [int(round(image.GetSize()[i] * spacing[i] / new_spacing[i])) for i in range(2)] + [image.GetSize()[2]]
    resampled = sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), new_spacing, image.GetDirection(), 0.0
    )
    sitk.WriteImage(resampled, str(out_path))
    return str(out_path)


def test_scar_mass_of_a_real_exam_holds_when_its_grid_is_finer_or_coarser(server, real_data, tmp_path):
    """EMIDEC exams are 1.25-2 mm in-plane: the same heart resampled to 0.85x and 1.15x spacing keeps its
    scar mass within 5 % (the network sees every exam on its own 1.5 mm grid; masses use the real one)."""
    source = real_data / "emidec_nifti" / "samplePositive" / "Images" / "samplePositive.nii.gz"
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    masses = {}
    for factor in (1.0, 0.85, 1.15):
        image = _resampled_in_plane(source, factor, tmp_path / f"samplePositive_{factor}.nii.gz")
        _, result = client.infer("scar", "", {}, file=image)
        assert result["spacing_mm"][0] == pytest.approx(1.40625 * factor, rel=1e-3)
        masses[factor] = result["scar_mass_g"]
    assert masses[1.0] > 5, masses  # an infarct exam: a real scar to compare
    for factor in (0.85, 1.15):
        assert masses[factor] == pytest.approx(masses[1.0], rel=0.05), masses


def test_scar_free_study_reports_zero_scar(server, tmp_path):
    label_file, result = MONAILabelClient(server.url, tmpdir=str(tmp_path)).infer("scar", "lge_011", {})
    # Read as "no scar", the answer is exactly 0 g and the label shows no scar voxel, not a sum of specks.
    assert result["scar_present"]["value"] is False and result["scar_present"]["probability"] < 0.5
    assert result["scar_mass_g"] == 0.0 and result["lv_myocardial_mass_g"] > 20
    assert not np.isin(np.asarray(nib.load(label_file).dataobj), (SCAR, MVO)).any()
    assert result["scar_intervals"]["scar_mass_g"][0] == 0.0


@pytest.mark.parametrize(
    "method, path, kwargs, status, reason",
    [
        ("post", "/infer/nosuchmodel", {"params": {"image": "lge_000"}}, 404, "unknown model"),
        ("post", "/infer/scar", {"params": {"image": "no_such_study"}}, 404, "unknown image"),
        ("post", "/train/nosuchmodel", {"json": {}}, 404, "unknown model"),
        ("post", "/activelearning/nosuchstrategy", {"json": {}}, 404, "unknown strategy"),
    ],
)
def test_unknown_names_answer_404_with_a_reason(server, method, path, kwargs, status, reason):
    before = _snapshot(server)
    r = getattr(requests, method)(f"{server.url}{path}", timeout=30, **kwargs)
    assert r.status_code == status and reason in r.json()["detail"], r.text
    assert _snapshot(server) == before


def _upload(server, method: str, path: str, field: str, content, params: dict | None = None, name="x.nii.gz"):
    """Multipart request as OHIF and the Slicer plugin send them: a file field plus a JSON params form field."""
    return requests.request(
        method,
        f"{server.url}{path}",
        params=params or {},
        files={field: (name, content)},
        data={"params": "{}"},
        timeout=120,
    )


def _upload_label(server, image_id, content: bytes):
    return _upload(server, "PUT", "/datastore/label", "label", content, {"image": image_id, "tag": "final"})


def _nifti_bytes(array, affine, tmp_path) -> bytes:
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path.read_bytes()


def test_bad_labels_answer_4xx_and_change_nothing(server, tmp_path):
    image = nib.load(str(server.studies / "lge_000.nii.gz"))
    good = np.asarray(nib.load(str(server.studies / "labels" / "final" / "lge_000.nii.gz")).dataobj)
    shifted = image.affine.copy()
    shifted[:3, 3] += 4.0
    cases = {
        "grid": _nifti_bytes(good, shifted, tmp_path),
        "shape": _nifti_bytes(good[:, :-2], image.affine, tmp_path),
        "values": _nifti_bytes(np.where(good == 2, 9, good).astype(np.uint8), image.affine, tmp_path),
        "corrupt": b"\x1f\x8b not really gzip",
        "empty": b"",
    }
    before = _snapshot(server)
    for what, content in cases.items():
        r = _upload_label(server, "lge_000", content)
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
        assert "label not saved" in r.json()["detail"], (what, r.text)
    r = _upload_label(server, "no_such_study", cases["values"])
    assert r.status_code == 404
    with pytest.raises(MONAILabelClientException, match="422"):
        path = tmp_path / "bad.nii.gz"
        path.write_bytes(cases["values"])
        MONAILabelClient(server.url).save_label("lge_000", str(path), tag="final")
    assert _snapshot(server) == before


@pytest.mark.parametrize("shape", [(64, 64), (64, 64, 5, 3)])
def test_2d_and_4d_images_answer_422(server, tmp_path, shape):
    content = _nifti_bytes(np.random.default_rng(0).integers(0, 500, shape).astype(np.int16), np.eye(4), tmp_path)
    before = _snapshot(server)
    r = _upload(server, "POST", "/infer/scar", "file", content)
    assert r.status_code == 422 and "3D short-axis stack" in r.json()["detail"], r.text
    r = _upload(server, "PUT", "/datastore/", "file", content, {"image": "flat"}, name="flat.nii.gz")
    assert r.status_code == 422 and "image not added" in r.json()["detail"], r.text
    assert _snapshot(server) == before


def test_light_requests_are_answered_while_studies_are_segmented(server):
    """Infer runs off the server's event loop: GET /info/ is not queued behind segmentations."""
    import statistics
    import threading
    import time

    in_flight = [0]
    lock = threading.Lock()

    def infer(image_id):
        r = requests.post(f"{server.url}/infer/scar", params={"image": image_id, "output": "json"}, timeout=300)
        assert r.status_code == 200
        with lock:
            in_flight[0] -= 1

    ids = [f"lge_{i:03d}" for i in range(12)]
    threads = [threading.Thread(target=infer, args=(i,)) for i in ids]
    in_flight[0] = len(threads)
    for t in threads:
        t.start()
    time.sleep(0.2)
    busy = []  # GET /info/ latencies measured while at least two segmentations were waiting or running
    while in_flight[0] >= 2:
        t0 = time.perf_counter()
        assert requests.get(f"{server.url}/info/", timeout=60).status_code == 200
        if in_flight[0] >= 2:
            busy.append(time.perf_counter() - t0)
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert len(busy) >= 3, busy
    # On the loop, each /info/ would wait for at least one whole segmentation (0.3-0.7 s here).
    assert statistics.median(busy) < 0.15, busy


def test_report_of_a_saved_label_as_json_png_and_pdf(server):
    url = f"{server.url}/report/"
    r = requests.get(url, params={"image": "lge_007"}, timeout=60)
    assert r.status_code == 200, r.text
    expected, _ = report_from_files(
        str(server.studies / "lge_007.nii.gz"), str(server.studies / "labels" / "final" / "lge_007.nii.gz")
    )
    assert r.json() == expected
    png = requests.get(url, params={"image": "lge_007", "output": "png"}, timeout=60)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    pdf = requests.get(url, params={"image": "lge_007", "output": "pdf"}, timeout=60)
    assert pdf.status_code == 200 and pdf.content[:5] == b"%PDF-"
    assert pdf.headers["content-disposition"].endswith('filename="lge_007-report.pdf"')
    # Clear refusals: a study without that label, an unknown study, a format that does not exist.
    missing = requests.get(url, params={"image": "lge_011"}, timeout=60)
    assert missing.status_code == 404 and "has no 'final' label" in missing.json()["detail"]
    assert requests.get(url, params={"image": "nope"}, timeout=60).status_code == 404
    assert requests.get(url, params={"image": "lge_007", "output": "docx"}, timeout=60).status_code == 422
