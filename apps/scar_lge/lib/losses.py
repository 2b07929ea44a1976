"""Segmentation losses of the segmenter, on logits: the default Dice + CE and the variants measured
against it on semi-automatic labels (``benchmarks/noisy_labels.py``, docs/benchmarks/noisy-labels.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from monai.networks.layers import GaussianFilter
from torch import nn

from . import distributed
from .constants import MYOCARDIUM, NUM_CLASSES, SCAR


def soft_target(label: torch.Tensor, num_classes: int, *, smoothing: float, sigma_vox: float) -> torch.Tensor:
    r"""Soft class distribution from a hard (possibly noisy) label.

    .. math:: q = (1 - \varepsilon)\,\frac{G_\sigma * y}{\sum_c G_\sigma * y_c} + \frac{\varepsilon}{C}

    with :math:`y` the one-hot label, :math:`G_\sigma` a spatial Gaussian of width ``sigma_vox``
    applied per sample and per class (never across the batch), :math:`\varepsilon` the label
    smoothing and :math:`C` the number of classes. Each pixel's q sums to 1.

    Shape: label (B, 1, *spatial) integer classes -> q (B, C, *spatial).
    """
    onehot = F.one_hot(label[:, 0].long(), num_classes).movedim(-1, 1).float()
    if sigma_vox > 0:
        # GaussianFilter convolves each (sample, channel) plane on its own: no mixing across the batch.
        onehot = GaussianFilter(spatial_dims=onehot.ndim - 2, sigma=sigma_vox)(onehot)
        onehot = onehot / onehot.sum(dim=1, keepdim=True).clamp_min(1e-6)
    return (1 - smoothing) * onehot + smoothing / num_classes


class DiceKLLoss(nn.Module):
    r"""Dice plus Kullback-Leibler divergence to a blurred, smoothed one-hot target, on logits.

    .. math::
        L = w_D \, L_{Dice}(p, y) + w_{KL} \frac{1}{N} \sum_i \sum_c q_{ic} (\log q_{ic} - \log p_{ic}),
        \quad p = \mathrm{softmax}(z)

    :math:`z` are the raw network logits (the softmax is applied here, once, as log-softmax for the
    KL term), :math:`y` the hard label, :math:`q` the target of :func:`soft_target`, :math:`N` the
    number of pixels. Since :math:`q` is a fixed function of the label,
    :math:`KL(q \| p) = CE(q, p) - H(q)` and :math:`H(q)` has no gradient: in training this is exactly
    Dice plus cross-entropy against a label smoothed by ``smoothing`` and blurred by ``sigma_vox``. It
    says nothing about where a semi-automatic label is likely wrong; on real 3SD labels it did not beat
    plain Dice + CE (docs/benchmarks/noisy-labels.md). Dice is MONAI's, per sample, background
    excluded: a class absent from a sample's label gives that sample a Dice loss near 1 (MONAI's
    smoothing terms are 1e-5) until the predicted probabilities of the class go to 0 everywhere.

    Shape: logits (B, C, *spatial); label (B, 1, *spatial) with integer values in [0, C).
    """

    needs_scar_probability = False

    def __init__(
        self,
        num_classes: int,
        *,
        dice_weight: float = 0.5,
        kl_weight: float = 0.5,
        smoothing: float = 0.05,
        sigma_vox: float = 1.0,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if dice_weight < 0 or kl_weight < 0 or dice_weight + kl_weight == 0:
            raise ValueError(f"weights must be non-negative and not both zero, got {dice_weight}, {kl_weight}.")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}.")
        if sigma_vox < 0:
            raise ValueError(f"sigma_vox must be non-negative, got {sigma_vox}.")
        self.num_classes = num_classes
        self.dice_weight, self.kl_weight = dice_weight, kl_weight
        self.smoothing, self.sigma_vox = smoothing, sigma_vox
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, batch=False)

    def kl(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean per-pixel KL(q || softmax(logits)) for a given soft target q of the logits' shape."""
        if target.shape != logits.shape:
            raise ValueError(f"soft target must match logits {tuple(logits.shape)}, got {tuple(target.shape)}.")
        log_p = F.log_softmax(logits.float(), dim=1)
        return F.kl_div(log_p, target, reduction="none").sum(dim=1).mean()

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have {self.num_classes} channels, got {logits.shape[1]}.")
        if label.shape[0] != logits.shape[0] or label.shape[1] != 1 or label.shape[2:] != logits.shape[2:]:
            raise ValueError(
                f"label must be (B, 1, *spatial) of logits {tuple(logits.shape)}, got {tuple(label.shape)}."
            )
        q = soft_target(label, self.num_classes, smoothing=self.smoothing, sigma_vox=self.sigma_vox)
        loss = self.kl_weight * self.kl(logits, q)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits.float(), label)
        return loss


def _check_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")


def _check_shapes(logits: torch.Tensor, label: torch.Tensor, num_classes: int) -> None:
    if logits.shape[1] != num_classes:
        raise ValueError(f"logits must have {num_classes} channels, got {logits.shape[1]}.")
    if label.shape[0] != logits.shape[0] or label.shape[1] != 1 or label.shape[2:] != logits.shape[2:]:
        raise ValueError(f"label must be (B, 1, *spatial) of logits {tuple(logits.shape)}, got {tuple(label.shape)}.")


def rule_target(label: torch.Tensor, scar_probability: torch.Tensor, num_classes: int) -> torch.Tensor:
    r"""Soft target from a semi-automatic label and the rule's own per-voxel scar probability.

    .. math::
        q_i = \begin{cases} (1 - s_i)\,e_{myo} + s_i\,e_{scar} & y_i \in \{myocardium, scar\} \\
              e_{y_i} & \text{otherwise} \end{cases}

    with :math:`s_i` the rule's scar probability (``lib.semiauto``: a sigmoid of the distance from
    the threshold in remote SDs, or EWA's partial-volume weight), :math:`e_c` the one-hot vector of
    class c. The wall's outline (the annotator's) and MVO stay hard; only how much of a wall voxel is
    scar is soft. For n-SD and FWHM, :math:`s_i` is on the same side of 0.5 as the hard label; EWA's
    weight is a partial-volume share and may disagree with it (a scar voxel with w < 0.5, a rim voxel
    labelled myocardium with w up to 1).

    Shape: label (B, 1, *spatial) integer classes; scar_probability (B, 1, *spatial) in [0, 1]
    -> q (B, C, *spatial).
    """
    if scar_probability.shape != label.shape:
        raise ValueError(
            f"scar_probability must match label {tuple(label.shape)}, got {tuple(scar_probability.shape)}."
        )
    q = F.one_hot(label[:, 0].long(), num_classes).movedim(-1, 1).float()
    s = scar_probability[:, 0].float().clamp(0.0, 1.0)
    soft = (label[:, 0] == MYOCARDIUM) | (label[:, 0] == SCAR)
    q[:, MYOCARDIUM] = torch.where(soft, 1.0 - s, q[:, MYOCARDIUM])
    q[:, SCAR] = torch.where(soft, s, q[:, SCAR])
    return q


class DiceCE(nn.Module):
    r"""Dice plus cross-entropy, nnU-Net's default loss, on logits.

    .. math::
        L = 1 - \frac{1}{C-1} \sum_{c \ge 1} \frac{2 \sum_{b,i} p_{bic} t_{bic}}{\sum_{b,i} (p_{bic} + t_{bic})}
            \; - \frac{1}{N} \sum_{b,i} \sum_c t_{bic} \log p_{bic}, \quad p = \mathrm{softmax}(z)

    with :math:`t` the one-hot label, background excluded from Dice, and Dice summed over the batch
    (nnU-Net's batch Dice): a class absent from one slice still has a well-defined Dice over the batch,
    so rare classes (MVO) and scar-free slices neither dominate nor vanish. MONAI's ``DiceCELoss``
    (smoothing terms 1e-5) applies the softmax once, itself.

    Under DDP (several ranks of :mod:`lib.distributed`) the batch is the union of the ranks' shards: the
    Dice sums are pooled over ranks (differentiably), the cross-entropy stays each rank's own mean and DDP
    averages its gradient, so a step on R ranks of B slices equals a step on one process with the R*B
    slices (``tests/unit/test_ddp.py``).

    Shape: logits (B, C, *spatial); label (B, 1, *spatial) integer classes.
    """

    needs_scar_probability = False
    SMOOTH = 1e-5  # MONAI DiceLoss's smooth_nr and smooth_dr defaults

    def __init__(self, num_classes: int):
        super().__init__()
        _check_classes(num_classes)
        self.num_classes = num_classes
        self.loss = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, label, self.num_classes)
        if not distributed.active():
            return self.loss(logits.float(), label)
        # MONAI's DiceLoss sums over its own batch only and has no hook to pool those sums across ranks, so
        # the same formula is written here on sums pooled over ranks (nnU-Net's DDP batch Dice does the same).
        probs = torch.softmax(logits.float(), dim=1)
        target = F.one_hot(label[:, 0].long(), self.num_classes).movedim(-1, 1).float()
        dims = (0, *range(2, logits.ndim))
        intersection = distributed.all_reduce_sum((probs * target).sum(dims))[1:]
        denominator = distributed.all_reduce_sum((probs + target).sum(dims))[1:]
        dice = 1.0 - (2.0 * intersection + self.SMOOTH) / (denominator + self.SMOOTH)
        return dice.mean() + F.cross_entropy(logits.float(), label[:, 0].long())


class DiceGCE(nn.Module):
    r"""Batch Dice plus generalized cross-entropy (Zhang and Sabuncu, NeurIPS 2018), on logits.

    .. math::
        L = L_{Dice}(p, y) + \frac{1}{N} \sum_i \frac{1 - p_{i, y_i}^{\,q}}{q}, \quad p = \mathrm{softmax}(z)

    The GCE term is bounded in :math:`[0, 1/q]`: a voxel whose label is wrong cannot pull harder than
    :math:`1/q`, where cross-entropy (the limit :math:`q \to 0`) grows without bound; at :math:`q = 1`
    it is half the mean absolute error between p and the one-hot label. Dice as in :class:`DiceCE`.

    Shape: logits (B, C, *spatial); label (B, 1, *spatial) integer classes.
    """

    needs_scar_probability = False

    def __init__(self, num_classes: int, *, q: float = 0.7):
        super().__init__()
        _check_classes(num_classes)
        if not 0 < q <= 1:
            raise ValueError(f"q must be in (0, 1], got {q}.")
        self.num_classes, self.q = num_classes, q
        self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, label, self.num_classes)
        p_label = F.softmax(logits.float(), dim=1).gather(1, label.long()).clamp_min(1e-7)
        return self.dice(logits.float(), label) + ((1.0 - p_label**self.q) / self.q).mean()


class RuleSoftTargetLoss(nn.Module):
    r"""Soft Dice plus KL divergence to the semi-automatic rule's own soft target, on logits.

    .. math::
        L = 1 - \frac{1}{C-1} \sum_{c \ge 1} \frac{2 \sum_{b,i} p_{bic} q_{bic}}{\sum_{b,i} (p_{bic} + q_{bic})}
            \; + \frac{1}{N} \sum_{b,i} \sum_c q_{bic} (\log q_{bic} - \log p_{bic}), \quad p = \mathrm{softmax}(z)

    with :math:`q` from :func:`rule_target` (SoftSeg, Gros et al., MedIA 2021: soft targets in both
    terms). Unlike :class:`DiceKLLoss`'s blur, :math:`q` carries where the rule was unsure: a voxel one
    remote SD below the threshold is 27 % scar, not 0 %. Its gradient is still that of Dice + CE against
    :math:`q` (the entropy of :math:`q` is constant), so the gain, if any, comes from the target alone.

    Shape: logits (B, C, *spatial); label (B, 1, *spatial); scar_probability (B, 1, *spatial) in [0, 1].
    """

    needs_scar_probability = True

    def __init__(self, num_classes: int):
        super().__init__()
        _check_classes(num_classes)
        self.num_classes = num_classes
        self.dice = DiceLoss(include_background=False, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor, label: torch.Tensor, scar_probability: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, label, self.num_classes)
        q = rule_target(label, scar_probability, self.num_classes)
        log_p = F.log_softmax(logits.float(), dim=1)
        kl = F.kl_div(log_p, q, reduction="none").sum(dim=1).mean()
        return self.dice(logits.float(), q) + kl


LOSSES = {
    "dice_ce": DiceCE,
    "dice_kl_blurred": DiceKLLoss,
    "dice_gce": DiceGCE,
    "rule_soft_target": RuleSoftTargetLoss,
}
# What the train task and the default-model script use: fine-tuned on real 3SD and EWA-family labels no
# variant beat Dice + CE by more than its seed-to-seed spread; the rule's soft target won only on the
# under-calling 5SD labels, and saved labels carry no soft target (docs/benchmarks/noisy-labels.md).
DEFAULT_LOSS = "dice_ce"


def build_loss(name: str = DEFAULT_LOSS, num_classes: int = NUM_CLASSES) -> nn.Module:
    """The segmenter loss called ``name`` (a key of :data:`LOSSES`)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}.")
    return LOSSES[name](num_classes)


def describe_loss(name: str = DEFAULT_LOSS) -> str:
    """One line naming a loss and its class's summary, for a checkpoint's provenance."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}.")
    cls = LOSSES[name]
    return f"{name}: {cls.__doc__.strip().splitlines()[0]} (lib/losses.py)"
