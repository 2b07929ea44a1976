"""The calibrated rules on constructed labels with known answers (lib/calibration.py)."""

import math

import numpy as np
import pytest

from lib.calibration import (
    Calibration,
    calibrated_figures,
    conformal_quantile,
    fit_presence,
    grow_enhanced_scar,
    load_shipped,
    remove_scar_specks,
    scar_contrast_sd,
    scar_percent_lv,
)
from lib.caveats import assess
from lib.constants import LV_CAVITY, MVO, MYOCARDIUM, SCAR
from lib.metrics import scar_quantification


def _heart(scar_pixels: int = 0, speck: bool = False) -> np.ndarray:
    """A 64x64x4 ring of myocardium round a cavity; scar fills the first ``scar_pixels`` wall pixels of slice 1."""
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    plane = np.zeros((64, 64), np.uint8)
    plane[r < 20] = MYOCARDIUM
    plane[r < 12] = LV_CAVITY
    label = np.repeat(plane[..., None], 4, axis=-1)
    wall = np.argwhere(label[..., 1] == MYOCARDIUM)
    wall = wall[np.argsort(np.arctan2(wall[:, 0] - 32, wall[:, 1] - 32))]  # contiguous arc
    for y, x in wall[:scar_pixels]:
        label[y, x, 1] = SCAR
    if speck:  # a 2x2 speck on slice 2, in the wall
        label[32 + 15 : 32 + 17, 31:33, 2] = MVO
    return label


def _lge(label: np.ndarray, *, enhanced: bool = True, seed: int = 0) -> np.ndarray:
    """Intensities for ``label``: blood 300, myocardium 100 +- 10, scar 250 when ``enhanced`` (else as myocardium)."""
    noise = np.random.default_rng(seed).normal(0.0, 10.0, label.shape)
    image = np.where(label == LV_CAVITY, 300.0, 20.0) + noise
    image[label == MYOCARDIUM] += 80.0
    image[np.isin(label, (SCAR, MVO))] += 230.0 if enhanced else 80.0
    return image.astype(np.float32)


def _calibration(**overrides) -> Calibration:
    values = {
        "min_scar_area_mm2": 10.0,
        "presence_intercept": -2.0,
        "presence_slope": 2.0,  # p = 0.5 at log(0.1 + s) = 1, s = e - 0.1 = 2.6 %
        "interval_level": 0.9,
        "interval_q_percent": 2.0,
        "interval_q_mass": 3.0,
    }
    return Calibration(**{**values, **overrides})


def test_a_speck_under_the_area_becomes_myocardium_at_its_real_spacing():
    label = _heart(scar_pixels=200, speck=True)
    cleaned = remove_scar_specks(label, (1.5, 1.5, 8.0), 10.0)  # the speck is 4 x 2.25 = 9 mm^2
    assert (cleaned[..., 2] == MVO).sum() == 0
    assert (cleaned[..., 2] == MYOCARDIUM).sum() == np.isin(label[..., 2], (MYOCARDIUM, MVO)).sum()
    assert (cleaned[..., 1] == SCAR).sum() == 200  # the real scar stays
    kept = remove_scar_specks(label, (2.0, 2.0, 8.0), 10.0)  # 4 x 4 = 16 mm^2: not a speck there
    assert (kept[..., 2] == MVO).sum() == 4
    assert np.array_equal(remove_scar_specks(label, (1.5, 1.5, 8.0), 0.0), label)


def test_a_study_read_as_scar_free_shows_no_scar_and_a_scarred_one_keeps_it():
    calibration = _calibration()
    small = _heart(scar_pixels=10)  # under 1 % of the wall
    reading = calibration.finalise(small, (1.5, 1.5, 8.0), _lge(small))
    assert not reading.present and reading.probability < 0.5
    assert not np.isin(reading.label, (SCAR, MVO)).any()
    assert (reading.label == MYOCARDIUM).sum() == np.isin(small, (MYOCARDIUM, SCAR)).sum()
    large = _heart(scar_pixels=300)
    reading = calibration.finalise(large, (1.5, 1.5, 8.0), _lge(large))
    assert reading.present and reading.probability > 0.9
    assert (reading.label == SCAR).sum() == 300


def test_presence_model_learns_which_side_is_scar():
    percents = [0.0, 0.2, 0.5, 1.0, 0.3, 8.0, 12.0, 20.0, 15.0, 6.0]
    contrasts = [0.0, 0.5, 1.0, 0.8, 0.2, 3.0, 4.0, 3.5, 2.5, 3.2]
    truth = [False] * 5 + [True] * 5
    intercept, slope, contrast_slope, contrast_range = fit_presence(percents, contrasts, truth)
    calibration = _calibration(
        presence_intercept=intercept,
        presence_slope=slope,
        presence_contrast_slope=contrast_slope,
        presence_contrast_range=contrast_range,
    )
    assert slope > 0 and contrast_slope > 0 and contrast_range == [0.0, 4.0]
    assert [calibration.scar_present(p, c)[0] for p, c in zip(percents, contrasts, strict=True)] == truth
    # A contrast far beyond the fitted ones (a sequence nulling myocardium far better) is clipped, not extrapolated.
    assert calibration.scar_present(0.5, 40.0) == calibration.scar_present(0.5, 4.0)


def test_scar_contrast_is_in_sds_of_the_rest_of_the_wall_whatever_the_intensity_scale():
    heart = _heart(scar_pixels=300)
    image = _lge(heart)
    contrast = scar_contrast_sd(image, heart)
    assert contrast == pytest.approx(150.0 / 10.0, rel=0.1)  # scar 250 over myocardium 100, SD 10
    assert scar_contrast_sd(3.0 * image + 40.0, heart) == pytest.approx(contrast, rel=1e-6)  # float32 image
    assert abs(scar_contrast_sd(_lge(heart, enhanced=False), heart)) < 1.0  # not enhanced: no contrast
    assert scar_contrast_sd(image, _heart(scar_pixels=0)) == 0.0  # no scar
    only_mvo = np.where(heart == SCAR, MVO, heart)
    assert scar_contrast_sd(image, only_mvo) == 0.0  # MVO, dark by definition, is not the enhanced scar
    with pytest.raises(ValueError, match="one grid"):
        scar_contrast_sd(image[..., :2], heart)


def test_enhanced_wall_joins_the_scar_it_touches_and_only_that():
    drawn = _heart(scar_pixels=100)  # the network's scar: the first 100 pixels of the arc, slice 1
    truth = _heart(scar_pixels=160)  # the enhanced infarct is larger
    image = _lge(truth)
    far = (drawn == MYOCARDIUM) & (np.arange(4) == 3)[None, None, :]  # slice 3: bright, touching no scar
    far &= np.mgrid[:64, :64][0][..., None] > 45
    image[far] += 230.0
    grown = grow_enhanced_scar(drawn, image, 0.5)  # half-way between wall (100) and scar (250)
    assert (grown[truth == SCAR] == SCAR).all()  # grown to the enhanced extent
    assert ((grown == SCAR) & (truth != SCAR)).sum() == 0  # nothing beyond it (175 is 7.5 noise SDs up)
    assert not (grown[far] == SCAR).any()  # enhanced, but not connected to scar: left as it was
    assert np.array_equal(grown[drawn != MYOCARDIUM], drawn[drawn != MYOCARDIUM])  # only myocardium changes
    assert np.array_equal(grow_enhanced_scar(drawn, image, None), drawn)
    assert np.array_equal(grow_enhanced_scar(_heart(0), image, 0.5), _heart(0))  # nothing to grow from


def test_growth_stays_on_the_slices_where_scar_was_drawn():
    # The infarct is enhanced on slices 0-2 (right over one another), the network drew it on slice 1 only.
    drawn = _heart(scar_pixels=100)
    infarct = np.where(_heart(scar_pixels=100)[..., 1:2] == SCAR, SCAR, _heart(0))
    infarct[..., 3] = _heart(0)[..., 3]
    grown = grow_enhanced_scar(drawn, _lge(infarct), 0.5)
    assert (grown[..., 1] == SCAR).sum() >= 100
    assert not np.isin(grown[..., [0, 2, 3]], (SCAR, MVO)).any()  # 6-13 mm away: no growth across slices


def test_a_wall_at_one_value_grows_nothing_and_has_no_contrast():
    # More than half the wall at one value (a clipped or coarsely quantised export): its MAD is 0, so a
    # contrast in robust SDs is undefined (0), and growth, a level between medians, takes only what is
    # half-way to the scar, not every voxel above the median.
    drawn = _heart(scar_pixels=50)
    image = np.where(drawn == MYOCARDIUM, 100.0, 300.0).astype(np.float32)
    image[(drawn == MYOCARDIUM) & (np.mgrid[:64, :64][0] < 20)[..., None]] = 120.0  # a brighter minority
    assert np.array_equal(grow_enhanced_scar(drawn, image, 0.5), drawn)
    assert scar_contrast_sd(image, drawn) == 0.0


def test_a_scar_that_is_not_enhanced_reads_as_no_scar():
    # The same 4 % of the wall labelled scar: read as scar where it is bright, as myocardium where it is not.
    calibration = _calibration(presence_intercept=-6.0, presence_slope=2.0, presence_contrast_slope=1.0)
    heart = _heart(scar_pixels=150)
    bright = calibration.finalise(heart, (1.5, 1.5, 8.0), _lge(heart))
    assert bright.present and (bright.label == SCAR).sum() == 150 and bright.contrast_sd > 10
    dull = calibration.finalise(heart, (1.5, 1.5, 8.0), _lge(heart, enhanced=False))
    assert not dull.present and not np.isin(dull.label, (SCAR, MVO)).any()


def test_growth_follows_the_decision_and_only_in_a_scarred_study():
    calibration = _calibration(
        presence_intercept=-6.0, presence_slope=2.0, presence_contrast_slope=1.0, scar_growth_fraction=0.5
    )
    drawn, infarct = _heart(scar_pixels=150), _heart(scar_pixels=220)
    grown = calibration.finalise(drawn, (1.5, 1.5, 8.0), _lge(infarct))
    assert grown.present and (grown.label[infarct == SCAR] == SCAR).all()  # grown to the enhanced extent
    assert ((grown.label == SCAR) & (infarct != SCAR)).sum() == 0
    # A faint speck the decision rejects, next to an enhanced region: no growth can revive it.
    speck = _heart(scar_pixels=8)  # 18 mm^2: over the speck area, so only the decision can remove it
    image = _lge(infarct)
    image[speck == SCAR] = 115.0  # 1.5 noise SDs over the wall: a contrast the model reads as no scar
    reading = calibration.finalise(speck, (1.5, 1.5, 8.0), image)
    assert not reading.present and not np.isin(reading.label, (SCAR, MVO)).any()


def test_conformal_quantile_is_the_finite_sample_rank():
    assert conformal_quantile([float(v) for v in range(1, 10)], 0.9) == 9.0  # ceil(10 * 0.9) = 9th of 9
    assert conformal_quantile([float(v) for v in range(1, 20)], 0.9) == 18.0  # ceil(20 * 0.9) = 18th
    assert conformal_quantile([1.0, 2.0, 3.0], 0.9) == math.inf  # too few scores for 90 %


def test_normalised_conformal_intervals_cover_new_cases_at_the_level():
    rng = np.random.default_rng(0)

    def cases(n):
        spread = rng.uniform(0.0, 4.0, n)
        predicted = rng.uniform(0.0, 40.0, n)
        return predicted, spread, predicted + (spread + 1.0) * rng.normal(0, 1.5, n)

    predicted, spread, truth = cases(300)
    q = conformal_quantile(list(np.abs(truth - predicted) / (spread + 1.0)), 0.9)
    calibration = _calibration(interval_q_percent=q, interval_q_mass=q)
    predicted, spread, truth = cases(4000)
    covered = [
        lo <= t <= hi
        for p, s, t in zip(predicted, spread, truth, strict=True)
        for lo, hi in [calibration.percent_interval(p, s, present=True)]
        if p - q * (s + 1) >= 0  # unclipped: clipping at 0 % only widens the interval
    ]
    assert 0.87 <= np.mean(covered) <= 0.94


def test_intervals_are_clipped_and_the_mass_one_follows_lv_mass():
    calibration = _calibration()
    assert calibration.percent_interval(1.0, 0.5, present=True) == [0.0, 4.0]  # 1 -+ 2 x 1.5
    assert calibration.percent_interval(99.0, 0.0, present=True) == [97.0, 100.0]
    assert calibration.mass_interval(10.0, 1.0, 120.0, present=True) == [4.8, 19.2]  # 120 g x (10 -+ 3 x 2) %


def test_a_study_read_as_scar_free_takes_its_own_groups_quantiles():
    calibration = _calibration(interval_q_percent_no_scar=5.0, interval_q_mass_no_scar=6.0)
    assert calibration.percent_interval(0.0, 0.0, present=False) == [0.0, 5.0]
    assert calibration.mass_interval(0.0, 0.0, 100.0, present=False) == [0.0, 6.0]
    assert calibration.percent_interval(0.0, 0.0, present=True) == [0.0, 2.0]
    assert _calibration().percent_interval(0.0, 0.0, present=False) == [0.0, 2.0]  # no group quantiles: pooled


def _assessed(label, **kwargs):
    figures = scar_quantification(label, (1.5, 1.5, 8.0))
    return assess(
        figures,
        heart_found=kwargs.get("heart_found", True),
        inversion_recovery=kwargs.get("inversion_recovery"),
        mvo_validation=None,
    )


def test_the_answer_carries_presence_and_intervals_or_says_why_not():
    calibration = _calibration()
    heart = _heart(scar_pixels=300)
    reading = calibration.finalise(heart, (1.5, 1.5, 8.0), _lge(heart))
    assessed = _assessed(reading.label)
    out = calibrated_figures(calibration, reading, assessed, 0.5)
    assert out["scar_present"]["value"] is True and 0.9 < out["scar_present"]["probability"] <= 1
    assert "under 10 mm^2" in out["scar_present"]["rule"]
    no_specks = calibrated_figures(_calibration(min_scar_area_mm2=0.0), reading, _assessed(reading.label), 0.5)
    assert no_specks["scar_present"]["rule"].startswith("a logistic model of log(0.1 + scar % LV)")
    growing = calibrated_figures(_calibration(scar_growth_fraction=0.5), reading, _assessed(reading.label), 0.5)
    assert growing["scar_present"]["rule"].endswith("median and connected to the scar on its slice made scar")
    assert "made scar" not in out["scar_present"]["rule"]  # growth off: not named
    assert out["scar_present"]["scar_contrast_sd"] == round(reading.contrast_sd, 2) > 10
    low, high = out["scar_intervals"]["scar_percent_lv_mass"]
    assert low < assessed["scar_percent_lv_mass"] < high
    mass_low, mass_high = out["scar_intervals"]["scar_mass_g"]
    assert mass_low < assessed["scar_mass_g"] < mass_high

    cine = _assessed(reading.label, inversion_recovery=False)
    out = calibrated_figures(calibration, reading, cine, 0.5)
    assert out == {"scar_present": None, "scar_intervals": None}
    assert "inversion-recovery" in cine["null_reasons"]["scar_present"]

    few = scar_quantification(reading.label[..., :2], (1.5, 1.5, 8.0))
    few = assess(few, heart_found=True, inversion_recovery=None, mvo_validation=None)
    out = calibrated_figures(calibration, reading, few, 0.5)
    assert out["scar_present"] is not None and out["scar_intervals"]["scar_percent_lv_mass"] is None
    assert "slice" in few["null_reasons"]["scar_intervals.scar_percent_lv_mass"]

    none = _assessed(reading.label)
    out = calibrated_figures(None, None, none, None, unavailable="no calibration file at x")
    assert out == {"scar_present": None, "scar_intervals": None}
    assert none["null_reasons"]["scar_intervals"] == "no calibration file at x"


def test_a_missing_or_broken_calibration_file_is_reported_not_raised(tmp_path):
    assert load_shipped(tmp_path / "none.json") == (None, f"no calibration file at {tmp_path / 'none.json'}")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    calibration, problem = load_shipped(broken)
    assert calibration is None and "unreadable" in problem


def test_scar_percent_of_a_wall_free_label_is_undefined():
    assert scar_percent_lv(np.zeros((4, 4, 2), np.uint8)) is None
    assert scar_percent_lv(_heart(scar_pixels=0)) == 0.0


@pytest.mark.parametrize("field", ["min_scar_area_mm2", "interval_q_percent"])
def test_the_shipped_calibration_loads_with_its_cross_validation(field):
    calibration, problem = load_shipped()
    assert problem is None, problem
    assert getattr(calibration, field) >= 0
    assert {"scar_presence", "intervals", "lv_wall"} <= set(calibration.cross_validation)
