"""Noise-robust segmentation loss: Dice plus KL divergence to a soft target."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.layers import GaussianFilter
from torch import nn


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
    r"""Dice plus Kullback-Leibler divergence to a soft target, on logits.

    .. math::
        L = w_D \, L_{Dice}(p, y) + w_{KL} \frac{1}{N} \sum_i \sum_c q_{ic} (\log q_{ic} - \log p_{ic}),
        \quad p = \mathrm{softmax}(z)

    :math:`z` are the raw network logits (the softmax is applied here, once, as log-softmax for the
    KL term), :math:`y` the hard label, :math:`q` the soft target of :func:`soft_target`, :math:`N`
    the number of pixels. The KL term is zero exactly when p = q and positive otherwise; unlike
    cross-entropy against a one-hot label, it does not push the network to be certain at the edges
    and on pixels a semi-automatic label may have wrong. Dice (MONAI's, softmax on the same logits,
    background excluded) keeps small structures such as MVO from being swamped. Slices without scar
    stay in: Dice of an absent class predicted absent is 1 with MONAI's smoothing terms.

    Shape: logits (B, C, *spatial); label (B, 1, *spatial) with integer values in [0, C).
    """

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
