"""DICOM SEG written from a label and read back: values, names, codes and colours kept, on the series grid."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from lib.constants import LV_CAVITY, MVO, MYOCARDIUM, SCAR
from lib.dicom_seg import SEGMENTS, label_to_seg, read_series, reversed_slices_suspected, rgb_to_dicom_lab, seg_to_label
from lib.errors import InputError
from lib.label_io import read_geometry
from tests.conftest import SAMPLE_DATA, copy_first_phase

SERIES = SAMPLE_DATA / "lge_dicom_014.dicom"


def _label(geometry, rng, values=(LV_CAVITY, MYOCARDIUM, SCAR, MVO)) -> np.ndarray:
    """Blocks of each value at places that differ per slice, so a slice or axis swap shows."""
    label = np.zeros(geometry.size, np.uint8)
    x, y, z = geometry.size
    for k in range(z):
        for n, value in enumerate(values):
            x0, y0 = 5 + 7 * n + k, 3 + 11 * n + 2 * k
            label[x0 : x0 + 6, y0 : y0 + 4, k] = value
    return label


def _round_trip(label, series, geometry, tmp_path) -> tuple[np.ndarray, pydicom.Dataset]:
    seg = label_to_seg(label, read_series(str(series)), geometry, software_version="test")
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    stored = pydicom.dcmread(path)
    return seg_to_label(stored, read_series(str(series)), geometry), stored


def test_seg_round_trip_keeps_values_on_the_series_grid(tmp_path, rng):
    geometry = read_geometry(str(SERIES))
    label = _label(geometry, rng)
    back, seg = _round_trip(label, SERIES, geometry, tmp_path)
    assert back.shape == label.shape
    assert np.array_equal(back, label)
    assert seg.Modality == "SEG"
    source = pydicom.dcmread(sorted(SERIES.glob("*.dcm"))[0], stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert {n: str(s.SegmentLabel) for n, s in segments.items()} == {v: c.name for v, c in SEGMENTS.items()}
    for number, item in segments.items():
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == SEGMENTS[number].property_type.value
    colours = [tuple(s.RecommendedDisplayCIELabValue) for s in segments.values()]
    assert len(set(colours)) == 4  # each class its own colour


def test_scar_keeps_its_value_without_myocardium_and_an_empty_label_is_valid(tmp_path, rng):
    geometry = read_geometry(str(SERIES))
    scar_only = _label(geometry, rng, values=(SCAR,))
    back, _ = _round_trip(scar_only, SERIES, geometry, tmp_path)
    assert set(np.unique(back)) == {0, SCAR}
    assert np.array_equal(back, scar_only)
    empty = np.zeros(geometry.size, np.uint8)
    back, _ = _round_trip(empty, SERIES, geometry, tmp_path)
    assert not back.any()


def test_seg_segments_are_mapped_by_name_not_number(tmp_path, rng):
    """A viewer numbering segments its own way (OHIF numbers from 1 in its list order) still reads right."""
    geometry = read_geometry(str(SERIES))
    label = _label(geometry, rng)
    seg = label_to_seg(label, read_series(str(SERIES)), geometry, software_version="test")
    by_number = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    by_number[LV_CAVITY].SegmentLabel, by_number[MVO].SegmentLabel = "mvo", "lv_cavity"
    back = seg_to_label(seg, read_series(str(SERIES)), geometry)
    expected = label.copy()
    expected[label == LV_CAVITY], expected[label == MVO] = MVO, LV_CAVITY
    # MVO now stands where cavity was; the higher value wins only where segments overlap, and none do here.
    assert np.array_equal(back, expected)


def test_unknown_values_and_foreign_grids_are_refused(tmp_path, rng):
    geometry = read_geometry(str(SERIES))
    bad = _label(geometry, rng)
    bad[0, 0, 0] = 7
    with pytest.raises(InputError, match=r"label values \[7\]"):
        label_to_seg(bad, read_series(str(SERIES)), geometry, software_version="test")
    shifted = type(geometry)(
        geometry.size, geometry.spacing, tuple(o + 5.0 for o in geometry.origin), geometry.direction
    )
    with pytest.raises(InputError, match="does not lie on the series grid"):
        label_to_seg(_label(geometry, rng), read_series(str(SERIES)), shifted, software_version="test")


def test_display_colours_convert_like_dcmjs():
    # White is L*=100, a*=b*=0; dcmjs' CIELab of pure red (sRGB 255,0,0) is about L 53.2, a 80.1, b 67.2.
    assert rgb_to_dicom_lab((255, 255, 255)) == pytest.approx((65535, 32896, 32896), abs=2)
    lab = rgb_to_dicom_lab((255, 0, 0))
    assert lab[0] * 100 / 65535 == pytest.approx(53.24, abs=0.05)
    assert lab[1] * 255 / 65535 - 128 == pytest.approx(80.09, abs=0.1)
    assert lab[2] * 255 / 65535 - 128 == pytest.approx(67.20, abs=0.1)


def test_seg_of_a_real_ge_series_round_trips(real_data, tmp_path, rng):
    """dcmqi failed on this series (UIDs with leading zeros, partial dates); highdicom must not."""
    series = tmp_path / "one_phase"
    copy_first_phase(real_data / "sunnybrook" / "dicoms" / "SCD0000101", series)
    geometry = read_geometry(str(series))
    label = _label(geometry, rng)
    back, seg = _round_trip(label, series, geometry, tmp_path)
    assert np.array_equal(back, label)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == read_series(str(series))[0].SeriesInstanceUID


def test_a_slice_reversed_correction_is_suspected_and_a_real_edit_is_not(rng):
    geometry = read_geometry(str(SERIES))
    base = _label(geometry, rng)
    edited = base.copy()
    edited[10:14, 10:14, 1] = SCAR  # a small correction on one slice
    assert not reversed_slices_suspected(edited, base)
    assert reversed_slices_suspected(edited[:, :, ::-1], base)
    assert not reversed_slices_suspected(edited, np.zeros_like(base))  # nothing to compare with
