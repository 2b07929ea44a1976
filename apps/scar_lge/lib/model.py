"""The scar model, declared once: grid, crop, networks and the heart-localise-then-segment forward pass.

Inference, training, active learning and the default-model script all build the model from here, so
the in-plane spacing, crop size and intensity normalisation cannot drift apart between them. This
module depends on torch and MONAI only (no server), so the model can be trained where MONAI Label is
not installed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

from .constants import BACKGROUND, LABELS, NUM_CLASSES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """Geometry and normalisation shared by every task.

    LGE short-axis stacks are thick-sliced (6-13 mm), so the model is 2D: slices are resampled in-plane
    only, to ``spacing_mm``, and never interpolated across slices.
    """

    spacing_mm: float = 1.5
    roi_size_vox: tuple[int, int] = (128, 128)  # 192 mm: the LV plus margin for a localiser miss
    localiser_downsample: int = 2  # localiser sees a 3 mm grid: the whole chest fits a small net
    percentiles: tuple[float, float] = (0.5, 99.5)
    dropout: float = 0.1
    # 2.5D input: the segmenter sees this many neighbouring slices on each side as extra channels
    # (0 = plain 2D). Neighbours are whole slices of the same stack, never interpolated between.
    context_slices: int = 0

    @property
    def segmenter_channels(self) -> int:
        return 1 + 2 * self.context_slices


SPEC = ModelSpec()


def normalise_intensity(volume: torch.Tensor) -> torch.Tensor:
    """Map a study's robust intensity range to [0, 1], clipping outside; LGE has no absolute scale.

    Same mapping as MONAI's ``ScaleIntensityRangePercentiles(clip=True)``, written out because MONAI
    computes the percentiles with torch.quantile (a full sort), which made this a quarter of the
    training data-loading time; numpy's partial sort gives the same two numbers far faster.

    Shape: any; percentiles are taken over the whole tensor (one study or one study's heart crop).
    """
    lower, upper = np.percentile(volume.detach().float().cpu().numpy(), SPEC.percentiles)
    return ((volume - float(lower)) / max(float(upper - lower), 1e-6)).clamp(0.0, 1.0)


def crop_at(slices: torch.Tensor, center_vox: tuple[int, int], size_vox: tuple[int, int]) -> torch.Tensor:
    """Crop (N, C, H, W) to ``size_vox`` centred at ``center_vox``, zero-padding outside the image."""
    _, _, h, w = slices.shape
    top, left = center_vox[0] - size_vox[0] // 2, center_vox[1] - size_vox[1] // 2
    pad = (max(0, -left), max(0, left + size_vox[1] - w), max(0, -top), max(0, top + size_vox[0] - h))
    padded = F.pad(slices, pad)
    top, left = top + pad[2], left + pad[0]
    return padded[:, :, top : top + size_vox[0], left : left + size_vox[1]]


def with_neighbours(crops: torch.Tensor, context: int = SPEC.context_slices) -> torch.Tensor:
    """Stack each slice with its ``context`` neighbours on either side as channels (2.5D input).

    The first and last slices repeat themselves where the stack ends, so every slice gets the same
    number of channels; channel ``context`` is the slice itself.

    Shape: (D, 1, H, W), one study's slices in stack order -> (D, 1 + 2 * context, H, W).
    """
    if context == 0:
        return crops
    depth = crops.shape[0]
    offsets = torch.arange(-context, context + 1, device=crops.device)
    index = (torch.arange(depth, device=crops.device)[:, None] + offsets).clamp(0, depth - 1)  # (D, C)
    return crops[:, 0][index]


def paste_at(crop_probs: torch.Tensor, center_vox: tuple[int, int], full_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`crop_at` for class probabilities: outside the crop is certain background.

    Shape: crop_probs (N, K, h, w) -> (N, K, H, W).
    """
    n, k, ch, cw = crop_probs.shape
    h, w = full_hw
    full = crop_probs.new_zeros((n, k, h, w))
    full[:, BACKGROUND] = 1.0
    top, left = center_vox[0] - ch // 2, center_vox[1] - cw // 2
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + ch, h), min(left + cw, w)
    full[:, :, y0:y1, x0:x1] = crop_probs[:, :, y0 - top : y1 - top, x0 - left : x1 - left]
    return full


def heart_center(heart_prob: torch.Tensor) -> tuple[tuple[int, int], bool]:
    """Centre of the heart from per-slice heart probabilities.

    One centre serves the whole stack: short-axis slices are stacked along the LV long axis, so the
    LV centre moves only a few millimetres from base to apex, far less than the crop margin.

    Shape: heart_prob (D, H, W) in [0, 1]. Returns ((row, col), found); ``found`` is False when no
    slice shows a heart and the image centre was used instead.
    """
    evidence = heart_prob.mean(dim=0)
    h, w = evidence.shape
    if float(evidence.max()) < 0.25:
        return (h // 2, w // 2), False
    weights = evidence * (evidence > 0.5 * evidence.max())
    rows = torch.arange(h, dtype=weights.dtype, device=weights.device)
    cols = torch.arange(w, dtype=weights.dtype, device=weights.device)
    total = weights.sum()
    row = int(round(float((weights.sum(dim=1) * rows).sum() / total)))
    col = int(round(float((weights.sum(dim=0) * cols).sum() / total)))
    return (row, col), True


# The two networks' arguments, declared once: the checkpoint recipe records them, so a checkpoint of a
# different architecture is refused by name rather than failing on a missing weight.
LOCALISER_ARGS = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "channels": (8, 16, 32, 64),
    "strides": (2, 2, 2),
    "num_res_units": 1,
}
SEGMENTER_ARGS = {
    "spatial_dims": 2,
    "in_channels": SPEC.segmenter_channels,
    "out_channels": NUM_CLASSES,
    "channels": (16, 32, 64, 128, 256),
    "strides": (2, 2, 2, 2),
    "num_res_units": 2,
}


# The flips of a crop (N, C, H, W) besides the identity: rows, columns, both.
FLIP_DIMS = ((2,), (3,), (2, 3))


class ScarNet(nn.Module):
    """Heart localiser plus in-crop segmenter, the two-stage design of the source method.

    The localiser (a small 2D U-Net on a coarse grid) finds the heart in the full field of view; the
    segmenter (a 2D U-Net with dropout, for Monte-Carlo uncertainty) labels a fixed-size crop around it
    in the EMIDEC classes. So a full chest at 0.7 mm and a tight crop at 1.5 mm reach the segmenter
    looking alike.
    """

    def __init__(self, dropout: float = SPEC.dropout):
        super().__init__()
        self.localiser = UNet(**LOCALISER_ARGS)
        self.segmenter = UNet(**SEGMENTER_ARGS, dropout=dropout)

    def localiser_logits(self, slices: torch.Tensor) -> torch.Tensor:
        """Heart logits on the coarse grid. Shape: (N, 1, H, W) -> (N, 2, ceil(H/f), ceil(W/f)), f the downsampling."""
        _, _, h, w = slices.shape
        factor = SPEC.localiser_downsample
        multiple = factor * 2 ** (len(self.localiser.channels) - 1)
        padded = F.pad(slices, (0, (-w) % multiple, 0, (-h) % multiple))
        return self.localiser(F.avg_pool2d(padded, factor))

    def localise(self, slices: torch.Tensor) -> torch.Tensor:
        """Heart probability per pixel. Shape: (N, 1, H, W) normalised image -> (N, H, W)."""
        _, _, h, w = slices.shape
        probs = torch.softmax(self.localiser_logits(slices).float(), dim=1)[:, 1:2]
        return F.interpolate(probs, scale_factor=SPEC.localiser_downsample, mode="bilinear")[:, 0, :h, :w]

    def segment(self, crops: torch.Tensor) -> torch.Tensor:
        """Segmenter logits. Shape: (N, C, *roi_size_vox) -> (N, NUM_CLASSES, *roi_size_vox), C from SPEC."""
        return self.segmenter(crops)

    def segment_passes(self, crops: torch.Tensor, *, flip_tta: bool = True) -> torch.Tensor:
        """Class probabilities of each pass: the crops as given, then each in-plane flip (undone).

        Shape: (N, C, *roi_size_vox) -> (P, N, NUM_CLASSES, *roi_size_vox), P = 4 with ``flip_tta``
        else 1; C = ``SPEC.segmenter_channels``.
        """
        passes = [torch.softmax(self.segment(crops).float(), dim=1)]
        if flip_tta:
            passes += [torch.softmax(self.segment(crops.flip(dims)).float(), dim=1).flip(dims) for dims in FLIP_DIMS]
        return torch.stack(passes)

    def segment_probs(self, crops: torch.Tensor, *, flip_tta: bool = True) -> torch.Tensor:
        """Class probabilities of crops, averaged over the four in-plane flips when ``flip_tta``.

        Flip test-time augmentation: the answer no longer depends on which way the short-axis plane
        was displayed, and on the shipped model's 13 held-out EMIDEC exams it raised infarct Dice from
        0.537 to 0.558 and wall Dice from 0.824 to 0.832 (docs/model-card.md).

        Shape: (N, C, *roi_size_vox) -> (N, NUM_CLASSES, *roi_size_vox), C = ``SPEC.segmenter_channels``.
        """
        return self.segment_passes(crops, flip_tta=flip_tta).mean(dim=0)

    def locate(self, volume: torch.Tensor) -> tuple[tuple[int, int], bool]:
        """Heart centre of one study (see :func:`heart_center`). Shape: volume (1, H, W, D)."""
        with torch.no_grad(), torch.autocast(volume.device.type, dtype=torch.bfloat16, enabled=volume.is_cuda):
            return heart_center(self.localise(volume.permute(3, 0, 1, 2)))

    def heart_crops(self, volume: torch.Tensor) -> tuple[tuple[int, int], bool, torch.Tensor]:
        """One study as the segmenter sees it: the heart located, its crop normalised, neighbours as channels.

        Inference (:meth:`forward`) and uncertainty scoring both call this, so they cannot drift apart.
        Shape: volume (1, H, W, D) -> (centre, found, crops (D, C, *roi_size_vox)), C = ``SPEC.segmenter_channels``.
        """
        center, found = self.locate(volume)
        slices = volume.permute(3, 0, 1, 2)  # (D, 1, H, W)
        return center, found, with_neighbours(normalise_intensity(crop_at(slices, center, SPEC.roi_size_vox)))

    def forward(self, image: torch.Tensor, *, flip_tta: bool = True, keep_passes: bool = False) -> torch.Tensor:
        """Class probabilities on the input grid, flip-averaged unless ``flip_tta`` is False.

        ``keep_passes`` returns each flip pass instead of their mean (:meth:`segment_passes`): their
        spread is the test-time-augmentation uncertainty of the figures (lib/calibration.py).

        Shape: image (B, 1, H, W, D), a normalised study on the model's in-plane grid ->
        probs (B, NUM_CLASSES, H, W, D), or (P, B, NUM_CLASSES, H, W, D) with ``keep_passes``.
        """
        b, _, h, w, d = image.shape
        out = []
        with torch.autocast(device_type=image.device.type, dtype=torch.bfloat16, enabled=image.is_cuda):
            for volume in image:
                center, found, crops = self.heart_crops(volume)
                if not found:
                    logger.warning("No heart found by the localiser; segmenting the image centre")
                passes = self.segment_passes(crops, flip_tta=flip_tta)
                if not keep_passes:
                    passes = passes.mean(dim=0, keepdim=True)
                full = torch.stack([paste_at(p, center, (h, w)).permute(1, 2, 3, 0) for p in passes])
                out.append(full if keep_passes else full[0])
        return torch.stack(out, dim=1 if keep_passes else 0)


def build_network(dropout: float = SPEC.dropout) -> ScarNet:
    """The one network factory: infer, train and uncertainty scoring all call it."""
    return ScarNet(dropout=dropout)


CHECKPOINT_KEY = "model"  # state dict key in every checkpoint file; "recipe" and "provenance" sit beside it


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or made for other labels, preprocessing or architecture."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"model checkpoint {path}: {reason}")
        self.path = path
        self.reason = reason


def checkpoint_recipe() -> dict:
    """What inference needs to use a checkpoint correctly: labels, grid and normalisation, architecture.

    JSON-ready (tuples as lists), so the recipe stored in a checkpoint compares equal to this one.
    """
    recipe = {
        "labels": dict(LABELS),
        "spec": asdict(SPEC),
        "architecture": {"name": "ScarNet", "localiser": LOCALISER_ARGS, "segmenter": SEGMENTER_ARGS},
        "preprocessing": "in-plane resampling to spec.spacing_mm; crop of spec.roi_size_vox at the localised "
        "heart; robust percentile intensity scaling to [0, 1] (lib/model.normalise_intensity); "
        "spec.context_slices neighbours each side as channels (lib/model.with_neighbours)",
    }
    return json.loads(json.dumps(recipe))


def default_device() -> str:
    """CUDA when the machine has a GPU, else CPU: every task's default."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def read_checkpoint(path: str) -> dict:
    """The checkpoint's contents, its recipe checked against this code.

    Raises:
        CheckpointError: no file, unreadable, no recipe, or a recipe that differs from
            :func:`checkpoint_recipe` (other labels, spacing, crop, normalisation or architecture).
    """
    if not path or not os.path.isfile(path):
        raise CheckpointError(str(path), "no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(path, f"unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CheckpointError(path, f"not a scar_lge checkpoint (no '{CHECKPOINT_KEY}' weights)")
    recipe = checkpoint.get("recipe")
    if recipe is None:
        raise CheckpointError(path, "carries no recipe (labels, grid, architecture); it cannot be used safely")
    expected = checkpoint_recipe()
    differs = sorted(k for k in set(expected) | set(recipe) if recipe.get(k) != expected.get(k))
    if differs:
        detail = "; ".join(f"{k}: checkpoint {recipe.get(k)!r}, code {expected.get(k)!r}" for k in differs)
        raise CheckpointError(path, f"recipe does not match this code ({detail})")
    return checkpoint


def load_checkpoint(network: nn.Module, path: str) -> dict:
    """Load weights saved by :func:`save_checkpoint` into ``network``; returns the checkpoint's provenance.

    Raises:
        CheckpointError: see :func:`read_checkpoint`; also when the weights do not fit the network.
    """
    checkpoint = read_checkpoint(path)
    try:
        network.load_state_dict(checkpoint[CHECKPOINT_KEY])
    except RuntimeError as e:
        raise CheckpointError(path, f"weights do not fit the network: {str(e).splitlines()[0]}") from e
    return checkpoint.get("provenance", {})


def save_checkpoint(network: nn.Module, path: str, provenance: dict | None = None) -> None:
    """Write ``network``'s weights with this code's recipe, atomically: a reader never sees half a file."""
    tmp = f"{path}.tmp"
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save({CHECKPOINT_KEY: state, "recipe": checkpoint_recipe(), "provenance": provenance or {}}, tmp)
    os.replace(tmp, path)


def enable_mc_dropout(network: nn.Module) -> None:
    """Eval mode everywhere except dropout layers, for Monte-Carlo dropout sampling."""
    network.eval()
    for module in network.modules():
        if isinstance(module, nn.Dropout | nn.Dropout2d):
            module.train()
