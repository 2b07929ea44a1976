"""Semi-automatic scar rules (lib/semiauto.py) on constructed hearts whose answer is known.

The heart: a 64x64x3 grid, a bright cavity disc (radius 10 voxels) and an annular wall (10-16 voxels)
of remote myocardium at 100 with Gaussian noise of SD 5; a wall sector, 0-90 degrees from the first
voxel axis towards the second, is enhanced to 200, through the wall or in its inner half only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lib.constants import LV_CAVITY, LV_WALL, MVO, MYOCARDIUM, SCAR
from lib.metrics import dice
from lib.semiauto import (
    METHODS,
    RemoteRegion,
    SemiAutoError,
    ewa_scar,
    fwhm_scar,
    nsd_scar,
    remote_region,
    wall_angles_deg,
)

SHAPE = (64, 64, 3)
CENTRE = (31.5, 31.5)  # the cavity disc's centroid, so the rules' LV centre is exactly here
R_CAVITY, R_MID, R_EPI = 10.0, 13.0, 16.0
BACKGROUND_I, CAVITY_I, REMOTE_I, ENHANCED_I = 20.0, 300.0, 100.0, 200.0
NOISE_SD = 5.0
SECTOR_DEG = (0.0, 90.0)

_rows, _cols = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
RADIUS = np.hypot(_rows - CENTRE[0], _cols - CENTRE[1])
ANGLE = np.degrees(np.arctan2(_cols - CENTRE[1], _rows - CENTRE[0])) % 360.0  # first axis towards second
CAVITY_2D = RADIUS < R_CAVITY
WALL_2D = (RADIUS >= R_CAVITY) & (RADIUS < R_EPI)


def _stack(mask_2d: np.ndarray) -> np.ndarray:
    return np.repeat(mask_2d[..., None], SHAPE[2], axis=2)


def _arc(start: float, stop: float, r_in: float = R_CAVITY, r_out: float = R_EPI) -> np.ndarray:
    """Wall voxels with angle in [start, stop) and radius in [r_in, r_out), on every slice: (H, W, D)."""
    return _stack(WALL_2D & (ANGLE >= start) & (ANGLE < stop) & (RADIUS >= r_in) & (RADIUS < r_out))


CAVITY, WALL = _stack(CAVITY_2D), _stack(WALL_2D)


def _label() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[CAVITY] = LV_CAVITY
    label[WALL] = MYOCARDIUM
    return label


def _image(enhanced: np.ndarray | None = None, *, noise_sd: float = NOISE_SD, seed: int = 0) -> np.ndarray:
    """Background, bright cavity and remote wall, ``enhanced`` at 200, plus noise of ``noise_sd`` everywhere."""
    image = np.full(SHAPE, BACKGROUND_I, np.float32)
    image[CAVITY] = CAVITY_I
    image[WALL] = REMOTE_I
    if enhanced is not None:
        image[enhanced] = ENHANCED_I
    if noise_sd:
        image += np.random.default_rng(seed).normal(0.0, noise_sd, SHAPE).astype(np.float32)
    return image


ENHANCED = {
    "transmural": _arc(*SECTOR_DEG),
    "subendocardial": _arc(*SECTOR_DEG, r_out=R_MID),
}


def _infarct(result) -> np.ndarray:
    return np.isin(result.label, (SCAR, MVO))


def _sector_of(region: RemoteRegion, k: int) -> np.ndarray:
    """The wall voxels of slice k inside the remote region's sector, computed here independently."""
    offset = (ANGLE - region.start_deg[k]) % 360.0
    return WALL_2D & (offset < region.width_deg)


# --- remote region -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ENHANCED))
def test_remote_sector_avoids_enhancement_and_has_remote_statistics(kind):
    enhanced = ENHANCED[kind]
    region = remote_region(_image(enhanced), _label())
    assert region.automatic and region.width_deg == 60.0
    for k in range(SHAPE[2]):
        sector = _sector_of(region, k)
        assert not (sector & enhanced[..., k]).any(), f"slice {k}: remote sector {region.start_deg[k]} overlaps scar"
        assert region.voxels[k] == sector.sum() >= 10
        assert region.mean[k] == pytest.approx(REMOTE_I, abs=2.0)
        assert region.sd[k] == pytest.approx(NOISE_SD, abs=1.0)


@pytest.mark.parametrize("start_deg, expected", [(180.0, 180.0), (540.0, 180.0), (-90.0, 270.0)])
def test_given_start_is_used_in_every_slice(start_deg, expected):
    image = _image(ENHANCED["transmural"])
    region = remote_region(image, _label(), start_deg=start_deg, width_deg=45.0)
    assert not region.automatic
    assert region.start_deg == [expected] * SHAPE[2] and region.width_deg == 45.0
    for k in range(SHAPE[2]):
        sector = _sector_of(region, k)
        assert region.voxels[k] == sector.sum()
        assert region.mean[k] == pytest.approx(float(image[..., k][sector].mean()), rel=1e-6)


def test_remote_given_as_start_and_width_reaches_the_rule():
    result = nsd_scar(_image(ENHANCED["transmural"]), _label(), remote=(200.0, 30.0))
    assert result.method["remote"]["start_deg"] == [200.0] * SHAPE[2]
    assert result.method["remote"]["width_deg"] == 30.0
    assert result.method["remote"]["definition"] == "the given wall sector"


@pytest.mark.parametrize("width_deg", [0.0, 9.9, 180.5, 360.0])
def test_remote_width_out_of_range_raises(width_deg):
    with pytest.raises(SemiAutoError, match="width must be 10-180 degrees"):
        remote_region(_image(), _label(), width_deg=width_deg)


@pytest.mark.parametrize("method", [remote_region, *METHODS.values()])
def test_label_without_wall_raises(method):
    label = _label()
    label[WALL] = 0
    with pytest.raises(SemiAutoError, match="no LV wall"):
        method(_image(), label)


def test_remote_sector_with_too_few_voxels_raises():
    label = np.zeros(SHAPE, np.uint8)
    label[CAVITY] = LV_CAVITY
    label[20, 31, 1] = MYOCARDIUM  # three wall voxels in the whole study
    label[43, 31, 1] = MYOCARDIUM
    label[31, 20, 1] = MYOCARDIUM
    with pytest.raises(SemiAutoError, match="fewer than 10"):
        remote_region(_image(), label)


@pytest.mark.parametrize("offset, expected_deg", [((3, 0), 0.0), ((0, 3), 90.0), ((-3, 0), 180.0), ((0, -3), 270.0)])
def test_angle_is_from_first_axis_towards_second(offset, expected_deg):
    cavity = np.zeros((9, 9, 1), bool)
    cavity[4, 4, 0] = True
    wall = np.zeros_like(cavity)
    wall[4 + offset[0], 4 + offset[1], 0] = True
    angles = wall_angles_deg(wall, cavity)
    assert angles[4 + offset[0], 4 + offset[1], 0] == pytest.approx(expected_deg)


def test_given_sector_follows_the_angle_convention():
    # Noise-free wall, dark only between 60 and 120 degrees: the given sector at 60 must hold exactly those voxels,
    # and the darkest-sector search must find it there too.
    dark = _arc(60.0, 120.0)
    image = _image(noise_sd=0.0)
    image[dark] = 50.0
    for region in (remote_region(image, _label(), start_deg=60.0), remote_region(image, _label())):
        assert region.start_deg == [60.0] * SHAPE[2]
        assert region.mean == pytest.approx([50.0] * SHAPE[2])
        assert region.voxels == [int(dark[..., k].sum()) for k in range(SHAPE[2])]


# --- n-SD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ENHANCED))
def test_nsd_finds_the_enhanced_sector(kind):
    result = nsd_scar(_image(ENHANCED[kind]), _label(), n_sd=5.0)
    assert dice(_infarct(result), ENHANCED[kind]) > 0.95
    assert result.method["rule"] == "5SD" and result.method["n_sd"] == 5.0


def test_nsd_soft_target_is_logistic_in_remote_sds_from_the_threshold():
    # Noise-free wall with intensities rising around the ring from 90 to 180 in steps of 0.25; remote given as
    # mean 100, SD 5, so with n_sd=3 the threshold sits at exactly 115.
    image = _image(noise_sd=0.0)
    ramp = (90.0 + np.floor(ANGLE) / 4.0).astype(np.float32)
    image[WALL] = _stack(ramp)[WALL]
    at_threshold = (21, 31, 1)
    image[at_threshold] = 115.0
    remote = RemoteRegion([0.0] * 3, 60.0, [100.0] * 3, [5.0] * 3, [50] * 3, automatic=False)
    result = nsd_scar(image, _label(), n_sd=3.0, remote=remote, fill_mvo=False)
    q = result.scar_probability
    assert q[at_threshold] == 0.5  # exactly: sigma(0)
    assert result.label[at_threshold] == MYOCARDIUM  # the threshold itself is not scar (strict >)
    order = np.argsort(image[WALL], kind="stable")
    assert np.all(np.diff(q[WALL][order]) >= 0.0)
    assert q[WALL].min() < 0.01 and q[WALL].max() > 0.99
    one_sd_above = WALL & (image == 120.0)
    assert one_sd_above.any() and np.allclose(q[one_sd_above], 1.0 / (1.0 + np.exp(-1.0)), atol=1e-6)
    assert np.array_equal(result.label[WALL] == SCAR, image[WALL] > 115.0)
    assert 0.0 <= q.min() and q.max() <= 1.0
    assert np.all(q[~WALL] == 0.0)  # the 300 cavity is far above threshold yet gets nothing
    assert result.method["remote"] == remote.describe()


@pytest.mark.parametrize("n_sd", [0.0, 0.99, 10.01, 20.0])
def test_nsd_out_of_range_raises(n_sd):
    with pytest.raises(SemiAutoError, match="n_sd must be between 1 and 10"):
        nsd_scar(_image(), _label(), n_sd=n_sd)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("image_shape", [(64, 64, 2), (64, 64), (64, 63, 3)])
def test_mismatched_grids_raise(method, image_shape):
    with pytest.raises(SemiAutoError, match=r"same \(H, W, D\) grid"):
        METHODS[method](np.zeros(image_shape, np.float32), _label())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_non_finite_image_raises(method):
    image = _image()
    image[5, 5, 0] = np.nan
    with pytest.raises(SemiAutoError, match="non-finite"):
        METHODS[method](image, _label())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsd_gives_a_normal_heart_no_scar(seed):
    image = _image(seed=seed)
    z = remote_region(image, _label()).z_scores(image)
    assert z[WALL].max() < 5.0  # the premise: with these seeds no noise voxel reaches 5 remote SDs
    result = nsd_scar(image, _label(), n_sd=5.0)
    assert np.array_equal(result.label, _label())
    assert result.scar_probability.max() < 0.5


# --- MVO -----------------------------------------------------------------------------------------

# A dark core (remote intensity) in the middle of the transmural sector: scar on every side of it,
# from the endocardium to the epicardium.
CORE = _arc(25.0, 65.0, r_in=12.0, r_out=14.0)


@pytest.mark.parametrize("rule", [nsd_scar, ewa_scar], ids=["nsd", "ewa"])
def test_dark_core_enclosed_by_scar_is_mvo_and_counts_as_infarct(rule):
    enhanced = ENHANCED["transmural"] & ~CORE
    result = rule(_image(enhanced), _label())
    assert CORE.any() and np.all(result.label[CORE] == MVO)
    assert np.all(result.label[~CORE] != MVO)
    assert np.all(result.scar_probability[CORE] == 1.0)
    assert dice(_infarct(result), ENHANCED["transmural"]) > 0.95
    assert any("MVO" in text for text in result.method["rules"])


def test_fwhm_labels_the_enclosed_dark_core_infarct():
    # Noise-free, remote well under half the enhancement, so the answer is exact.
    image = _image(noise_sd=0.0)
    image[WALL] = 60.0
    image[ENHANCED["transmural"] & ~CORE] = ENHANCED_I
    result = fwhm_scar(image, _label())
    assert np.all(result.label[CORE] == MVO)
    assert np.array_equal(_infarct(result), ENHANCED["transmural"])


@pytest.mark.parametrize("rule", sorted(METHODS))
@pytest.mark.parametrize(
    "enhanced",
    [
        ENHANCED["subendocardial"],  # normal outer half reaches the epicardium
        ENHANCED["transmural"] & ~_arc(25.0, 65.0, r_in=12.0),  # a dark channel from mid-wall to the epicardium
    ],
    ids=["subendocardial", "dark-channel-to-epicardium"],
)
def test_normal_myocardium_reaching_the_epicardium_is_never_mvo(rule, enhanced):
    image = _image(enhanced)
    if rule == "fwhm":
        # FWHM presumes nulled myocardium well under half the scar's brightness, as in real LGE; at half
        # (100 of 200) its threshold sits on the remote mean and it marks noise.
        image[WALL & ~enhanced] -= 40.0
    result = METHODS[rule](image, _label())
    assert _infarct(result).any()
    assert not (result.label == MVO).any()


def test_without_mvo_filling_the_dark_core_stays_myocardium():
    enhanced = ENHANCED["transmural"] & ~CORE
    result = nsd_scar(_image(enhanced), _label(), fill_mvo=False)
    assert np.all(result.label[CORE] == MYOCARDIUM)
    assert not (result.label == MVO).any()
    assert result.scar_probability[CORE].max() < 0.5
    assert "rules" not in result.method


# --- FWHM ----------------------------------------------------------------------------------------


def test_fwhm_threshold_is_half_the_median_filtered_maximum():
    # Noise-free: remote 60, core 200 over 0-90 degrees; partial volume of 140 and 90 beyond 90 degrees, exactly
    # half the maximum (100) before 0, and one hot voxel (1000) in remote wall that the median filter must ignore.
    image = _image(noise_sd=0.0)
    image[WALL] = 60.0
    image[_arc(0.0, 90.0)] = ENHANCED_I
    image[_arc(90.0, 100.0)] = 140.0
    image[_arc(100.0, 110.0)] = 90.0
    image[_arc(350.0, 360.0)] = 100.0
    image[20, 31, 1] = 1000.0  # angle 180, in the wall
    result = fwhm_scar(image, _label())
    assert result.method["maximum"] == ENHANCED_I
    assert result.method["threshold"] == 100.0
    expected = _arc(350.0, 360.0) | _arc(0.0, 100.0)
    expected[20, 31, 1] = True  # the hot voxel itself is above threshold, it just does not set it
    assert np.array_equal(_infarct(result), expected)
    assert np.array_equal(result.label == SCAR, expected)
    assert np.all(result.scar_probability[_arc(350.0, 360.0)] == 0.5)


@pytest.mark.parametrize("noise_sd", [0.0, NOISE_SD])
def test_fwhm_gives_a_normal_heart_no_scar_and_says_why(noise_sd):
    result = fwhm_scar(_image(noise_sd=noise_sd), _label())
    assert np.array_equal(result.label, _label())
    assert not result.scar_probability.any()
    assert result.method["threshold"] is None
    assert result.method["maximum_remote_sd"] < 5.0
    assert "no enhanced core" in result.method["no_scar_reason"]


def _nulled(image, enhanced):
    """Remote myocardium well under half the scar's brightness, as FWHM presumes (nulled, magnitude LGE)."""
    image = image.copy()
    image[WALL & ~enhanced] -= 40.0
    return image


def test_fwhm_on_a_noisy_infarct_uses_half_the_enhancement():
    result = fwhm_scar(_nulled(_image(ENHANCED["transmural"]), ENHANCED["transmural"]), _label())
    assert result.method["maximum"] == pytest.approx(ENHANCED_I, abs=3 * NOISE_SD)
    assert result.method["threshold"] == pytest.approx(0.5 * result.method["maximum"], abs=1e-3)
    assert "no_scar_reason" not in result.method
    assert np.all(_infarct(result)[ENHANCED["transmural"]])


def test_fwhm_refuses_an_image_whose_myocardium_is_not_nulled_near_zero():
    # Remote 100, scar 200: half the maximum is the remote mean itself, so FWHM would mark half the wall.
    with pytest.raises(SemiAutoError, match="FWHM does not apply"):
        fwhm_scar(_image(ENHANCED["transmural"]), _label())


# --- EWA family ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ENHANCED))
def test_ewa_finds_the_enhanced_sector(kind):
    result = ewa_scar(_image(ENHANCED[kind]), _label())
    assert dice(_infarct(result), ENHANCED[kind]) > 0.9
    assert result.method["enhanced_mean_remote_sd"] - result.method["normal_mean_remote_sd"] > 3.0
    assert "no_scar_reason" not in result.method


# Four voxels (4 mm^2 at 1 mm spacing) on the endocardium at 180 degrees, slice 1 only.
SPECK = np.zeros(SHAPE, bool)
SPECK[20:22, 31:33, 1] = True


@pytest.mark.parametrize(
    "spacing_mm, min_area_mm2, kept",
    [
        ((1.0, 1.0, 8.0), 20.0, False),  # 4 mm^2 < 20
        ((1.0, 1.0, 8.0), 4.0, True),  # exactly the minimum stays
        ((3.0, 3.0, 8.0), 20.0, True),  # 36 mm^2 at 3 mm spacing
    ],
)
def test_ewa_drops_specks_under_the_minimum_area(spacing_mm, min_area_mm2, kept):
    assert np.all(WALL[SPECK]) and np.all(RADIUS[SPECK[..., 1]] < 12.0)
    enhanced = ENHANCED["transmural"] | SPECK
    result = ewa_scar(_image(enhanced), _label(), spacing_mm=spacing_mm, min_scar_area_mm2=min_area_mm2)
    assert np.all(_infarct(result)[SPECK]) == kept and np.any(_infarct(result)[SPECK]) == kept
    assert dice(_infarct(result) & ~SPECK, ENHANCED["transmural"]) > 0.9


@pytest.mark.parametrize(
    "r_in, kept", [(R_MID + 1.0, False), (R_CAVITY, True)], ids=["epicardial-island", "reaching-endocardium"]
)
def test_ewa_keeps_only_enhancement_touching_the_endocardium(r_in, kept):
    island = _arc(180.0, 240.0, r_in=r_in)
    result = ewa_scar(_image(ENHANCED["transmural"] | island), _label())
    assert np.all(_infarct(result)[island]) == kept and np.any(_infarct(result)[island]) == kept
    assert dice(_infarct(result) & ~island, ENHANCED["transmural"]) > 0.9


@pytest.mark.parametrize("seed", [0, 1])
def test_ewa_gives_a_normal_heart_no_scar_and_says_why(seed):
    result = ewa_scar(_image(seed=seed), _label())
    assert np.array_equal(result.label, _label())
    assert not result.scar_probability.any()
    assert "no enhanced class" in result.method["no_scar_reason"]
    assert result.method["weighted_scar_voxels"] == 0.0


def test_ewa_soft_target_is_the_partial_volume_weight():
    # Noise on the wall, a noise-free enhanced core at 200 and a one-voxel-wide edge at 150 beside it; remote
    # given as 100 +- 5 on every slice so that the core has one z (20) throughout the study.
    core, edge = _arc(0.0, 85.0), _arc(85.0, 90.0)
    image = _image()
    image[core], image[edge] = ENHANCED_I, 150.0
    remote = RemoteRegion([180.0] * 3, 60.0, [REMOTE_I] * 3, [NOISE_SD] * 3, [80] * 3, automatic=False)
    result = ewa_scar(image, _label(), remote=remote)
    q, m = result.scar_probability, result.method
    assert np.all(q[core] == 1.0)
    assert np.all(q[_arc(150.0, 330.0)] == 0.0)  # remote wall, away from the scar's rim
    z_edge = remote.z_scores(image)[edge]
    expected = (z_edge - m["normal_mean_remote_sd"]) / (m["enhanced_mean_remote_sd"] - m["normal_mean_remote_sd"])
    assert np.allclose(q[edge], expected, atol=5e-3)
    assert np.all((q[edge] > 0.2) & (q[edge] < 0.8))


@pytest.mark.parametrize("enhanced", [ENHANCED["transmural"], ENHANCED["transmural"] & ~CORE, None])
def test_ewa_weighted_size_is_the_soft_target_sum(enhanced):
    result = ewa_scar(_image(enhanced), _label())
    assert result.method["weighted_scar_voxels"] == round(float(result.scar_probability.sum()), 2)


def test_ewa_repeats_with_a_seed():
    image = _image(ENHANCED["subendocardial"])
    a, b = ewa_scar(image, _label(), seed=3), ewa_scar(image, _label(), seed=3)
    assert np.array_equal(a.label, b.label) and np.array_equal(a.scar_probability, b.scar_probability)


# --- every rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(METHODS))
@pytest.mark.parametrize("kind", ["transmural", "subendocardial", "normal"])
def test_outputs_lie_on_the_input_grid_and_change_only_the_wall(rule, kind):
    enhanced = ENHANCED.get(kind)
    image, label = _image(enhanced), _label()
    if rule == "fwhm" and enhanced is not None:
        image = _nulled(image, enhanced)
    image_before, label_before = image.copy(), label.copy()
    result = METHODS[rule](image, label)
    assert np.array_equal(image, image_before) and np.array_equal(label, label_before)  # inputs untouched
    assert result.label.shape == SHAPE and result.label.dtype == np.uint8
    assert result.scar_probability.shape == SHAPE and result.scar_probability.dtype == np.float32
    assert np.array_equal(result.label[~WALL], label[~WALL])  # cavity and background identical
    assert set(np.unique(result.label[WALL])) <= set(LV_WALL)
    q = result.scar_probability
    assert np.all(q[~WALL] == 0.0) and q.min() >= 0.0 and q.max() <= 1.0
    assert json.loads(json.dumps(result.method)) == result.method


@pytest.mark.parametrize("rule", sorted(METHODS))
def test_scar_and_mvo_in_the_given_label_are_redrawn(rule):
    # A normal image whose label claims scar and MVO: the rules replace them, keeping the wall.
    label = _label()
    label[_arc(180.0, 240.0)] = SCAR
    label[_arc(200.0, 220.0, r_in=12.0, r_out=14.0)] = MVO
    result = METHODS[rule](_image(), label)
    assert np.array_equal(result.label, _label())
