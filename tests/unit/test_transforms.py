import numpy as np
import pytest
import torch
from monai.transforms import Compose

from lib.constants import IMAGE, LABEL, LV_CAVITY, MYOCARDIUM, SCAR
from lib.engine import SliceDataset, load_study
from lib.model import SPEC
from lib.phantoms import make_phantom
from lib.transforms.anatomy import AnatomicalCleanup
from lib.transforms.pipelines import augment_slices


def test_preprocess_resamples_in_plane_only_and_keeps_labels():
    p = make_phantom(3, spacing_mm=0.75, shape=(200, 180), n_slices=7, slice_spacing_mm=9.0)
    study = load_study(p.image, p.label, affine=p.affine)
    assert study.image.shape[-1] == 7  # never interpolated across slices
    assert abs(study.image.shape[1] - round(200 * 0.75 / SPEC.spacing_mm)) <= 1
    assert float(study.image.min()) >= 0 and float(study.image.max()) <= 1
    assert set(torch.unique(study.label).tolist()) <= set(np.unique(p.label).tolist())


def test_intensity_augmentation_leaves_the_label_untouched():
    data = {IMAGE: torch.rand(1, 64, 64), LABEL: torch.randint(0, 5, (1, 64, 64)).float()}
    intensity_only = Compose(
        [t for t in augment_slices() if "Affine" not in type(t).__name__ and "Flip" not in type(t).__name__]
    )
    intensity_only.set_random_state(7)
    out = intensity_only(dict(data))
    assert torch.equal(torch.as_tensor(out[LABEL]), data[LABEL])
    assert not torch.equal(torch.as_tensor(out[IMAGE]), data[IMAGE])


def test_geometric_augmentation_keeps_label_values_discrete():
    augment = Compose(augment_slices())
    augment.set_random_state(3)
    label = torch.zeros(1, 64, 64)
    label[:, 20:40, 20:40] = 3
    for _ in range(5):
        out = augment({IMAGE: torch.rand(1, 64, 64), LABEL: label.clone()})
        assert set(torch.unique(torch.as_tensor(out[LABEL])).tolist()) <= {0.0, 3.0}


def test_slice_dataset_seeded_runs_repeat():
    study = load_study(*(lambda p: (p.image, p.label))(make_phantom(5)), affine=make_phantom(5).affine)

    def sample():
        np.random.seed(11)
        ds = SliceDataset([study])
        ds.sampler.augment.set_random_state(11)
        ds.sampler.augment_localiser.set_random_state(11)
        return ds[2]

    a, b = sample(), sample()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a[IMAGE].shape == (1, *SPEC.roi_size_vox)


def test_a_soft_scar_target_moves_with_its_label_through_augmentation():
    phantom = make_phantom(0)  # scar on 6 of its 11 slices
    study = load_study(phantom.image, phantom.label, affine=phantom.affine)
    study.scar_probability = (study.label == SCAR).float()
    np.random.seed(4)
    dataset = SliceDataset([study])
    dataset.sampler.augment.set_random_state(4)
    checked = 0
    for k in range(len(dataset)):
        sample = dataset[k]
        scar = sample[LABEL].round() == SCAR
        if scar.sum() < 20:
            continue
        soft = sample["scar_probability"] > 0.5
        assert (soft & scar).sum() / (soft | scar).sum() > 0.8  # same place after rotation, scaling, flips
        checked += 1
    assert checked >= 2


def test_studies_with_and_without_a_soft_target_are_not_mixed():
    phantom = make_phantom(5)
    hard = load_study(phantom.image, phantom.label, affine=phantom.affine)
    soft = load_study(phantom.image, phantom.label, affine=phantom.affine)
    soft.scar_probability = torch.zeros_like(soft.label, dtype=torch.float32)
    with pytest.raises(ValueError, match="scar_probability"):
        SliceDataset([hard, soft])


def test_cleanup_keeps_one_wall_and_drops_scar_outside_it():
    label = np.zeros((1, 60, 60, 1), np.uint8)
    yy, xx = np.mgrid[:60, :60]
    r = np.hypot(yy - 30, xx - 30)
    label[0, r < 10, 0] = LV_CAVITY
    label[0, (r >= 10) & (r < 16), 0] = MYOCARDIUM
    label[0, (r >= 10) & (r < 16) & (xx > 40), 0] = SCAR
    label[0, 2:5, 2:5, 0] = SCAR  # a bright blob far from the heart
    label[0, 55:58, 55:58, 0] = LV_CAVITY  # a second "cavity"
    out = AnatomicalCleanup()(label)
    assert out[0, 3, 3, 0] == 0 and out[0, 56, 56, 0] == 0
    assert (out == SCAR).sum() == ((label == SCAR).sum() - 9)
    assert out.shape == label.shape


def test_wall_only_cleanup_keeps_every_wall_and_scar_voxel_of_the_full_cleanup():
    from lib.constants import LV_WALL

    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, (1, 40, 40, 3)).astype(np.uint8)  # many fragments of every class
    full, wall_only = AnatomicalCleanup()(label), AnatomicalCleanup()(label, wall_only=True)
    assert np.array_equal(np.isin(full, LV_WALL) * full, np.isin(wall_only, LV_WALL) * wall_only)
    assert not np.array_equal(full, wall_only)  # the cavity step did change something here
