"""Random MR augmentation of a training batch of 2D crops, run on the batch's own device.

MONAI's dictionary transforms augment one sample at a time in the loader workers; on a GPU that left
the accelerator 0-18 % busy while the CPU augmented (docs/model-card.md, "A GPU cross-validation
attempt"): RandBiasField and the noise transforms draw their fields with numpy on the CPU whatever the
tensor's device. Here every random draw and every field is a torch tensor on the batch's device and the
batch is augmented at once, with the transforms, probabilities, ranges and order of the per-sample MONAI
list it replaces, but one: both axes now scale (see :class:`AugmentBatch`). MONAI's batched
``AffineTransform`` warps the geometry and MONAI's ``GibbsNoise`` rings the images it picks; gamma, bias
field and noise follow the formulas of MONAI's ``AdjustContrast``, ``RandBiasField``, ``RandRicianNoise``
and ``RandGaussianNoise``, written out batched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers import AffineTransform
from monai.transforms import GibbsNoise
from monai.utils import convert_to_tensor

from ..constants import IMAGE, LABEL, LOCALISER_HEART, LOCALISER_IMAGE, SCAR_PROBABILITY


def _chance(n: int, prob: float, device: torch.device) -> torch.Tensor:
    """Which of ``n`` samples a transform of probability ``prob`` touches: (n,) bool."""
    return torch.rand(n, device=device) < prob


def _uniform(shape: Sequence[int] | int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, device=device)


def _legendre(coords: torch.Tensor, degree: int) -> torch.Tensor:
    """Legendre polynomials P_0..P_degree at ``coords`` by Bonnet's recursion: (degree + 1, len(coords))."""
    polys = [torch.ones_like(coords), coords]
    for n in range(1, degree):
        polys.append(((2 * n + 1) * coords * polys[n] - n * polys[n - 1]) / (n + 1))
    return torch.stack(polys[: degree + 1])


class AugmentBatch:
    r"""Random MR-specific augmentation of a batch of 2D crops ``(N, C, H, W)``; labels move only with geometry.

    ``keys`` move together, interpolated bilinearly (``image_key`` and ``soft_keys``, probability maps) or
    by nearest neighbour (every other key: integer labels); the intensity transforms touch ``image_key``
    only. Each sample draws its own parameters, as a per-sample MONAI pipeline would; the channels of one
    sample (2.5D neighbours) share them. In order, each with its own probability per sample:

    - **affine**: rotation :math:`\theta \sim U(-r, r)` and per-axis scale :math:`s_a \sim 1 + U(-s, s)`
      about the crop centre, zero outside; short-axis planning varies by a few degrees and hearts differ
      in size. The matrix :math:`R(\theta)\,\mathrm{diag}(s)` maps an output pixel to where it is read
      from, as MONAI's ``RandAffine`` applies its grid. Each axis draws its own scale: the EMIDEC PNGs
      were resized to 256 x 256 from grids of other aspect ratios, so their hearts are stretched by
      differing amounts along the two axes. (The per-sample list's ``RandAffined(scale_range=0.15)``
      scaled the first axis only: MONAI pads a one-value range with "no scaling".);
    - **flips** of the rows and of the columns, each with probability ``flip_prob``;
    - **bias field** of the receive coils: :math:`x \leftarrow x\,\exp\big(\sum_{0 \le j \le i \le d}
      c_{ij} P_i(u) P_j(v)\big)`, :math:`P` Legendre polynomials on :math:`u, v \in [-1, 1]` across rows and
      columns, :math:`c_{ij} \sim U(\text{bias\_coeff})`, :math:`d = 3` (MONAI's ``RandBiasField``);
    - **gamma**, since the inversion time sets myocardial nulling and blood-scar contrast:
      :math:`x \leftarrow ((x - m) / (R + 10^{-7}))^{\gamma} R + m`, :math:`m, R` the sample's minimum and
      range, :math:`\gamma \sim U(\text{gamma})` (MONAI's ``AdjustContrast``);
    - **Rician noise** of magnitude images: :math:`x \leftarrow \sqrt{(x + n_1)^2 + n_2^2}`,
      :math:`n_{1,2} \sim N(0, \sigma^2)`, :math:`\sigma \sim U(0, \text{rician\_std})` (``RandRicianNoise``);
    - **Gaussian noise**, its high-SNR limit: :math:`x \leftarrow x + n`, :math:`n \sim N(0, \sigma^2)`,
      :math:`\sigma \sim U(0, \text{gaussian\_std})` (``RandGaussianNoise``);
    - **Gibbs ringing** from k-space truncation: MONAI's ``GibbsNoise`` with :math:`\alpha \sim U(\text{gibbs\_alpha})`.

    Random draws come from torch's generator of the batch's device, so ``set_determinism`` repeats a run.

    Args:
        keys: the batch entries that move together; must hold ``image_key`` and ``soft_keys``.
        image_key: the entry the intensity transforms change.
        soft_keys: probability maps, interpolated bilinearly like the image.
        *_prob: each transform's probability per sample, in [0, 1].
        rotate_range: the largest rotation, radians. scale_range: the largest relative scale change, in [0, 1).
        bias_coeff, gamma, gibbs_alpha: (low, high) ranges of the drawn parameter; gamma > 0, alpha in [0, 1].
        rician_std, gaussian_std: the largest noise SD drawn, >= 0, on the [0, 1] intensity scale.

    Raises:
        ValueError: a key set, probability or range outside the above; in ``__call__``, a batch whose
            entries are not (N, C, H, W) of one N, H and W.
    """

    def __init__(
        self,
        keys: Sequence[str] = (IMAGE, LABEL),
        *,
        image_key: str = IMAGE,
        soft_keys: Sequence[str] = (),
        affine_prob: float = 0.7,
        rotate_range: float = 0.26,  # +-15 degrees
        scale_range: float = 0.15,
        flip_prob: float = 0.5,
        bias_prob: float = 0.4,
        bias_coeff: tuple[float, float] = (0.0, 0.3),
        gamma_prob: float = 0.5,
        gamma: tuple[float, float] = (0.7, 1.5),
        rician_prob: float = 0.25,
        rician_std: float = 0.04,
        gaussian_prob: float = 0.15,
        gaussian_std: float = 0.03,
        gibbs_prob: float = 0.2,
        gibbs_alpha: tuple[float, float] = (0.0, 0.5),
    ):
        if image_key not in keys or not set(soft_keys) <= set(keys):
            raise ValueError(
                f"image_key {image_key!r} and soft_keys {list(soft_keys)} must be among keys {list(keys)}."
            )
        probs = dict(affine=affine_prob, flip=flip_prob, bias=bias_prob, gamma=gamma_prob)
        probs.update(rician=rician_prob, gaussian=gaussian_prob, gibbs=gibbs_prob)
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}_prob must be within [0, 1], got {p}.")
        if not 0.0 <= scale_range < 1.0 or rotate_range < 0.0:
            raise ValueError(f"scale_range must be in [0, 1) and rotate_range >= 0, got {scale_range}, {rotate_range}.")
        for name, (low, high), floor in (("bias_coeff", bias_coeff, -math.inf), ("gamma", gamma, 0.0)):
            if not floor < low <= high:
                raise ValueError(f"{name} must be an ordered (low, high) range above {floor}, got {(low, high)}.")
        if not 0.0 <= gibbs_alpha[0] <= gibbs_alpha[1] <= 1.0:
            raise ValueError(f"gibbs_alpha must satisfy 0 <= a <= b <= 1, got {gibbs_alpha}.")
        if min(rician_std, gaussian_std) < 0.0:
            raise ValueError(f"noise SDs must be >= 0, got rician {rician_std}, gaussian {gaussian_std}.")
        self.keys, self.image_key = list(keys), image_key
        self.bilinear = {image_key, *soft_keys}
        self.probs = probs
        self.rotate_range, self.scale_range = rotate_range, scale_range
        self.bias_coeff, self.gamma = bias_coeff, gamma
        self.rician_std, self.gaussian_std, self.gibbs_alpha = rician_std, gaussian_std, gibbs_alpha
        self.bias_degree = 3
        self._warp = {
            mode: AffineTransform(normalized=False, zero_centered=True, mode=mode, padding_mode="zeros")
            for mode in ("bilinear", "nearest")
        }

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A new dict: ``keys`` augmented, every other entry as given. Shape: each key (N, C, H, W)."""
        image = batch[self.image_key]
        if image.ndim != 4:
            raise ValueError(f"{self.image_key} must be a batch (N, C, H, W), got shape {tuple(image.shape)}.")
        for key in self.keys:
            if batch[key].shape[0] != image.shape[0] or batch[key].shape[2:] != image.shape[2:]:
                raise ValueError(f"{key} {tuple(batch[key].shape)} must match {self.image_key} {tuple(image.shape)}.")
        out = dict(batch)
        self._geometry(out)
        out[self.image_key] = self._intensity(out[self.image_key].float())
        return out

    def _geometry(self, out: dict[str, torch.Tensor]) -> None:
        n, device = out[self.image_key].shape[0], out[self.image_key].device
        picked = torch.nonzero(_chance(n, self.probs["affine"], device)).flatten()
        if picked.numel():  # only the picked samples are resampled; the others stay bit-identical
            angle = _uniform(picked.numel(), -self.rotate_range, self.rotate_range, device)
            scale = _uniform((picked.numel(), 2), 1 - self.scale_range, 1 + self.scale_range, device)
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta = torch.zeros(picked.numel(), 3, 3, device=device)
            theta[:, 0, 0], theta[:, 0, 1] = cos * scale[:, 0], -sin * scale[:, 1]
            theta[:, 1, 0], theta[:, 1, 1] = sin * scale[:, 0], cos * scale[:, 1]
            theta[:, 2, 2] = 1.0
            for key in self.keys:
                mode = "bilinear" if key in self.bilinear else "nearest"
                warped = self._warp[mode](out[key][picked].float(), theta)
                out[key] = out[key].float().index_copy(0, picked, warped)
        for dim in (2, 3):
            flip = _chance(n, self.probs["flip"], device).view(n, 1, 1, 1)
            for key in self.keys:
                out[key] = torch.where(flip, out[key].flip(dim), out[key])

    def _intensity(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        device = x.device
        each = (n, 1, 1, 1)
        # Bias field: sum over the lower triangle j <= i of the (d + 1)^2 Legendre products, as MONAI fills it.
        bias = _chance(n, self.probs["bias"], device)
        if bias.any():
            d = self.bias_degree
            lower = torch.tril(torch.ones(d + 1, d + 1, device=device))
            coeff = _uniform((n, d + 1, d + 1), *self.bias_coeff, device) * lower
            rows = _legendre(torch.linspace(-1.0, 1.0, h, device=device), d)
            cols = _legendre(torch.linspace(-1.0, 1.0, w, device=device), d)
            field = torch.exp(torch.einsum("nij,ia,jb->nab", coeff, rows, cols))[:, None]
            x = torch.where(bias.view(each), x * field, x)
        gamma = _chance(n, self.probs["gamma"], device)
        if gamma.any():
            low = x.amin(dim=(1, 2, 3), keepdim=True)
            spread = x.amax(dim=(1, 2, 3), keepdim=True) - low
            g = _uniform(each, *self.gamma, device)
            adjusted = ((x - low) / (spread + 1e-7)).clamp_min(0.0) ** g * spread + low
            x = torch.where(gamma.view(each), adjusted, x)
        rician = _chance(n, self.probs["rician"], device)
        if rician.any():
            sigma = _uniform(each, 0.0, self.rician_std, device)
            noisy = torch.sqrt((x + sigma * torch.randn_like(x)) ** 2 + (sigma * torch.randn_like(x)) ** 2)
            x = torch.where(rician.view(each), noisy, x)
        gaussian = _chance(n, self.probs["gaussian"], device)
        if gaussian.any():
            sigma = _uniform(each, 0.0, self.gaussian_std, device)
            x = torch.where(gaussian.view(each), x + sigma * torch.randn_like(x), x)
        gibbs = torch.nonzero(_chance(n, self.probs["gibbs"], device)).flatten()
        if gibbs.numel():
            alphas = _uniform(gibbs.numel(), *self.gibbs_alpha, device).tolist()
            # One k-space filter per sample and alpha: GibbsNoise is a (C, H, W) transform.
            rung = torch.stack(
                [
                    convert_to_tensor(GibbsNoise(a)(x[i]), track_meta=False)  # no MetaTensor out of one batch in five
                    for i, a in zip(gibbs.tolist(), alphas, strict=True)
                ]
            )
            x = x.index_copy(0, gibbs, rung.to(x.dtype))
        return x


class TrainingAugmentation:
    """The augmentation of a training batch: the segmenter's crops (with a soft scar target when the batch
    has one) and, drawn apart, the localiser's whole slices. Shape: each entry (N, C, H, W)."""

    def __init__(self):
        self.crops = AugmentBatch((IMAGE, LABEL))
        self.soft_crops = AugmentBatch((IMAGE, LABEL, SCAR_PROBABILITY), soft_keys=(SCAR_PROBABILITY,))
        self.localiser = AugmentBatch((LOCALISER_IMAGE, LOCALISER_HEART), image_key=LOCALISER_IMAGE)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = (self.soft_crops if SCAR_PROBABILITY in batch else self.crops)(batch)
        return self.localiser(batch) if LOCALISER_IMAGE in batch else batch
