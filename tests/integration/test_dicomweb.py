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
from lib.label_io import check_label, read_geometry
from lib.orthanc import start_orthanc
from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import start_dicomweb_server, start_dicomweb_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    orthanc = start_dicomweb_store(tmp_path_factory.mktemp("orthanc"))
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    s = start_dicomweb_server(tmp_path_factory.mktemp("dicomweb_server"), store)
    yield s
    s.stop()


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
        time.sleep(6)  # past the listing cache
        r = requests.post(f"{server.url}/activelearning/random", json={}, timeout=120)
        assert r.status_code == 503, r.text
        assert "unreachable" in r.json()["detail"]
        assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
    finally:
        restarted = start_orthanc(folder, port=port)
        store.process = restarted.process
    r = requests.post(f"{server.url}/activelearning/random", json={}, timeout=120)
    assert r.status_code == 200, r.text
