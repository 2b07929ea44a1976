"""The app on a real DICOMweb store: Orthanc (Debian orthanc + orthanc-dicomweb) on 127.0.0.1.

MR series are the studies (ids are SeriesInstanceUIDs, as OHIF sends them), corrected labels go to
Orthanc as DICOM SEG and come back from it, and a store that stops answers 503 without taking the app
down. Orthanc is required, not optional: ``.ci/run`` installs it when missing.
"""

from __future__ import annotations

import io
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from lib.constants import MYOCARDIUM, SCAR
from lib.dicom_io import write_dicom_series
from lib.dicom_seg import read_series, seg_to_label
from lib.dicomweb_datastore import LISTING_TTL_S
from lib.label_io import check_label, read_geometry
from lib.orthanc import start_orthanc
from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import start_dicomweb_server


@pytest.fixture(scope="module")
def server(dicomweb_server):
    return dicomweb_server  # the app on this module's Orthanc (tests/integration/conftest.py)


def _segs_of(store, series_uid: str) -> list[pydicom.Dataset]:
    client = DICOMwebClient(url=store.dicomweb)
    found = []
    for seg in client.search_for_series(search_filters={"Modality": "SEG"}):
        study, series = seg["0020000D"]["Value"][0], seg["0020000E"]["Value"][0]
        for ds in client.retrieve_series(study, series):
            if ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid:
                found.append(ds)
    return found


def _put_label(server, image_id: str, label: np.ndarray, affine: np.ndarray) -> requests.Response:
    buffer = io.BytesIO()
    buffer.write(nib.Nifti1Image(label.astype(np.uint8), affine).to_bytes())
    return requests.put(
        f"{server.url}/datastore/label",
        params={"image": image_id, "tag": "final"},
        files={"label": ("label.nii.gz", buffer.getvalue())},
        data={"params": "{}"},
        timeout=120,
    )


def test_mr_series_are_the_studies_and_infer_by_series_uid(server, store):
    r = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=60)
    assert r.status_code == 200, r.text
    listed = set(r.json()["objects"]) if "objects" in r.json() else set(r.json())
    assert set(store.series.values()) <= listed
    uid = store.series["lge_dicom_014"]
    r = requests.post(f"{server.url}/infer/scar", params={"image": uid, "output": "json"}, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["lv_myocardial_mass_g"] > 20


def test_corrected_label_becomes_a_seg_in_orthanc_and_the_newest_wins(server, store, tmp_path):
    uid = store.series["lge_000"]
    sample = nib.load(str(SAMPLE_DATA / "labels" / "final" / "lge_000.nii.gz"))
    label = np.asarray(sample.dataobj).astype(np.uint8)
    r = _put_label(server, uid, label, sample.affine)
    assert r.status_code == 200, r.text
    segs = _segs_of(store, uid)
    assert len(segs) == 1
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    for ds in DICOMwebClient(url=store.dicomweb).retrieve_series(segs[0].StudyInstanceUID, uid):
        ds.save_as(series_dir / f"{ds.SOPInstanceUID}.dcm")
    geometry = read_geometry(str(series_dir))
    assert np.array_equal(
        seg_to_label(segs[0], read_series(str(series_dir)), geometry),
        check_label(str(SAMPLE_DATA / "labels" / "final" / "lge_000.nii.gz"), str(series_dir)),
    )

    # A second correction, scar-free (scar painted back to myocardium): accepted, and it is the label now.
    scar_free = np.where(label == SCAR, MYOCARDIUM, label)
    time.sleep(1.1)  # SEG content times have one-second resolution at worst
    r = _put_label(server, uid, scar_free, sample.affine)
    assert r.status_code == 200, r.text
    assert len(_segs_of(store, uid)) == 2
    r = requests.get(f"{server.url}/datastore/label", params={"label": uid, "tag": "final"}, timeout=60)
    assert r.status_code == 200, r.text
    (tmp_path / "back.nii.gz").write_bytes(r.content)
    back = check_label(str(tmp_path / "back.nii.gz"), str(series_dir))
    assert not np.isin(back, (SCAR,)).any()
    assert np.array_equal(back, check_label(_nifti(tmp_path, scar_free, sample.affine), str(series_dir)))


def _wait_listed(server, uid: str, timeout_s: float = 60.0) -> None:
    """Until the app lists a series just stored (its listing cache lasts 5 s; a loaded machine takes longer)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        listed = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=60).json()["objects"]
        if uid in listed:
            return
        time.sleep(1)
    raise TimeoutError(f"series {uid} not listed after {timeout_s:g} s")


def _nifti(tmp_path, label, affine) -> str:
    path = tmp_path / "expected.nii.gz"
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(path))
    return str(path)


def test_next_sample_hands_out_a_series_ohif_can_open(server, store):
    r = requests.post(f"{server.url}/activelearning/random", json={}, timeout=120)
    assert r.status_code == 200, r.text
    sample = r.json()
    assert sample["id"] in store.series.values()
    assert sample["SeriesInstanceUID"] == sample["id"]
    assert sample["StudyInstanceUID"]
    assert sample["RetrieveURL"].startswith(store.dicomweb)
    assert requests.get(sample["RetrieveURL"] + "/metadata", timeout=30).status_code == 200


def test_a_series_that_is_not_an_lge_stack_is_refused_with_the_reason(server, store, tmp_path):
    voxels = np.random.default_rng(0).integers(0, 500, (64, 64, 6)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    ct = [pydicom.dcmread(p) for p in write_dicom_series(voxels, affine, str(tmp_path / "ct"), patient_id="ct_case")]
    for ds in ct:
        ds.Modality = "CT"
    one = [
        pydicom.dcmread(p)
        for p in write_dicom_series(voxels[:, :, :1], affine, str(tmp_path / "one"), patient_id="one_slice")
    ]
    client = DICOMwebClient(url=store.dicomweb)
    client.store_instances(ct)
    client.store_instances(one)
    for series, reason in ((ct[0].SeriesInstanceUID, "is CT, not MR"), (one[0].SeriesInstanceUID, "has 1 slice")):
        r = requests.post(f"{server.url}/infer/scar", params={"image": str(series), "output": "json"}, timeout=120)
        assert r.status_code == 422, r.text
        assert reason in r.json()["detail"]
    r = requests.post(f"{server.url}/infer/scar", params={"image": "1.2.3.4.5", "output": "json"}, timeout=120)
    assert r.status_code == 404


def test_orthanc_stopped_answers_503_and_the_app_recovers(server, store):
    folder, port = store.folder, store.port
    store.stop()
    try:
        time.sleep(LISTING_TTL_S + 1)  # past the listing cache
        r = requests.post(f"{server.url}/activelearning/random", json={}, timeout=120)
        assert r.status_code == 503, r.text
        assert "unreachable" in r.json()["detail"]
        assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
    finally:
        restarted = start_orthanc(folder, port=port)
        store.process = restarted.process
    r = requests.post(f"{server.url}/activelearning/random", json={}, timeout=120)
    assert r.status_code == 200, r.text


def test_slicer_client_loop_over_orthanc_trains_on_the_segs(store, tmp_path):
    """next sample -> infer -> save label -> train -> infer again, with the Slicer plugin's client, on Orthanc."""
    from monailabel.client import MONAILabelClient

    from tests.integration.test_loop import _poor_model

    server = start_dicomweb_server(tmp_path / "loop", store, network=_poor_model())
    try:
        client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="slicer")
        sample = client.next_sample("random", {})
        assert sample["id"] in store.series.values() and sample["name"].endswith(".nii.gz")
        # The plugin downloads sample["url"] when sample["path"] is not on its machine: a loadable volume.
        r = requests.get(f"{server.url}{sample['url']}", timeout=120)
        assert r.status_code == 200, r.text
        (tmp_path / sample["name"]).write_bytes(r.content)
        assert read_geometry(str(tmp_path / sample["name"])).size[2] >= 2

        before_file, before = client.infer("scar", store.series["lge_001"], {})
        assert before["model"]["version"] == "v1"
        # Corrections of three series, saved as the plugin saves them: NIfTI labels, tag final -> SEGs.
        for name in ("lge_000", "lge_001", "lge_002"):
            client.save_label(store.series[name], str(SAMPLE_DATA / "labels" / "final" / f"{name}.nii.gz"), tag="final")
        assert all(_segs_of(store, store.series[n]) for n in ("lge_000", "lge_001", "lge_002"))
        pairs = requests.get(f"{server.url}/datastore/", params={"output": "train"}, timeout=120).json()
        paired = {p["image"].split("/")[-1].removesuffix(".dicom") for p in pairs if p.get("label")}
        assert {store.series[n] for n in ("lge_000", "lge_001", "lge_002")} <= paired

        # Three labelled series are too few for the publish gate's validation (it needs 3 validation
        # studies), so this run is published by request, as the gate's reason says.
        task = server.train({"max_epochs": 2, "lr": 1e-3, "publish": "force"})
        assert task["status"] == "DONE", task
        stats = requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["scar"]
        assert stats["published"] is True, stats["reason"]
        assert server.current_model()["version"] == "v2"
        trained_on = set(stats["train_images"]) | set(stats["validation_images"])
        assert trained_on == {store.series[n] for n in ("lge_000", "lge_001", "lge_002")}

        after_file, after = client.infer("scar", store.series["lge_001"], {})
        assert after["model"]["version"] == "v2"
        assert not np.array_equal(np.asarray(nib.load(after_file).dataobj), np.asarray(nib.load(before_file).dataobj))
        assert client.next_sample("random", {})["id"] not in trained_on  # the next series over DICOMweb
    finally:
        server.stop()


def test_the_same_label_saved_twice_at_once_leaves_one_consistent_label(server, store, tmp_path):
    import threading

    uid = store.series["lge_002"]
    sample = nib.load(str(SAMPLE_DATA / "labels" / "final" / "lge_002.nii.gz"))
    label = np.asarray(sample.dataobj).astype(np.uint8)
    variants = [label, np.where(label == SCAR, MYOCARDIUM, label)]
    answers = []
    segs_before = len(_segs_of(store, uid))
    threads = [
        threading.Thread(target=lambda v=v: answers.append(_put_label(server, uid, v, sample.affine))) for v in variants
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    segs = _segs_of(store, uid)
    assert len(segs) == segs_before + 2  # both kept in the store, none lost
    time.sleep(LISTING_TTL_S + 1)  # past the listing cache
    r = requests.get(f"{server.url}/datastore/label", params={"label": uid, "tag": "final"}, timeout=60)
    assert r.status_code == 200, r.text
    (tmp_path / "back.nii.gz").write_bytes(r.content)
    back = np.asarray(nib.load(str(tmp_path / "back.nii.gz")).dataobj)
    newest = max(segs, key=lambda s: f"{s.ContentDate}{s.ContentTime}")  # highdicom: microseconds
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    for ds in DICOMwebClient(url=store.dicomweb).retrieve_series(newest.StudyInstanceUID, uid):
        ds.save_as(series_dir / f"{ds.SOPInstanceUID}.dcm")
    from_newest = seg_to_label(newest, read_series(str(series_dir)), read_geometry(str(series_dir)))
    assert np.array_equal(back, from_newest)  # the label is the newest SEG, whole
    assert any(np.array_equal(back, v) for v in variants)


def test_a_seg_whose_series_is_gone_is_not_a_label(server, store, tmp_path):
    voxels = np.random.default_rng(1).integers(0, 500, (64, 64, 5)).astype(np.float32)
    paths = write_dicom_series(voxels, np.diag([1.5, 1.5, 8.0, 1.0]), str(tmp_path / "gone"), patient_id="gone_case")
    client = DICOMwebClient(url=store.dicomweb)
    client.store_instances([pydicom.dcmread(p) for p in paths])
    uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    _wait_listed(server, uid)
    label = np.zeros((64, 64, 5), np.uint8)
    label[20:40, 20:40, :] = MYOCARDIUM
    r = _put_label(server, uid, label, np.diag([1.5, 1.5, 8.0, 1.0]))
    assert r.status_code == 200, r.text
    # The series is deleted from the store (Orthanc's REST API), its SEG stays behind.
    orthanc_id = requests.post(f"{store.url}/tools/lookup", data=uid, timeout=30).json()[0]["ID"]
    assert requests.delete(f"{store.url}/series/{orthanc_id}", timeout=30).status_code == 200
    time.sleep(LISTING_TTL_S + 1)
    r = requests.get(f"{server.url}/datastore/label", params={"label": uid, "tag": "final"}, timeout=60)
    assert r.status_code == 404 and "no such series" in r.json()["detail"]
    pairs = requests.get(f"{server.url}/datastore/", params={"output": "train"}, timeout=120).json()
    assert not [p for p in pairs if uid in p["image"]]
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200


def test_a_seg_from_the_unfixed_ohif_is_refused_with_the_reason(server, store, tmp_path):
    """SEGs of the OHIF that stock MONAI Label 0.8.5 serves store painted slices mirrored; never labels."""
    from lib.dicom_seg import label_to_seg

    uid = store.series["lge_dicom_014"]
    study = DICOMwebClient(url=store.dicomweb).search_for_series(search_filters={"SeriesInstanceUID": uid})
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    client = DICOMwebClient(url=store.dicomweb)
    for ds in client.retrieve_series(study[0]["0020000D"]["Value"][0], uid):
        ds.save_as(series_dir / f"{ds.SOPInstanceUID}.dcm")
    geometry = read_geometry(str(series_dir))
    label = np.zeros(geometry.size, np.uint8)
    label[40:60, 40:60, 2] = SCAR
    seg = label_to_seg(label, read_series(str(series_dir)), geometry, software_version="0")
    seg.Manufacturer = seg.ManufacturerModelName = "Unspecified"  # dcmjs's defaults, as that OHIF writes
    client.store_instances([seg])
    time.sleep(LISTING_TTL_S + 1)  # past the app's listing cache
    r = requests.get(f"{server.url}/datastore/label", params={"label": uid, "tag": "final"}, timeout=60)
    assert r.status_code == 422, r.text
    assert "unfixed OHIF" in r.json()["detail"]
    pairs = requests.get(f"{server.url}/datastore/", params={"output": "train"}, timeout=120).json()
    assert not [p for p in pairs if uid in p["image"] and p.get("label")]  # not trained on
