import pytest
import torch

from lib.constants import NUM_CLASSES
from lib.losses import DiceKLLoss, soft_target


def _label(seed=0, shape=(2, 1, 24, 24)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, NUM_CLASSES, shape, generator=g)


def test_soft_target_is_a_distribution_per_pixel():
    q = soft_target(_label(), NUM_CLASSES, smoothing=0.1, sigma_vox=1.0)
    assert q.shape == (2, NUM_CLASSES, 24, 24)
    assert torch.allclose(q.sum(dim=1), torch.ones(2, 24, 24), atol=1e-5)
    assert float(q.min()) >= 0.1 / NUM_CLASSES - 1e-6


def test_soft_target_never_mixes_samples_of_a_batch():
    label = _label()
    alone = soft_target(label[1:], NUM_CLASSES, smoothing=0.05, sigma_vox=2.0)
    label_other = label.clone()
    label_other[0] = 0  # change sample 0 only
    together = soft_target(label_other, NUM_CLASSES, smoothing=0.05, sigma_vox=2.0)
    assert torch.allclose(together[1:], alone, atol=1e-6)


def test_kl_is_zero_when_prediction_equals_target_and_positive_otherwise():
    loss = DiceKLLoss(NUM_CLASSES, dice_weight=0.0, kl_weight=1.0, smoothing=0.1, sigma_vox=1.0)
    label = _label()
    q = soft_target(label, NUM_CLASSES, smoothing=0.1, sigma_vox=1.0)
    assert float(loss(q.log(), label)) == pytest.approx(0.0, abs=1e-5)  # logits = log q -> softmax = q
    assert float(loss(q.log() + 0.5 * torch.randn_like(q), label)) > 1e-3
    assert float(loss(torch.zeros_like(q), label)) > 1e-3


def test_confident_correct_prediction_beats_wrong_one():
    loss = DiceKLLoss(NUM_CLASSES)
    label = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    for value, (r, c) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)], start=1):
        label[:, :, r : r + 16, c : c + 16] = value
    onehot = torch.nn.functional.one_hot(label[:, 0], NUM_CLASSES).movedim(-1, 1).float()
    right, wrong = 10 * onehot, 10 * onehot.roll(1, dims=1)
    assert float(loss(right, label)) < 0.35 < float(loss(wrong, label))


def test_scar_free_slice_gives_a_finite_loss_with_gradient():
    loss = DiceKLLoss(NUM_CLASSES)
    label = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    label[:, :, 4:12, 4:12] = 2  # myocardium only, no scar, no MVO
    logits = torch.randn(1, NUM_CLASSES, 16, 16, requires_grad=True)
    value = loss(logits, label)
    value.backward()
    assert torch.isfinite(value) and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"dice_weight": -1.0}, "weights"), ({"smoothing": 1.0}, "smoothing"), ({"sigma_vox": -1}, "sigma")],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiceKLLoss(NUM_CLASSES, **kwargs)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="label"):
        DiceKLLoss(NUM_CLASSES)(torch.zeros(1, NUM_CLASSES, 8, 8), torch.zeros(1, 1, 4, 4, dtype=torch.long))


# Losses measured on semi-automatic labels (benchmarks/noisy_labels.py)

from lib.constants import LV_CAVITY, MVO, MYOCARDIUM, SCAR  # noqa: E402
from lib.losses import DEFAULT_LOSS, LOSSES, DiceCE, DiceGCE, RuleSoftTargetLoss, build_loss, rule_target  # noqa: E402


def _wall_label():
    label = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    label[..., 2:6, 2:6] = MYOCARDIUM
    label[..., 3:5, 3:5] = LV_CAVITY
    label[..., 2, 2:4] = SCAR
    label[..., 5, 5] = MVO
    return label


def test_rule_target_softens_only_how_much_of_the_wall_is_scar():
    label = _wall_label()
    s = torch.full(label.shape, 0.3)
    q = rule_target(label, s, NUM_CLASSES)
    assert torch.allclose(q.sum(dim=1), torch.ones(1, 8, 8))
    wall = (label[:, 0] == MYOCARDIUM) | (label[:, 0] == SCAR)
    assert torch.allclose(q[:, SCAR][wall], torch.full_like(q[:, SCAR][wall], 0.3))
    assert torch.allclose(q[:, MYOCARDIUM][wall], torch.full_like(q[:, SCAR][wall], 0.7))
    hard = ~wall  # cavity, background and MVO stay one-hot whatever the rule said
    onehot = torch.nn.functional.one_hot(label[:, 0], NUM_CLASSES).movedim(-1, 1).float()
    assert torch.equal(q.movedim(1, -1)[hard], onehot.movedim(1, -1)[hard])


def test_rule_target_refuses_a_probability_of_another_shape():
    with pytest.raises(ValueError, match="scar_probability"):
        rule_target(_wall_label(), torch.zeros(1, 1, 4, 4), NUM_CLASSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_near_zero_for_a_confident_right_answer_and_high_for_a_wrong_one(name):
    loss = build_loss(name)
    label = torch.zeros(2, 1, 32, 32, dtype=torch.long)
    for value, (r, c) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)], start=1):
        label[:, :, r : r + 16, c : c + 16] = value
    onehot = torch.nn.functional.one_hot(label[:, 0], NUM_CLASSES).movedim(-1, 1).float()
    right, wrong = 20 * onehot, 20 * onehot.roll(1, dims=1)
    args = (label, (label == SCAR).float()) if loss.needs_scar_probability else (label,)
    low, high = float(loss(right, *args)), float(loss(wrong, *args))
    limit = 0.8 if name == "dice_kl_blurred" else 0.05  # its smoothed target is never one-hot: KL to certainty > 0
    assert low < limit and high > 1.0


def test_generalized_ce_is_bounded_where_cross_entropy_is_not():
    label = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    certain_wrong = torch.zeros(1, NUM_CLASSES, 4, 4)
    certain_wrong[:, 1] = 1000.0  # every pixel sure of the wrong class: CE ~ 1000 per pixel
    gce = DiceGCE(NUM_CLASSES, q=0.7)
    dice_part = float(gce.dice(certain_wrong, label))
    assert float(gce(certain_wrong, label)) - dice_part == pytest.approx(1 / 0.7, rel=1e-4)
    assert float(DiceCE(NUM_CLASSES)(certain_wrong, label)) > 100


def test_soft_target_loss_prefers_the_rules_uncertainty_to_a_hard_answer():
    label = _wall_label()
    s = torch.where(label == SCAR, 0.6, 0.2).float()
    q = rule_target(label, s, NUM_CLASSES)
    loss = RuleSoftTargetLoss(NUM_CLASSES)
    matching = torch.log(q.clamp_min(1e-6))
    hard = 20 * torch.nn.functional.one_hot(label[:, 0], NUM_CLASSES).movedim(-1, 1).float()
    assert float(loss(matching, label, s)) < float(loss(hard, label, s))


def test_the_default_loss_is_the_one_the_benchmark_supports():
    assert DEFAULT_LOSS == "dice_ce" and isinstance(build_loss(), DiceCE)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal")
