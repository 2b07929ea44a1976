"""Geometry round trips, label checks and the clinical figures, on constructed and real data."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from lib.constants import LV_CAVITY, MVO, MYOCARDIUM, SCAR
from lib.dicom_io import write_dicom_series
from lib.errors import InputError
from lib.label_io import check_label, read_geometry, write_label_like
from lib.metrics import dice, scar_quantification, structure_dice
from lib.phantoms import make_phantom
from tests.conftest import copy_first_phase


def _save(array, affine, path):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


@pytest.fixture
def phantom_files(tmp_path):
    p = make_phantom(8, scar=True, spacing_mm=1.3, shape=(96, 104), n_slices=6, slice_spacing_mm=8.0)
    image = _save(p.image, p.affine, tmp_path / "study.nii.gz")
    return p, image, tmp_path


def test_nifti_label_round_trip_keeps_the_image_header(phantom_files):
    p, image, tmp = phantom_files
    out = write_label_like(p.label, image, str(tmp / "label.nii.gz"))
    a, b = nib.load(image), nib.load(out)
    assert b.shape == a.shape and np.array_equal(b.affine, a.affine)
    assert np.array_equal(b.header.get_zooms(), a.header.get_zooms())
    assert np.array_equal(np.asarray(b.dataobj), p.label)
    assert read_geometry(out).matches(read_geometry(image))


def test_dicom_series_reads_back_on_the_nifti_grid(phantom_files):
    p, image, tmp = phantom_files
    write_dicom_series(p.image, p.affine, str(tmp / "series"), patient_id="T1")
    from_dicom, from_nifti = read_geometry(str(tmp / "series")), read_geometry(image)
    assert from_dicom.matches(from_nifti), (from_dicom, from_nifti)
    voxels = sitk.GetArrayFromImage(sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp / "series"))))
    assert np.array_equal(np.transpose(voxels, (2, 1, 0)), p.image)
    out = write_label_like(p.label, str(tmp / "series"), str(tmp / "label.nii.gz"))
    assert read_geometry(out).matches(from_dicom)


@pytest.mark.parametrize(
    "make_label, match",
    [
        (lambda p: p.label[:-1], "grid differs"),
        (lambda p: np.where(p.label == SCAR, 7, p.label).astype(np.uint8), "0-4"),
        (lambda p: p.label.astype(np.float32) + 0.5, "whole numbers"),
    ],
)
def test_bad_labels_are_refused_with_a_reason(phantom_files, make_label, match):
    p, image, tmp = phantom_files
    bad = _save(make_label(p), p.affine, tmp / "bad.nii.gz")
    with pytest.raises(InputError, match=match):
        check_label(bad, image)


def test_shifted_origin_is_refused(phantom_files):
    p, image, tmp = phantom_files
    affine = p.affine.copy()
    affine[:3, 3] += 5.0
    with pytest.raises(InputError, match="grid differs"):
        check_label(_save(p.label, affine, tmp / "moved.nii.gz"), image)


@pytest.mark.parametrize("content, match", [(b"", "empty"), (b"not an image at all" * 20, "cannot read")])
def test_empty_or_corrupt_files_are_refused(phantom_files, content, match):
    _, image, tmp = phantom_files
    bad = tmp / "bad.nii.gz"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=match):
        check_label(str(bad), image)


@pytest.mark.parametrize("shape, match", [((64, 64), "3D"), ((64, 64, 4, 3), "3D")])
def test_2d_and_4d_images_are_refused(tmp_path, shape, match):
    path = _save(np.zeros(shape, np.int16), np.eye(4), tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match=match):
        read_geometry(path)


def test_scar_figures_by_hand():
    label = np.zeros((10, 10, 2), np.uint8)
    label[0:4, 0:5, 0] = MYOCARDIUM  # 20 voxels
    label[4:6, 0:5, 0] = SCAR  # 10 voxels
    label[6:7, 0:5, 0] = MVO  # 5 voxels
    label[0:2, 0:5, 1] = LV_CAVITY  # 10 voxels
    q = scar_quantification(label, (2.0, 2.0, 10.0))  # 40 mm^3 = 0.04 mL per voxel
    assert q["lv_myocardial_volume_ml"] == pytest.approx(35 * 0.04)
    assert q["lv_myocardial_mass_g"] == pytest.approx(35 * 0.04 * 1.05)
    assert q["scar_mass_g"] == pytest.approx(15 * 0.04 * 1.05)  # MVO counts as scar
    assert q["mvo_mass_g"] == pytest.approx(5 * 0.04 * 1.05)
    assert q["scar_percent_lv_mass"] == pytest.approx(100 * 15 / 35, abs=0.01)
    assert [s["scar_area_mm2"] for s in q["per_slice"]] == [60.0, 0.0]
    assert q["scar_slices"] == 1


def test_dice_by_hand_and_empty_cases():
    assert dice(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]])) == pytest.approx(2 / 3)
    assert dice(np.zeros(4), np.zeros(4)) == 1.0 and dice(np.ones(4), np.zeros(4)) == 0.0
    a = np.array([0, 2, 3, 4])
    assert structure_dice(a, a) == {"lv_cavity": 1.0, "lv_wall": 1.0, "scar": 1.0, "mvo": 1.0}


def test_emidec_header_trap_uses_the_real_spacing(real_data):
    image = real_data / "emidec_nifti" / "samplePositive" / "Images" / "samplePositive.nii.gz"
    naive = nib.load(str(image)).affine  # the trap: a unit-scale sform
    assert np.allclose(np.linalg.norm(naive[:3, :3], axis=0), 1.0)
    geometry = read_geometry(str(image))
    assert geometry.spacing == pytest.approx((1.40625, 1.40625, 13.0))
    label = real_data / "emidec_nifti" / "samplePositive" / "Contours" / "samplePositive.nii.gz"
    values = check_label(str(label), str(image))
    q = scar_quantification(values, geometry.spacing)
    assert q["scar_volume_ml"] == pytest.approx(np.isin(values, (SCAR, MVO)).sum() * 1.40625**2 * 13 / 1000, rel=1e-3)


def test_real_multiphase_dicom_is_refused_and_one_phase_reads(real_data, tmp_path):
    folder = real_data / "sunnybrook" / "dicoms" / "SCD0000101"
    with pytest.raises(InputError, match="slice positions"):
        read_geometry(str(folder))
    n_positions = copy_first_phase(folder, tmp_path / "one_phase")
    geometry = read_geometry(str(tmp_path / "one_phase"))
    assert geometry.size == (256, 256, n_positions)
    assert geometry.spacing[0] == pytest.approx(1.367188, abs=1e-5)
    assert 8.0 <= geometry.spacing[2] <= 10.5
