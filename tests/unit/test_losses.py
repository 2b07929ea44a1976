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
