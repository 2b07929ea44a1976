import numpy as np
import pytest
from scipy import ndimage

from lib.constants import LV_CAVITY, LV_WALL, MVO, SCAR
from lib.phantoms import make_phantom


def test_same_seed_same_study():
    a, b = make_phantom(42), make_phantom(42)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, make_phantom(43).image) or a.image.shape != make_phantom(43).image.shape


@pytest.mark.parametrize("seed", [0, 2, 7])
def test_ground_truth_is_anatomical(seed):
    p = make_phantom(seed, scar=True, mvo=True)
    wall = np.isin(p.label, LV_WALL)
    for k in range(p.label.shape[2]):
        mvo, scar = p.label[..., k] == MVO, np.isin(p.label[..., k], (SCAR, MVO))
        # MVO is the core of an infarct: inside the scar region, touching infarct
        if mvo.any():
            assert (ndimage.binary_dilation(mvo, iterations=2) & (p.label[..., k] == SCAR)).any()
        assert not (scar & ~wall[..., k]).any()
    assert (p.label == SCAR).any() and (p.label == MVO).any()
    assert p.info["scar"] and p.image.dtype == np.int16


def test_scar_free_study_has_no_scar_but_has_anatomy():
    p = make_phantom(4, scar=False)
    assert not np.isin(p.label, (SCAR, MVO)).any()
    assert (p.label == LV_CAVITY).any() and np.isin(p.label, LV_WALL).any()


def test_scar_is_bright_and_myocardium_dark():
    p = make_phantom(0, scar=True)
    assert np.median(p.image[p.label == SCAR]) > 3 * np.median(p.image[p.label == 2])
    assert np.median(p.image[p.label == LV_CAVITY]) > 2 * np.median(p.image[p.label == 2])
