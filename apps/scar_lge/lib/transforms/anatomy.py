"""Anatomical post-processing of a predicted label."""

from __future__ import annotations

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import KeepLargestConnectedComponent, MapTransform, Transform

from ..constants import LV_CAVITY, LV_WALL


class AnatomicalCleanup(Transform):
    """Keep the LV anatomy a reader would accept, slice by slice.

    One connected LV wall per slice (myocardium, scar and MVO together), one connected cavity, and
    scar or MVO only inside that wall: an infarct is myocardial tissue, so a bright blob elsewhere
    (fat, right-ventricular blood, artefact) is not scar.

    Shape: label (1, H, W, D) or (H, W, D), integer EMIDEC classes; the same shape is returned.
    """

    def __init__(self) -> None:
        self.wall = KeepLargestConnectedComponent(applied_labels=list(LV_WALL), independent=False, connectivity=1)
        self.cavity = KeepLargestConnectedComponent(applied_labels=[LV_CAVITY], connectivity=1)

    def __call__(self, label, *, wall_only: bool = False):
        """The cleaned label; ``wall_only`` skips the cavity step, which changes no wall, scar or MVO voxel
        (so no share of the wall), at half the cost."""
        squeeze = label.ndim == 3
        out = label[None] if squeeze else label
        out = out.clone() if isinstance(out, torch.Tensor) else np.array(out, copy=True)
        for k in range(out.shape[-1]):
            plane = self.wall(out[..., k])
            out[..., k] = plane if wall_only else self.cavity(plane)
        return out[0] if squeeze else out


class AnatomicalCleanupd(MapTransform):
    """Dictionary wrapper of :class:`AnatomicalCleanup`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cleanup = AnatomicalCleanup()

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cleanup(d[key])
        return d
