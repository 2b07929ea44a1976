"""Transmurality of scar along radial chords of each short-axis slice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import HEART, LV_WALL, TOTAL_SCAR

# One chord per degree: at a 60 mm LV diameter neighbouring chords are 0.5 mm apart at the epicardium,
# finer than any LGE pixel, so every wall pixel is crossed.
CHORDS_PER_SLICE = 360
# Samples per pixel along a chord: fine enough that a chord's wall and scar lengths are within a tenth of
# a pixel of the rasterised label's.
SAMPLES_PER_PIXEL = 10


@dataclass(frozen=True)
class SliceChords:
    """The chords of one slice: image angle (degrees), wall and scar length (mm) of each chord that meets wall."""

    angles_deg: np.ndarray
    wall_mm: np.ndarray
    scar_mm: np.ndarray

    @property
    def transmurality(self) -> np.ndarray:
        """Scar length over wall length of each chord, 0-1."""
        return self.scar_mm / self.wall_mm


def slice_chords(label_slice: np.ndarray, centre_mm: tuple[float, float], spacing_mm) -> SliceChords:
    r"""Scar's share of the wall along rays from the LV centre, one per degree.

    For a ray at angle :math:`\alpha`, sampled every :math:`\delta` mm from the centre out past the LV,

    .. math:: t(\alpha) = \frac{\#\{\text{samples in scar or MVO}\}}{\#\{\text{samples in LV wall}\}}

    i.e. the length of scar along the chord through the wall, from the endocardium to the epicardium, over
    the wall's length along it (1 = transmural). Rays that meet no wall (a gap in the ring) are left out.
    Labels are looked up at the nearest pixel.

    Args:
        label_slice: (x, y) EMIDEC classes of one slice.
        centre_mm: LV centre in image-plane mm (:func:`lib.report.short_axis.lv_centres_mm`).
        spacing_mm: (x, y[, z]) spacing.
    """
    sx, sy = float(spacing_mm[0]), float(spacing_mm[1])
    i, j = np.nonzero(np.isin(label_slice, HEART))
    if i.size == 0:
        empty = np.zeros(0)
        return SliceChords(empty, empty, empty)
    reach = float(np.max(np.hypot(i * sx - centre_mm[0], j * sy - centre_mm[1]))) + 2 * max(sx, sy)
    step = min(sx, sy) / SAMPLES_PER_PIXEL
    radii = np.arange(0.0, reach, step)
    angles = np.arange(CHORDS_PER_SLICE) * (360.0 / CHORDS_PER_SLICE)
    cos, sin = np.cos(np.radians(angles))[:, None], np.sin(np.radians(angles))[:, None]
    pi = np.rint((centre_mm[0] + radii[None, :] * cos) / sx).astype(int)
    pj = np.rint((centre_mm[1] + radii[None, :] * sin) / sy).astype(int)
    inside = (pi >= 0) & (pi < label_slice.shape[0]) & (pj >= 0) & (pj < label_slice.shape[1])
    values = np.zeros(pi.shape, label_slice.dtype)
    values[inside] = label_slice[pi[inside], pj[inside]]
    wall = np.isin(values, LV_WALL).sum(axis=1) * step
    scar = np.isin(values, TOTAL_SCAR).sum(axis=1) * step
    keep = wall > 0
    return SliceChords(angles[keep], wall[keep], scar[keep])
