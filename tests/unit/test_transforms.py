import numpy as np
import pytest
import torch

from lib.constants import IMAGE, LABEL, LV_CAVITY, MYOCARDIUM, SCAR
from lib.engine import SliceDataset, load_study
from lib.model import SPEC
from lib.phantoms import make_phantom
from lib.transforms.anatomy import AnatomicalCleanup
from lib.transforms.slice_augment import AugmentSlicesd, TrainingAugmentation


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
    out = AugmentSlicesd(affine_prob=0, flip_prob=0)(dict(batch))
    assert torch.equal(out[LABEL], batch[LABEL])
    assert not torch.equal(out[IMAGE], batch[IMAGE])


def test_no_transform_drawn_changes_nothing_and_flips_are_exact():
    batch = _crop_batch()
    out = AugmentSlicesd(**OFF)(dict(batch))
    assert all(torch.equal(out[k], batch[k]) for k in (IMAGE, LABEL))
    torch.manual_seed(0)
    out = AugmentSlicesd(**{**OFF, "flip_prob": 1.0})(dict(batch))
    assert torch.equal(out[IMAGE], batch[IMAGE].flip(2).flip(3)) and torch.equal(
        out[LABEL], batch[LABEL].flip(2).flip(3)
    )


def test_geometric_augmentation_moves_the_label_with_the_image_and_keeps_it_discrete():
    batch = _crop_batch(16)
    image_of_label = batch[LABEL] / 4.0  # an "image" that is the label itself shows where the label must go
    torch.manual_seed(3)
    out = AugmentSlicesd(**{**OFF, "affine_prob": 1.0, "flip_prob": 0.5})({IMAGE: image_of_label, LABEL: batch[LABEL]})
    assert set(torch.unique(out[LABEL]).tolist()) <= set(torch.unique(batch[LABEL]).tolist())
    moved = ~torch.isclose(out[LABEL], batch[LABEL])
    assert moved.float().mean() > 0.005  # the geometry did change
    wall, agree = out[LABEL] >= MYOCARDIUM, (out[IMAGE] * 4.0 - out[LABEL]).abs() < 0.5
    assert agree[wall].float().mean() > 0.9  # bilinear image and nearest label still coincide on the wall


def test_bias_field_is_monai_s_for_the_same_coefficients():
    from monai.transforms import RandBiasField

    from lib.transforms.slice_augment import _legendre

    reference = RandBiasField(prob=1.0, coeff_range=(0.0, 0.3))
    reference.set_random_state(0)
    reference.randomize((40, 30))
    coeff = torch.zeros(4, 4)
    coeff[tuple(torch.as_tensor(np.stack(np.tril_indices(4))))] = torch.tensor(reference._coeff, dtype=torch.float32)
    field = torch.einsum(
        "ij,ia,jb->ab", coeff, _legendre(torch.linspace(-1, 1, 40), 3), _legendre(torch.linspace(-1, 1, 30), 3)
    )
    expected = reference._generate_random_field((40, 30), 3, reference._coeff)
    assert np.allclose(field.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "transform, monai_transform",
    [
        ("gamma", "RandAdjustContrast(prob=1.0, gamma=(0.7, 1.5))"),
        ("rician", "RandRicianNoise(prob=1.0, std=0.04, relative=False)"),
        ("gaussian", "RandGaussianNoise(prob=1.0, std=0.03)"),
        ("gibbs", "RandGibbsNoise(prob=1.0, alpha=(0.0, 0.5))"),
    ],
)
def test_each_intensity_transform_draws_like_monai_s(transform, monai_transform):
    import monai.transforms

    image = _crop_batch(1)[IMAGE][0]
    reference = eval(f"monai.transforms.{monai_transform}", {"monai": monai})  # noqa: S307
    reference.set_random_state(0)
    draws = 400
    expected = torch.stack([torch.as_tensor(reference(image.clone())) for _ in range(draws)])
    torch.manual_seed(0)
    out = AugmentSlicesd((IMAGE,), **{**OFF, f"{transform}_prob": 1.0})({IMAGE: image[None].repeat(draws, 1, 1, 1)})
    out = out[IMAGE]
    assert float(out.mean()) == pytest.approx(float(expected.mean()), rel=0.02)
    assert float(out.std()) == pytest.approx(float(expected.std()), rel=0.02)
    # How far a draw moves the image: its strength is drawn per sample (sigma, gamma, alpha), hence the margin.
    change, expected_change = ((x - image).abs().mean(dim=(1, 2, 3)) for x in (out, expected))
    assert float(change.mean()) == pytest.approx(float(expected_change.mean()), rel=0.12)


def test_augmentation_runs_on_the_batch_device_and_seeded_runs_repeat():
    batch = {**_crop_batch(8), "loc_image": torch.rand(8, 1, 96, 96), "loc_heart": torch.zeros(8, 1, 96, 96)}

    def run():
        torch.manual_seed(11)
        return TrainingAugmentation()(dict(batch))

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == batch.keys()
    assert a[IMAGE].shape == (8, 1, *SPEC.roi_size_vox) and not torch.equal(a["loc_image"], batch["loc_image"])


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
