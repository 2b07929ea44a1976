"""The clinical scar report on phantoms with exactly known scar, anchors and levels, on real EMIDEC headers, and
on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from lib.caveats import assess
from lib.constants import LV_CAVITY, MYOCARDIUM, MYOCARDIUM_DENSITY_G_PER_ML, SCAR
from lib.label_io import Geometry, HeaderFacts, header_facts
from lib.metrics import scar_quantification
from lib.report.aha import transmurality_class
from lib.report.build import build_report
from lib.report.figures import CLASS_COLOURS, save_pdf
from lib.report.from_files import report_from_files
from tests.conftest import APP_DIR, ROOT

SPACING = (1.0, 1.0, 8.0)
SIZE = (128, 128, 9)
CENTRE_MM = (64.0, 64.0)
WALL_MM = 10.0
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Image axes turned a quarter: +i runs posterior, +j to the patient's right (LPS columns of the direction).
QUARTER_TURN = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
# Each segment's span of the angle from the anterior RV insertion toward the septum (Cerqueira et al. 2002).
SPANS = {
    **{s: ((300 + 60 * (s - 1)) % 360, (360 + 60 * (s - 1)) % 360 or 360) for s in range(1, 7)},
    **{s: ((300 + 60 * (s - 7)) % 360, (360 + 60 * (s - 7)) % 360 or 360) for s in range(7, 13)},
    13: (285, 375),
    14: (15, 105),
    15: (105, 195),
    16: (195, 285),
}
# Scar depth (share of the wall from the endocardium) per segment: the middle of each Kim class, all used.
DEPTH = {1: 0.875, 2: 0.625, 3: 0.375, 4: 0.125, 5: 0.0, 6: 0.0, 7: 0.625, 8: 0.875, 9: 0.125, 10: 0.0,
         11: 0.375, 12: 0.0, 13: 0.875, 14: 0.375, 15: 0.0, 16: 0.125}  # fmt: skip
CLASS_OF_DEPTH = {0.0: "0", 0.125: "1-25", 0.375: "26-50", 0.625: "51-75", 0.875: "76-100"}


def _in_span(phi: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    lo, hi = span
    return (np.mod(phi - lo, 360.0) < (hi - lo)) if hi - lo < 360 else np.ones_like(phi, bool)


def make_aha_phantom(
    insertion_deg: float, septal_sense: int, *, base_first: bool = False, rv: bool = False, spacing=SPACING
):
    """Noise-free LV whose scar depth per AHA segment is :data:`DEPTH`, with the anchor at ``insertion_deg``.

    Apex first by default: with the identity LPS direction of the tests the slices then run superior, from
    the apex toward the base, as in a patient.

    Returns (image, label, rv mask or None, exact scar mass in g, exact grey-zone voxels).
    """
    i, j = np.meshgrid(np.arange(SIZE[0]), np.arange(SIZE[1]), indexing="ij")
    centre = (SIZE[0] / 2 * spacing[0], SIZE[1] / 2 * spacing[1])  # the grid's middle, whatever the spacing
    u, v = i * spacing[0] - centre[0], j * spacing[1] - centre[1]
    radius = np.hypot(u, v)
    phi = np.mod(septal_sense * (np.degrees(np.arctan2(v, u)) - insertion_deg), 360.0)
    label = np.zeros(SIZE, np.uint8)
    rv_mask = np.zeros(SIZE, bool)
    scar_mass = 0.0
    n = SIZE[2]
    for k in range(n):
        level_index = k if base_first else n - 1 - k
        level = ("basal", "mid", "apical")[level_index // 3]
        r_in = 26.0 - 1.5 * level_index  # the ventricle tapers toward the apex
        r_out = r_in + WALL_MM
        plane = np.zeros(SIZE[:2], np.uint8)
        plane[radius < r_in] = LV_CAVITY
        wall = (radius >= r_in) & (radius < r_out)
        plane[wall] = MYOCARDIUM
        segments = range(1, 7) if level == "basal" else range(7, 13) if level == "mid" else range(13, 17)
        for s in segments:
            depth = DEPTH[s]
            inside = _in_span(phi, SPANS[s])
            plane[wall & inside & (radius < r_in + depth * WALL_MM)] = SCAR
            width = np.radians(SPANS[s][1] - SPANS[s][0])
            scar_mass += width / 2 * ((r_in + depth * WALL_MM) ** 2 - r_in**2) * spacing[2] / 1000.0
        label[..., k] = plane
        if rv:
            rv_mask[..., k] = (radius > r_out + 2) & (radius < r_out + 14) & _in_span(phi, (0.0, 120.0))
    # Signal: remote myocardium 90/110 on a checkerboard (mean 100, SD 10), core scar 300, and the outer half of
    # segment 1's scar (the wavefront's edge) 115: grey zone, within 3 SD of remote.
    image = np.where((i + j) % 2 == 0, 90.0, 110.0)[..., None] * (label == MYOCARDIUM)
    image = image + 300.0 * (label == SCAR) + 400.0 * (label == LV_CAVITY)
    grey = np.zeros(SIZE, bool)
    basal = range(0, 3) if base_first else range(n - 3, n)
    for k in basal:
        r_in = 26.0 - 1.5 * (k if base_first else n - 1 - k)
        grey[..., k] = (label[..., k] == SCAR) & _in_span(phi, SPANS[1]) & (radius >= r_in + 0.5 * DEPTH[1] * WALL_MM)
    image[grey] = 115.0
    return image.astype(np.float32), label, (rv_mask if rv else None), scar_mass * MYOCARDIUM_DENSITY_G_PER_ML, grey


RECORDED = HeaderFacts(spacing_recorded=True, orientation_recorded=True)


def _report(label, *, direction=IDENTITY, image=None, rv=None, facts=RECORDED, spacing=SPACING):
    geometry = Geometry(size=label.shape, spacing=spacing, origin=(0.0, 0.0, 0.0), direction=direction)
    assessed = assess(
        scar_quantification(label, spacing),
        heart_found=True,
        inversion_recovery=True,
        mvo_validation="reader",
        spacing_recorded=facts.spacing_recorded,
    )
    return build_report(label, geometry, facts, assessed, image=image, rv=rv)


def _classes(report) -> dict[int, str]:
    return {s["segment"]: s["transmurality_class"] for s in report["aha"]["segments"]}


EXPECTED_CLASSES = {s: CLASS_OF_DEPTH[d] for s, d in DEPTH.items()}


@pytest.mark.parametrize("spacing", [SPACING, (1.4, 1.4, 10.0), (0.7, 0.7, 6.0)])
def test_noise_free_phantom_mass_within_2_percent_and_every_segment_class_right(spacing):
    # Identity LPS: anterior is image angle 270, the septum (patient right) at 180, so the orientation anchor
    # is 240 with the septum at decreasing image angle.
    image, label, _, scar_mass, grey = make_aha_phantom(240.0, -1, spacing=spacing)
    report = _report(label, image=image, spacing=spacing)
    assert report["aha"]["anchor"]["source"] == "patient_orientation"
    assert report["aha"]["anchor"]["anterior_insertion_image_deg"] == pytest.approx(240.0, abs=0.1)
    assert report["study"]["scar_mass_g"] == pytest.approx(scar_mass, rel=0.02)
    assert _classes(report) == EXPECTED_CLASSES
    for segment in report["aha"]["segments"]:
        assert segment["transmural_extent_percent"] == pytest.approx(100 * DEPTH[segment["segment"]], abs=6)
    assert report["aha"]["levels"] == {"basal": [6, 7, 8], "mid": [3, 4, 5], "apical": [0, 1, 2]}
    assert report["aha"]["segments_over_50_percent_transmural"] == sum(d > 0.5 for d in DEPTH.values())
    voxel_g = np.prod(spacing) / 1000 * MYOCARDIUM_DENSITY_G_PER_ML
    assert report["grey_zone"]["mass_g"] == pytest.approx(grey.sum() * voxel_g, abs=0.01)
    assert report["grey_zone"]["remote_sd_signal"] == pytest.approx(10.0, abs=0.1)
    # Basal slice: segment 1's scar is 87.5 % deep. A single chord's share is only as fine as the pixels (the
    # 1.25 mm of myocardium left is about one pixel), so the maximum is bounded, not pinned.
    assert 80 <= report["slices"][8]["max_transmurality_percent"] <= 100


def test_rv_label_anchor_is_the_known_insertion_and_places_the_segments():
    # The phantom's anterior RV insertion at image angle 200; the header orientation alone would say 240.
    image, label, rv, _, _ = make_aha_phantom(200.0, -1, rv=True)
    with_rv = _report(label, image=image, rv=rv)
    assert with_rv["aha"]["anchor"]["source"] == "rv_label"
    assert with_rv["aha"]["anchor"]["anterior_insertion_image_deg"] == pytest.approx(200.0, abs=0.5)
    # A tenth of a degree moves the pixels that sit on a segment border: a scar-free segment may take a
    # sliver of its neighbour's scar, but no more.
    for segment in with_rv["aha"]["segments"]:
        depth = DEPTH[segment["segment"]]
        assert segment["transmural_extent_percent"] == pytest.approx(100 * depth, abs=6 if depth else 1)
        if depth:
            assert segment["transmurality_class"] == EXPECTED_CLASSES[segment["segment"]]
    without = _report(label, image=image)
    assert without["aha"]["anchor"]["anterior_insertion_image_deg"] == pytest.approx(240.0, abs=0.1)
    assert _classes(without) != EXPECTED_CLASSES  # 40 degrees off: the anchor matters


def test_orientation_anchor_follows_the_header_direction():
    # Quarter-turned axes: anterior (-y) is now -i (image angle 180) and patient right (-x) is +j (90).
    image, label, _, _, _ = make_aha_phantom(150.0, -1)
    report = _report(label, image=image, direction=QUARTER_TURN)
    assert report["aha"]["anchor"]["anterior_insertion_image_deg"] == pytest.approx(150.0, abs=0.1)
    assert report["aha"]["anchor"]["septal_sense"] == -1
    assert _classes(report) == EXPECTED_CLASSES


def test_base_is_found_from_the_taper_and_a_contradicting_header_gives_no_segments():
    image, label, _, _, _ = make_aha_phantom(240.0, -1)
    report = _report(label, image=image)
    assert report["aha"]["base"] == {**report["aha"]["base"], "first_slice_is_base": False, "source": "anatomy"}
    assert report["aha"]["levels"]["basal"] == [6, 7, 8]
    assert "orientation_disagrees_with_anatomy" not in {w["code"] for w in report["warnings"]}
    # The same header on a stack that runs the other way: identity LPS says the first slice is apical, the
    # taper says basal. The levels follow the taper, but a header wrong about its slice direction is not
    # trusted for anterior and septal either.
    image, label, rv, _, _ = make_aha_phantom(200.0, -1, base_first=True, rv=True)
    flipped = _report(label, image=image, rv=rv)
    assert flipped["aha"]["base"]["first_slice_is_base"] is True
    assert "orientation_disagrees_with_anatomy" in {w["code"] for w in flipped["warnings"]}
    assert flipped["aha"]["segments"] is None
    assert "contradicts the LV's taper" in flipped["null_reasons"]["aha.segments"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (0.4, "0"),
        (0.6, "1-25"),
        (25.4, "1-25"),
        (25.6, "26-50"),
        (50.0, "26-50"),
        (75.0, "51-75"),
        (100, "76-100"),
    ],  # fmt: skip
)
def test_transmurality_classes_follow_kim(value, expected):
    assert transmurality_class(value) == expected


def test_empty_myocardium_reports_what_cannot_be_computed():
    label = np.zeros(SIZE, np.uint8)
    label[60:68, 60:68, :] = LV_CAVITY  # a cavity without wall
    report = _report(label, image=np.ones(SIZE, np.float32))
    assert report["study"]["lv_myocardial_mass_g"] == 0
    assert report["study"]["scar_percent_lv_mass"] is None
    assert "scar_percent_lv_mass" in report["null_reasons"]
    assert report["aha"]["segments"] is None
    assert "3" in report["null_reasons"]["aha.segments"]
    assert report["grey_zone"]["percent_lv_mass"] is None


def test_single_slice_gives_no_lv_mass_and_no_segments():
    image, label, _, _, _ = make_aha_phantom(240.0, -1)
    report = _report(label[..., 4:5], image=image[..., 4:5])
    assert report["study"]["lv_myocardial_mass_g"] is None
    assert report["grey_zone"]["percent_lv_mass"] is None and report["grey_zone"]["percent_of_scar"] is not None
    assert report["aha"]["segments"] is None
    assert report["null_reasons"]["aha.segments"].startswith("1 slice(s) with LV wall")
    assert report["slices"][0]["max_transmurality_percent"] is not None  # a slice's own figures still stand


def test_scar_outside_the_wall_withholds_every_scar_figure():
    image, label, _, _, _ = make_aha_phantom(240.0, -1)
    label[2:6, 2:6, 3] = SCAR  # a bright blob far from the LV
    report = _report(label, image=image)
    assert report["study"]["scar_mass_g"] is None
    assert report["grey_zone"]["mass_g"] is None
    assert report["aha"]["segments"] is None
    assert report["slices"][3]["mean_transmurality_percent"] is None
    assert "outside the LV wall ring on slice(s) [3]" in report["null_reasons"]["scar_mass_g"]
    # The blob is wall-labelled too: no wall figure counts it; the cavity's does not touch it.
    assert report["study"]["lv_myocardial_mass_g"] is None
    assert report["study"]["lv_cavity_volume_ml"] is not None


def test_scar_alone_on_a_slice_is_outside_the_wall_but_a_transmural_arc_is_not():
    image, label, _, _, _ = make_aha_phantom(240.0, -1)
    alone = label.copy()
    alone[..., 0] = 0
    alone[2:6, 2:6, 0] = SCAR  # the only wall-labelled piece of its slice, far from any LV
    assert _report(alone, image=image)["null_reasons"]["scar_mass_g"].startswith("16 scar/MVO voxel(s)")
    # A ring cut by two gaps whose arc between them is all scar: transmural infarct, bordering the cavity.
    i, j = np.meshgrid(np.arange(SIZE[0]), np.arange(SIZE[1]), indexing="ij")
    angle = np.mod(np.degrees(np.arctan2(j - CENTRE_MM[1], i - CENTRE_MM[0])), 360)
    arc = label.copy()
    wall = np.isin(arc[..., 4], (MYOCARDIUM, SCAR))
    arc[..., 4][wall & ((angle < 6) | ((angle > 40) & (angle < 46)))] = 0
    arc[..., 4][wall & (angle >= 6) & (angle <= 40)] = SCAR
    report = _report(arc, image=image)
    assert report["study"]["scar_mass_g"] is not None and "scar_outside_wall" not in str(report["warnings"])


def test_missing_spacing_withholds_masses_but_not_shares():
    image, label, _, _, _ = make_aha_phantom(240.0, -1)
    report = _report(label, image=image, facts=HeaderFacts(False, True))
    assert report["study"]["scar_mass_g"] is None and report["study"]["lv_myocardial_mass_g"] is None
    assert report["study"]["scar_percent_lv_mass"] is not None
    assert report["grey_zone"]["mass_g"] is None and report["grey_zone"]["percent_of_scar"] is not None
    assert all(s["wall_mass_g"] is None for s in report["aha"]["segments"])
    assert "no_spacing" in {w["code"] for w in report["warnings"]}


def test_missing_orientation_gives_no_anchor():
    image, label, rv, _, _ = make_aha_phantom(200.0, -1, rv=True)
    report = _report(label, image=image, rv=rv, facts=HeaderFacts(True, False))
    assert report["aha"]["anchor"]["source"] is None
    assert report["aha"]["segments"] is None
    assert "no patient orientation" in report["null_reasons"]["aha.segments"]


def _nifti(path, array, *, pixdim=(1.0, 1.0, 8.0), units=True, codes=True):
    # RAS affine of an identity LPS grid, as the in-memory phantoms are read; no affine writes no orientation.
    image = nib.Nifti1Image(array, np.diag([-pixdim[0], -pixdim[1], pixdim[2], 1.0]) if codes else None)
    if not units:
        image.header.set_xyzt_units(xyz=0)
    image.header["pixdim"][1:4] = pixdim
    nib.save(image, str(path))
    return str(path)


def test_header_facts_tell_recorded_from_default(tmp_path):
    data = np.zeros((40, 40, 3), np.int16)
    assert header_facts(_nifti(tmp_path / "a.nii.gz", data)) == HeaderFacts(True, True)
    bare = _nifti(tmp_path / "b.nii.gz", data, pixdim=(1.0, 1.0, 1.0), units=False, codes=False)
    assert header_facts(bare) == HeaderFacts(False, False)


def test_emidec_header_trap_does_not_shrink_the_report(real_data):
    case = real_data / "emidec_nifti" / "samplePositive"
    report, label = report_from_files(
        str(case / "Images" / "samplePositive.nii.gz"), str(case / "Contours" / "samplePositive.nii.gz")
    )
    voxel_g = 1.40625 * 1.40625 * 13.0 / 1000 * MYOCARDIUM_DENSITY_G_PER_ML  # pixdim, not the unit sform
    assert report["spacing_mm"] == pytest.approx([1.40625, 1.40625, 13.0])
    assert report["study"]["lv_myocardial_mass_g"] == pytest.approx(np.isin(label, (2, 3, 4)).sum() * voxel_g, 0.01)
    assert report["study"]["scar_mass_g"] == pytest.approx(np.isin(label, (3, 4)).sum() * voxel_g, abs=0.01)
    assert report["study"]["lv_myocardial_mass_g"] > 100  # a real LV; the 1 mm trap would give about 8 g
    wall_mm2 = sum(s["lv_wall_area_mm2"] for s in report["slices"])
    assert wall_mm2 * 13.0 / 1000 * MYOCARDIUM_DENSITY_G_PER_ML == pytest.approx(
        report["study"]["lv_myocardial_mass_g"], abs=0.2
    )
    # Its sform is a placeholder (unit scales, origin 0): no patient orientation, so no segments, said so.
    assert report["header"]["orientation_recorded"] is False
    assert report["aha"]["segments"] is None
    assert "placeholder sform" in report["null_reasons"]["aha.segments"]
    assert report["aha"]["base"]["first_slice_is_base"] is False  # the taper alone: slice 0 is apical


def test_bullseye_draws_each_class_where_the_standard_view_puts_its_segment(tmp_path):
    import matplotlib.pyplot as plt

    from lib.report.figures import draw_bullseye

    image, label, _, _, _ = make_aha_phantom(240.0, -1)
    report = _report(label, image=image)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    draw_bullseye(ax, report)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]

    def colour_at(radius: float, clock_deg: float) -> np.ndarray:
        """RGB at a radius of the disc and an angle anticlockwise from 12 o'clock (the bullseye's own words)."""
        angle = np.radians(90.0 + clock_deg)
        x, y = ax.transData.transform((radius * np.cos(angle), radius * np.sin(angle)))
        return pixels[int(round(pixels.shape[0] - y)), int(round(x))]

    def rgb(name: str) -> np.ndarray:
        return np.array([int(CLASS_COLOURS[name][k : k + 2], 16) for k in (1, 3, 5)])

    # Viewed from the apex: segment 1 at 12 o'clock, the septum (2, 3 and 8, 9) on the left, the segments
    # numbered anticlockwise; apical 14 (septal) at 9 o'clock.
    # Points sit 18 degrees off each segment's middle, clear of its printed number and extent.
    expected = {(0.9, 18.0): 1, (0.9, 78.0): 2, (0.9, 138.0): 3, (0.9, 198.0): 4, (0.9, 258.0): 5,
                (0.65, 78.0): 8, (0.65, 138.0): 9, (0.4, 108.0): 14, (0.4, 288.0): 16}  # fmt: skip
    for (radius, clock), segment in expected.items():
        assert np.allclose(colour_at(radius, clock), rgb(EXPECTED_CLASSES[segment]), atol=3), (segment, clock)
    plt.close(fig)
    pdf = save_pdf(report, image, label, str(tmp_path / "report.pdf"), title="phantom")
    with open(pdf, "rb") as f:
        assert f.read(5) == b"%PDF-"


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(APP_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "lib.report", "report", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_cli_prints_the_report_and_writes_png_and_pdf(tmp_path):
    image, label, _, _, _ = make_aha_phantom(240.0, -1)
    image_path = _nifti(tmp_path / "study.nii.gz", image)
    label_path = _nifti(tmp_path / "label.nii.gz", label)
    done = _cli(image_path, label_path, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert _classes(printed) == EXPECTED_CLASSES
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == printed
    assert (tmp_path / "out" / "bullseye.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "report.pdf").read_bytes()[:5] == b"%PDF-"


def test_cli_refuses_an_rv_label_on_a_shifted_grid_and_an_unwritable_out(tmp_path):
    image, label, rv, _, _ = make_aha_phantom(200.0, -1, rv=True)
    image_path = _nifti(tmp_path / "study.nii.gz", image)
    label_path = _nifti(tmp_path / "label.nii.gz", label)
    shifted = nib.Nifti1Image(rv.astype(np.uint8), np.diag([-1.0, -1.0, 8.0, 1.0]) @ _translation(50.0))
    nib.save(shifted, str(tmp_path / "rv.nii.gz"))
    done = _cli(image_path, label_path, "--rv", str(tmp_path / "rv.nii.gz"))
    assert done.returncode == 2 and "RV label grid differs from its image" in done.stderr
    (tmp_path / "file").write_text("")
    done = _cli(image_path, label_path, "--out", str(tmp_path / "file" / "sub"))
    assert done.returncode == 2 and "cannot write the report" in done.stderr and "Traceback" not in done.stderr


def _translation(mm: float) -> np.ndarray:
    shift = np.eye(4)
    shift[0, 3] = mm
    return shift


def test_cli_refuses_a_label_on_another_grid_with_a_reason(tmp_path):
    image, label, _, _, _ = make_aha_phantom(240.0, -1)
    image_path = _nifti(tmp_path / "study.nii.gz", image)
    label_path = _nifti(tmp_path / "label.nii.gz", label[:, :, :5])
    done = _cli(image_path, label_path)
    assert done.returncode == 2
    assert "label grid differs from its image" in done.stderr
    assert done.stdout == ""


# Segments each coronary artery usually supplies (Cerqueira et al. 2002, figure 2; apex cap left out).
TERRITORY_SEGMENTS = {"LAD": {1, 2, 7, 8, 13, 14}, "RCA": {3, 4, 9, 10, 15}, "LCx": {5, 6, 11, 12, 16}}


def test_sample_studies_put_each_infarct_in_its_coronary_territory():
    """The sample phantoms draw each infarct in a coronary territory; their headers place a standard short-axis
    stack in the patient. Without an RV label, the orientation anchor must still put most of the scar mass in
    the segments of that territory, and the levels must agree with the header."""
    manifest = json.loads((ROOT / "sample-data" / "manifest.json").read_text())
    checked = 0
    for study in manifest:
        if not study["final_label"] or not study["territory"]:
            continue
        report, _ = report_from_files(
            str(ROOT / "sample-data" / f"{study['id']}.nii.gz"),
            str(ROOT / "sample-data" / "labels" / "final" / f"{study['id']}.nii.gz"),
        )
        assert report["aha"]["base"]["first_slice_is_base"] is True
        assert "orientation_disagrees_with_anatomy" not in {w["code"] for w in report["warnings"]}
        scar = {s["segment"]: s["scar_mass_g"] for s in report["aha"]["segments"]}
        inside = sum(scar[s] for s in TERRITORY_SEGMENTS[study["territory"]])
        assert inside > 0.6 * sum(scar.values()), (study["id"], study["territory"], scar)
        checked += 1
    assert checked >= 5
