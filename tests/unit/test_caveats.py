"""Warnings and withheld figures (lib/caveats.py), and the header test for inversion recovery."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from lib.caveats import (
    MVO_MIN_POOLED_DICE,
    MVO_MIN_VALIDATION_STUDIES,
    PER_SLICE_PREFIX,
    WARNING_CODES,
    assess,
    inversion_recovery,
)
from lib.constants import LV_CAVITY, MVO, MYOCARDIUM, SCAR
from lib.dicom_io import write_dicom_series
from lib.metrics import scar_quantification
from tests.conftest import SAMPLE_DATA

SPACING_MM = (2.0, 2.0, 10.0)
VALIDATED = {"pooled_dice": 0.7, "studies_with_mvo": 5}

LV = ("lv_cavity_volume_ml", "lv_myocardial_volume_ml", "lv_myocardial_mass_g")
PERCENTS = ("scar_percent_lv_mass", "mvo_percent_lv_mass")
SCAR_FIGS = ("scar_volume_ml", "scar_mass_g", "scar_percent_lv_mass", "scar_slices")
MVO_FIGS = ("mvo_volume_ml", "mvo_mass_g", "mvo_percent_lv_mass")
FIGURES = tuple(dict.fromkeys(LV + SCAR_FIGS + MVO_FIGS))
AREAS = ("scar_area_mm2", "mvo_area_mm2", "lv_wall_area_mm2")
MVO_AREA = ("mvo_area_mm2",)
LESION_AREAS = ("scar_area_mm2", "mvo_area_mm2")


def _label(n_slices: int, *, wall: bool = True) -> np.ndarray:
    """Cavity on every slice; wall, scar and MVO on every slice too unless ``wall`` is False."""
    label = np.zeros((12, 12, n_slices), np.uint8)
    label[4:8, 4:8] = LV_CAVITY
    if wall:
        label[2:4, 2:10] = MYOCARDIUM
        label[8:10, 2:10] = SCAR
        label[8:9, 2:4] = MVO
    return label


def _figures(n_slices: int = 4, *, wall: bool = True) -> dict:
    return scar_quantification(_label(n_slices, wall=wall), SPACING_MM)


def _check(result: dict, figures: dict, codes: set[str], nulls: tuple[str, ...], slice_nulls: tuple[str, ...]):
    """The warning codes, the withheld fields and their reasons are exactly these; the rest kept their values."""
    assert {w["code"] for w in result["warnings"]} == codes
    assert all(w["message"] and w["code"] in WARNING_CODES for w in result["warnings"])
    assert set(result["null_reasons"]) == set(nulls) | {PER_SLICE_PREFIX + f for f in slice_nulls}
    assert all(result["null_reasons"].values())
    for field in FIGURES:
        assert result[field] == (None if field in nulls else figures[field]), field
    for row, original in zip(result["per_slice"], figures["per_slice"], strict=True):
        for field in AREAS:
            assert row[field] == (None if field in slice_nulls else original[field]), field
    assert result["spacing_mm"] == figures["spacing_mm"]


@pytest.mark.parametrize(
    "ir, mvo_validation",
    [
        (True, VALIDATED),
        (None, VALIDATED),  # NIfTI: sequence unknown, no warning
        (True, {"pooled_dice": MVO_MIN_POOLED_DICE, "studies_with_mvo": MVO_MIN_VALIDATION_STUDIES}),  # at the bar
    ],
)
def test_clean_study_has_no_warnings_and_keeps_every_figure(ir, mvo_validation):
    figures = _figures()
    result = assess(figures, heart_found=True, inversion_recovery=ir, mvo_validation=mvo_validation)
    _check(result, figures, set(), (), ())
    assert result["warnings"] == [] and result["null_reasons"] == {}
    assert result["scar_mass_g"] > 0 and result["mvo_mass_g"] > 0  # the fixture has something to withhold


@pytest.mark.parametrize(
    "n_slices, heart_found, ir, mvo_validation, codes, nulls, slice_nulls",
    [
        (4, False, True, VALIDATED, {"no_heart_found"}, FIGURES, AREAS),
        (2, True, True, VALIDATED, {"too_few_slices"}, LV + PERCENTS, ()),
        (1, True, None, VALIDATED, {"too_few_slices"}, LV + PERCENTS, ()),
        (4, True, False, VALIDATED, {"not_inversion_recovery"}, SCAR_FIGS + MVO_FIGS, LESION_AREAS),
        (4, True, True, None, {"mvo_not_validated"}, MVO_FIGS, MVO_AREA),
        (4, True, True, {}, {"mvo_not_validated"}, MVO_FIGS, MVO_AREA),
        (4, True, True, {"pooled_dice": 0.0, "studies_with_mvo": 5}, {"mvo_not_validated"}, MVO_FIGS, MVO_AREA),
        (4, True, True, {"pooled_dice": 0.9, "studies_with_mvo": 2}, {"mvo_not_validated"}, MVO_FIGS, MVO_AREA),
        (4, True, True, {"pooled_dice": None, "studies_with_mvo": 0}, {"mvo_not_validated"}, MVO_FIGS, MVO_AREA),
        (
            2,
            True,
            False,
            None,
            {"too_few_slices", "not_inversion_recovery", "mvo_not_validated"},
            LV + SCAR_FIGS + MVO_FIGS,
            LESION_AREAS,
        ),
    ],
    ids=[
        "no_heart",
        "two_slices",
        "one_slice",
        "cine_ssfp",
        "mvo_validation_absent",
        "mvo_validation_empty",
        "mvo_dice_zero",
        "mvo_two_studies",
        "mvo_dice_none",
        "all_at_once",
    ],
)
def test_each_rule_warns_and_withholds_exactly_its_figures(
    n_slices, heart_found, ir, mvo_validation, codes, nulls, slice_nulls
):
    figures = _figures(n_slices)
    result = assess(figures, heart_found=heart_found, inversion_recovery=ir, mvo_validation=mvo_validation)
    _check(result, figures, codes, nulls, slice_nulls)


def test_empty_wall_gives_no_percentages_with_a_reason():
    figures = _figures(wall=False)
    # scar_quantification itself no longer claims 0 % of a zero LV mass.
    assert figures["lv_myocardial_mass_g"] == 0
    assert figures["scar_percent_lv_mass"] is None and figures["mvo_percent_lv_mass"] is None
    assert figures["lv_cavity_volume_ml"] > 0
    result = assess(figures, heart_found=True, inversion_recovery=True, mvo_validation=VALIDATED)
    _check(result, figures, {"no_myocardium"}, PERCENTS, ())
    assert "myocardium" in result["null_reasons"]["scar_percent_lv_mass"]


def test_first_rule_gives_the_reason_and_messages_carry_the_numbers():
    result = assess(
        _figures(2),
        heart_found=False,
        inversion_recovery=False,
        mvo_validation={"pooled_dice": 0.31, "studies_with_mvo": 4},
    )
    assert [w["code"] for w in result["warnings"]] == [
        "no_heart_found",
        "not_inversion_recovery",
        "too_few_slices",
        "mvo_not_validated",
    ]
    assert "no heart" in result["null_reasons"]["mvo_mass_g"]
    message = next(w["message"] for w in result["warnings"] if w["code"] == "mvo_not_validated")
    assert "0.31" in message and "4 validation studies" in message
    assert "2 slice" in next(w["message"] for w in result["warnings"] if w["code"] == "too_few_slices")


def test_assess_does_not_modify_its_input_and_refuses_other_dicts():
    figures = _figures()
    before = {**figures, "per_slice": [dict(r) for r in figures["per_slice"]]}
    assess(figures, heart_found=False, inversion_recovery=False, mvo_validation=None)
    assert figures == before
    with pytest.raises(ValueError, match="scar_mass_g"):
        assess({"per_slice": []}, heart_found=True, inversion_recovery=True, mvo_validation=VALIDATED)


def test_every_warning_code_is_described():
    figures = _figures(1, wall=False)
    seen = set()
    for heart_found in (True, False):
        result = assess(
            figures,
            heart_found=heart_found,
            inversion_recovery=False,
            mvo_validation=None,
            calibrated_version=False,
            spacing_recorded=False,
        )
        seen |= {w["code"] for w in result["warnings"]}
    assert seen == set(WARNING_CODES)


def test_a_fine_tuned_version_is_told_its_calibration_came_from_the_default_model():
    figures = _figures()
    codes = lambda **kw: [  # noqa: E731
        w["code"]
        for w in assess(figures, heart_found=True, inversion_recovery=True, mvo_validation=VALIDATED, **kw)["warnings"]
    ]
    assert codes(calibrated_version=False) == ["calibrated_on_default_model"]
    assert codes(calibrated_version=True) == codes(calibrated_version=None) == []


# ---- inversion_recovery: the header test ----


def _write_series(folder, **kwargs) -> list[str]:
    image = np.arange(8 * 6 * 3, dtype=np.int16).reshape(8, 6, 3)
    return write_dicom_series(image, np.diag([1.5, 1.5, 8.0, 1.0]), str(folder), patient_id="CAV1", **kwargs)


def test_our_dicom_series_is_inversion_recovery_and_a_plain_one_is_not(tmp_path):
    _write_series(tmp_path / "lge")
    assert inversion_recovery(str(tmp_path / "lge")) is True
    _write_series(tmp_path / "gre", inversion_time_ms=None)
    assert inversion_recovery(str(tmp_path / "gre")) is False


def test_shipped_sample_dicom_series_is_recognised_as_lge():
    assert inversion_recovery(str(SAMPLE_DATA / "lge_dicom_014.dicom")) is True


@pytest.mark.parametrize("patient", ["SCD0000101", "SCD0000201", "SCD0000301", "SCD0000401", "SCD0000501"])
def test_real_cine_ssfp_is_not_inversion_recovery(real_data, patient):
    assert inversion_recovery(str(real_data / "sunnybrook" / "dicoms" / patient)) is False


def test_real_cine_single_file_without_suffix_is_not_inversion_recovery(real_data, tmp_path):
    source = sorted((real_data / "sunnybrook" / "dicoms" / "SCD0000101").glob("*.dcm"))[0]
    (tmp_path / "series").mkdir()
    shutil.copy(source, tmp_path / "series" / "IM0001")
    assert inversion_recovery(str(tmp_path / "series")) is False


def test_files_without_suffix_and_non_dicom_neighbours_are_handled(tmp_path):
    paths = _write_series(tmp_path / "written")
    series = tmp_path / "series.dicom"
    series.mkdir()
    (series / "A_notes.txt").write_text("not DICOM")  # sorts first, must be skipped
    directory = pydicom.dcmread(paths[0])
    for keyword in ("Rows", "Columns", "PixelData", "ScanningSequence", "InversionTime"):
        delattr(directory, keyword)
    directory.save_as(str(series / "DICOMDIR"), write_like_original=False)  # DICOM, but no image: skipped
    shutil.copy(paths[0], series / "IM0001")
    assert inversion_recovery(str(series)) is True


@pytest.mark.parametrize(
    "tags, expected",
    [
        ({"ScanningSequence": "IR"}, True),
        ({"ScanningSequence": ["GR", "IR"]}, True),
        ({"ScanningSequence": "GR", "InversionTime": 280.0}, True),
        ({"ScanningSequence": "GR", "InversionTimes": [300.0]}, True),  # Enhanced MR tag in a classic export
        ({"ScanningSequence": "GR", "InversionRecovery": "YES"}, True),
        ({"ScanningSequence": "GR"}, False),
        ({"ScanningSequence": "GR", "SequenceVariant": ["SS"]}, False),  # cine SSFP
        ({"ScanningSequence": "GR", "InversionTime": 0.0}, False),
        ({"ScanningSequence": "GR", "InversionTimes": [0.0]}, False),
        ({"ScanningSequence": "GR", "SequenceVariant": ["SP", "MP"]}, None),  # prepared, TI not recorded
        ({}, None),  # header records no sequence
    ],
)
def test_header_rules(tmp_path, tags, expected):
    path = _write_series(tmp_path / "series", inversion_time_ms=None)[0]
    ds = pydicom.dcmread(path)
    del ds.ScanningSequence
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    single = tmp_path / "one"
    single.mkdir()
    ds.save_as(str(single / "slice.dcm"), write_like_original=False)
    assert inversion_recovery(str(single)) is expected


def test_non_dicom_inputs_are_unknown(tmp_path):
    nifti = tmp_path / "study.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), str(nifti))
    (tmp_path / "empty.dicom").mkdir()
    (tmp_path / "empty.dicom" / "readme.txt").write_text("no images")
    assert inversion_recovery(str(nifti)) is None
    assert inversion_recovery(str(tmp_path / "empty.dicom")) is None
    assert inversion_recovery(str(tmp_path / "missing.dicom")) is None


def test_a_header_without_spacing_withholds_masses_volumes_and_areas_but_not_shares():
    result = assess(
        _figures(), heart_found=True, inversion_recovery=True, mvo_validation="reader", spacing_recorded=False
    )
    assert result["scar_mass_g"] is None and result["lv_myocardial_mass_g"] is None
    assert result["lv_cavity_volume_ml"] is None
    assert result["scar_percent_lv_mass"] == _figures()["scar_percent_lv_mass"]
    assert all(row["scar_area_mm2"] is None for row in result["per_slice"])
    assert result["null_reasons"]["scar_mass_g"] == "the image header records no voxel spacing"
    assert result["mvo_mass_g"] is None  # withheld for the spacing, not for validation: a reader's MVO
    assert "mvo_not_validated" not in {w["code"] for w in result["warnings"]}
