"""Transform lists shared by inference, training and active learning.

Every task starts from :func:`preprocess`, so a study is read, oriented and normalised the same way
whoever looks at it; training only adds random augmentation, batched on the training device
(:mod:`lib.transforms.slice_augment`).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import EnsureChannelFirstd, EnsureTyped, Lambdad, LoadImaged, Spacingd

from ..constants import IMAGE
from ..model import SPEC, normalise_intensity


def preprocess(keys: Sequence[str] = (IMAGE,), *, load: bool = True) -> list:
    """Read a study and put it on the model's grid: (1, H, W, D), in-plane ``SPEC.spacing_mm``.

    Only the in-plane axes are resampled (a non-positive pixdim keeps the slice spacing): LGE stacks
    are 6-13 mm thick, and interpolating across slices would invent anatomy. No reorientation either,
    so the voxel axes stay the acquisition's and the result inverts onto the input grid exactly.
    Intensities are scaled by the study's own robust percentiles, since LGE has no absolute scale.
    """
    keys = list(keys)
    modes = ["bilinear" if k == IMAGE else "nearest" for k in keys]
    transforms = [LoadImaged(keys=keys, image_only=True)] if load else []
    transforms += [
        EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
        EnsureTyped(keys=keys, dtype=None, track_meta=True),
        Spacingd(keys=keys, pixdim=(SPEC.spacing_mm, SPEC.spacing_mm, -1.0), mode=modes),
        Lambdad(keys=IMAGE, func=normalise_intensity),
    ]
    return transforms
