import numpy as np
import pytest
import torch
from monai.transforms import AdjustContrast, GibbsNoise, RandBiasField

from lib.constants import IMAGE, LABEL, LOCALISER_HEART, LOCALISER_IMAGE, LV_CAVITY, MYOCARDIUM, SCAR
from lib.engine import SliceDataset, load_study
from lib.model import SPEC
from lib.phantoms import make_phantom
from lib.transforms.anatomy import AnatomicalCleanup
from lib.transforms.slice_augment import AugmentBatch, TrainingAugmentation


def test_preprocess_resamples_in_plane_only_and_keeps_labels():
    p = make_phantom(3, spacing_mm=0.75, shape=(200, 180), n_slices=7, slice_spacing_mm=9.0)
    study = load_study(p.image, p.label, affine=p.affine)
    assert study.image.shape[-1] == 7  # never interpolated across slices
    assert abs(study.image.shape[1] - round(200 * 0.75 / SPEC.spacing_mm)) <= 1
    assert float(study.image.min()) >= 0 and float(study.image.max()) <= 1
    assert set(torch.unique(study.label).tolist()) <= set(np.unique(p.label).tolist())


OFF = dict(affine_prob=0, flip_prob=0, bias_prob=0, gamma_prob=0, rician_prob=0, gaussian_prob=0, gibbs_prob=0)


def _crop_batch(n: int = 8, seed: int = 0) -> dict:
    """``n`` copies of one phantom slice's training crop, unaugmented."""
    phantom = make_phantom(seed)
    study = load_study(phantom.image, phantom.label, affine=phantom.affine)
    np.random.seed(seed)
    sample = SliceDataset([study]).sampler(study, 5)
    return {k: v[None].repeat(n, 1, 1, 1) for k, v in sample.items()}


def test_intensity_augmentation_leaves_the_label_untouched():
    batch = {IMAGE: torch.rand(16, 1, 64, 64), LABEL: torch.randint(0, 5, (16, 1, 64, 64)).float()}
    torch.manual_seed(7)
    out = AugmentBatch(affine_prob=0, flip_prob=0)(dict(batch))
    assert torch.equal(out[LABEL], batch[LABEL])
    assert not torch.equal(out[IMAGE], batch[IMAGE])


def test_no_transform_drawn_changes_nothing_and_flips_are_exact():
    batch = _crop_batch()
    out = AugmentBatch(**OFF)(dict(batch))
    assert all(torch.equal(out[k], batch[k]) for k in (IMAGE, LABEL))
    torch.manual_seed(0)
    out = AugmentBatch(**{**OFF, "flip_prob": 1.0})(dict(batch))
    assert torch.equal(out[IMAGE], batch[IMAGE].flip(2).flip(3)) and torch.equal(
        out[LABEL], batch[LABEL].flip(2).flip(3)
    )


def test_geometric_augmentation_moves_the_label_with_the_image_and_keeps_it_discrete():
    batch = _crop_batch(16)
    image_of_label = batch[LABEL] / 4.0  # an "image" that is the label itself shows where the label must go
    torch.manual_seed(3)
    out = AugmentBatch(**{**OFF, "affine_prob": 1.0, "flip_prob": 0.5})({IMAGE: image_of_label, LABEL: batch[LABEL]})
    assert set(torch.unique(out[LABEL]).tolist()) <= set(torch.unique(batch[LABEL]).tolist())
    moved = ~torch.isclose(out[LABEL], batch[LABEL])
    assert moved.float().mean() > 0.005  # the geometry did change
    wall, agree = out[LABEL] >= MYOCARDIUM, (out[IMAGE] * 4.0 - out[LABEL]).abs() < 0.5
    assert agree[wall].float().mean() > 0.9  # bilinear image and nearest label still coincide on the wall


@pytest.mark.parametrize(
    "transform, ours, monai_transform",
    [
        ("bias", {"bias_coeff": (0.2, 0.2)}, lambda: RandBiasField(prob=1.0, coeff_range=(0.2, 0.2))),
        ("gamma", {"gamma": (1.3, 1.3)}, lambda: AdjustContrast(1.3)),
        ("gibbs", {"gibbs_alpha": (0.3, 0.3)}, lambda: GibbsNoise(0.3)),
    ],
)
def test_a_transform_with_its_parameter_fixed_is_monai_s(transform, ours, monai_transform):
    image = torch.rand(1, 40, 30)  # not square: a transposed field or filter would show
    out = AugmentBatch((IMAGE,), **{**OFF, f"{transform}_prob": 1.0, **ours})({IMAGE: image[None]})[IMAGE][0]
    expected = torch.as_tensor(monai_transform()(image.clone()))
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("transform, largest_sd", [("gaussian", 0.03), ("rician", 0.04)])
def test_noise_sd_is_drawn_uniformly_up_to_its_largest(transform, largest_sd):
    """Each sample's noise SD, read back from its pixels, is U(0, largest_sd), as MONAI's sample_std draws it.

    Gaussian: E[(y - x)^2] = sigma^2. Rician: y^2 = (x + n1)^2 + n2^2, so E[y^2 - x^2] = 2 sigma^2. Over a
    128 x 128 crop either is read to about 1 %; the mean of 400 U(0, s) draws is s / 2 +- s / sqrt(12 * 400).
    """
    image = _crop_batch(1)[IMAGE][0]
    draws = 400
    torch.manual_seed(0)
    out = AugmentBatch((IMAGE,), **{**OFF, f"{transform}_prob": 1.0})({IMAGE: image[None].repeat(draws, 1, 1, 1)})
    y, x = out[IMAGE].double(), image.double()
    power = ((y - x) ** 2).mean(dim=(1, 2, 3)) if transform == "gaussian" else (y**2 - x**2).mean(dim=(1, 2, 3)) / 2
    sigma = power.clamp_min(0).sqrt()
    assert float(sigma.max()) <= largest_sd * 1.05
    assert abs(float(sigma.mean()) - largest_sd / 2) < 5 * largest_sd / (12 * draws) ** 0.5


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_augmentation_runs_on_the_batch_device_and_seeded_runs_repeat(device):
    batch = {**_crop_batch(8), LOCALISER_IMAGE: torch.rand(8, 1, 96, 96), LOCALISER_HEART: torch.zeros(8, 1, 96, 96)}
    batch = {k: v.to(device) for k, v in batch.items()}

    def run():
        torch.manual_seed(11)
        return TrainingAugmentation()(dict(batch))

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == batch.keys()
    assert {v.device.type for v in a.values()} == {device}
    assert a[IMAGE].shape == (8, 1, *SPEC.roi_size_vox)
    assert not torch.equal(a[IMAGE], batch[IMAGE]) and not torch.equal(a[LOCALISER_IMAGE], batch[LOCALISER_IMAGE])


def test_training_augments_every_batch_it_trains_on(monkeypatch):
    from lib import engine
    from lib.model import build_network
    from lib.transforms import slice_augment

    seen = []
    real = slice_augment.TrainingAugmentation.__call__

    def counted(self, batch):
        seen.append(len(batch[IMAGE]))
        return real(self, batch)

    monkeypatch.setattr(slice_augment.TrainingAugmentation, "__call__", counted)
    phantom = make_phantom(5)
    study = load_study(phantom.image, phantom.label, affine=phantom.affine)
    engine.train(build_network(), [study], epochs=1, lr=1e-3, batch_size=4)
    slices = study.image.shape[-1]
    assert sum(seen) == slices - slices % 4  # every slice of the epoch but the incomplete last batch


def test_slice_samples_repeat_when_seeded():
    phantom = make_phantom(5)
    study = load_study(phantom.image, phantom.label, affine=phantom.affine)

    def sample():
        np.random.seed(11)  # the crop centre's jitter
        return SliceDataset([study])[2]

    a, b = sample(), sample()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a[IMAGE].shape == (1, *SPEC.roi_size_vox)


def test_a_soft_scar_target_moves_with_its_label_through_augmentation():
    phantom = make_phantom(0)  # scar on 6 of its 11 slices
    study = load_study(phantom.image, phantom.label, affine=phantom.affine)
    study.scar_probability = (study.label == SCAR).float()
    np.random.seed(4)
    dataset = SliceDataset([study])
    samples = [dataset[i] for i in range(len(dataset))]  # each call draws a new crop offset
    batch = {k: torch.stack([sample[k] for sample in samples]) for k in samples[0]}
    torch.manual_seed(4)
    out = TrainingAugmentation()(batch)
    scar = out[LABEL].round() == SCAR
    soft = out["scar_probability"] > 0.5
    checked = 0
    for k in range(len(dataset)):
        if scar[k].sum() < 20:
            continue
        assert (soft[k] & scar[k]).sum() / (soft[k] | scar[k]).sum() > 0.8  # same place after rotation, scaling, flips
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
