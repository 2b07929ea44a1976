"""Transform lists shared by inference, training and active learning.

Every task starts from :func:`preprocess`, so a study is read, oriented and normalised the same way
whoever looks at it; training only adds :func:`augment_slices`.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    EnsureChannelFirstd,
    EnsureTyped,
    Lambdad,
    LoadImaged,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGibbsNoised,
    RandRicianNoised,
    Spacingd,
)

from ..constants import IMAGE, LABEL
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


def augment_slices(
    keys: Sequence[str] = (IMAGE, LABEL), *, image_key: str = IMAGE, soft_keys: Sequence[str] = ()
) -> list:
    """Random MR-specific augmentation of 2D crops (C, H, W); the label moves only with geometry.

    ``keys`` move together; the image and ``soft_keys`` (probability maps) are interpolated
    bilinearly, every other key (integer labels) by nearest neighbour.

    Geometry: small rotation and scale (short-axis planning varies by a few degrees and hearts differ
    in size), flips. Contrast: gamma, since the inversion time sets myocardial nulling and blood-scar
    contrast. Scanner: receive-coil bias field, Rician noise of magnitude images (and Gaussian noise,
    its high-SNR limit), Gibbs ringing from k-space truncation.
    """
    keys = list(keys)
    return [
        RandAffined(
            keys=keys,
            prob=0.7,
            rotate_range=0.26,  # +-15 degrees
            scale_range=0.15,
            mode=["bilinear" if k == image_key or k in soft_keys else "nearest" for k in keys],
            padding_mode="zeros",
        ),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
        RandBiasFieldd(keys=image_key, prob=0.4, coeff_range=(0.0, 0.3)),
        RandAdjustContrastd(keys=image_key, prob=0.5, gamma=(0.7, 1.5)),
        RandRicianNoised(keys=image_key, prob=0.25, std=0.04, relative=False),
        RandGaussianNoised(keys=image_key, prob=0.15, std=0.03),
        RandGibbsNoised(keys=image_key, prob=0.2, alpha=(0.0, 0.5)),
    ]
