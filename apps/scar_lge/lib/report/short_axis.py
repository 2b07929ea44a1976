"""Where the LV lies in a short-axis stack: slice centres, which end is the base, and the angular anchor.

Angles in the image plane are measured in mm (pixel spacing applied) from the +i (first, x) axis toward
the +j axis, in degrees. The anchor is the anterior right-ventricular (RV) insertion point, where the AHA
model (Cerqueira et al., Circulation 2002;105:539-542) puts the border of the anterior and anteroseptal
segments. Angles around the LV "from the anchor toward the septum" (``phi``) then place every segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..constants import HEART, LV_WALL
from .aha import ANTERIOR_CENTRE_FROM_INSERTION_DEG

if TYPE_CHECKING:  # annotations only: the phantoms (training) use this module where no image reader is installed
    from ..label_io import Geometry

# Patient directions in DICOM/ITK LPS: +x left, +y posterior, +z superior.
ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])
RIGHT_LPS = np.array([-1.0, 0.0, 0.0])
# The LV long axis runs from the base toward the apex: leftward, anterior and inferior in every normal
# chest (the apex beat lies in the left fifth intercostal space, mid-clavicular line).
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / math.sqrt(3.0)
# Without an RV label the anchor comes from the patient axes: the anterior segment is centred on the
# anterior direction projected into the slice, the septum faces the patient's right, so the anterior RV
# insertion (border of segments 1 and 2) lies 30 degrees from anterior toward the septum. An approximation
# of a real heart's insertion point, said so in the report.
ORIENTATION_ANCHOR_DEG = ANTERIOR_CENTRE_FROM_INSERTION_DEG
# A projected patient axis shorter than this (the slice nearly perpendicular to it) gives no direction.
MIN_PROJECTION = 0.2
# The basal third of an LV stack is larger in cross-section than the apical third: the ventricle tapers
# toward the apex. A ratio of mean LV areas (cavity plus wall) beyond this says which end is which.
TAPER_RATIO = 1.15
# |cos| between the slice normal and the LV long axis's usual direction below this: no base-apex call.
MIN_AXIS_COSINE = 0.3


@dataclass(frozen=True)
class Anchor:
    """The anterior RV insertion as an image-plane angle, the rotation sense toward the septum, its source."""

    insertion_deg: float | None
    septal_sense: int | None  # +1: the septum lies at increasing image angle from the anchor, -1: decreasing
    source: str | None  # "rv_label", "patient_orientation" or None (not found)
    note: str

    def phi_deg(self, image_deg: np.ndarray) -> np.ndarray:
        """Angle from the anchor toward the septum, in [0, 360), of image-plane angles."""
        if self.insertion_deg is None or self.septal_sense is None:
            raise ValueError("no anchor: angles from the RV insertion are undefined.")
        return np.mod(self.septal_sense * (np.asarray(image_deg, float) - self.insertion_deg), 360.0)


@dataclass(frozen=True)
class BaseApex:
    """Which end of the stack is the base, and how that was decided."""

    first_slice_is_base: bool | None
    source: str | None  # "anatomy", "patient_orientation" or None
    note: str
    header_disagrees: bool = False  # the header's slice direction says the opposite of the LV's taper


def lv_centres_mm(label: np.ndarray, spacing_mm) -> dict[int, tuple[float, float]]:
    """Per slice with LV wall, the centroid of the LV (cavity and wall) in image-plane mm (i*sx, j*sy)."""
    centres = {}
    for k in range(label.shape[2]):
        if not np.isin(label[..., k], LV_WALL).any():
            continue
        i, j = np.nonzero(np.isin(label[..., k], HEART))
        centres[k] = (float(i.mean() * spacing_mm[0]), float(j.mean() * spacing_mm[1]))
    return centres


def image_angles_deg(centre_mm, spacing_mm, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Image-plane angles (degrees, [0, 360)) of voxels (i, j) around ``centre_mm``."""
    u = i * spacing_mm[0] - centre_mm[0]
    v = j * spacing_mm[1] - centre_mm[1]
    return np.mod(np.degrees(np.arctan2(v, u)), 360.0)


def _axes_lps(geometry: Geometry) -> np.ndarray:
    """(3, 3) matrix whose columns are the i, j, k axis directions in LPS."""
    return np.asarray(geometry.direction, float).reshape(3, 3)


def _patient_frame(geometry: Geometry) -> tuple[float, int] | None:
    """Image angle of the projected anterior direction and the sense toward patient right; None if undefined."""
    axes = _axes_lps(geometry)
    anterior = np.array([ANTERIOR_LPS @ axes[:, 0], ANTERIOR_LPS @ axes[:, 1]])
    right = np.array([RIGHT_LPS @ axes[:, 0], RIGHT_LPS @ axes[:, 1]])
    if np.linalg.norm(anterior) < MIN_PROJECTION or np.linalg.norm(right) < MIN_PROJECTION:
        return None
    cross = anterior[0] * right[1] - anterior[1] * right[0]
    if abs(cross) < MIN_PROJECTION * MIN_PROJECTION:
        return None
    return math.degrees(math.atan2(anterior[1], anterior[0])) % 360.0, 1 if cross > 0 else -1


def _rv_insertions_deg(rv: np.ndarray, centres: dict, spacing_mm, septal_sense: int) -> list[float]:
    """Per slice with LV and RV, the anterior end of the RV's angular extent around the LV centre."""
    found = []
    for k, centre in centres.items():
        i, j = np.nonzero(rv[..., k])
        if i.size == 0:
            continue
        angles = np.sort(image_angles_deg(centre, spacing_mm, i, j))
        # The RV wraps the septum as one arc; its ends are where the widest empty gap begins and ends.
        gaps = np.diff(np.concatenate([angles, angles[:1] + 360.0]))
        widest = int(np.argmax(gaps))
        arc_start = angles[(widest + 1) % angles.size]  # first angle of the arc, going up in image angle
        arc_end = angles[widest]
        # Going from the anterior insertion toward the septum runs along the arc in the septal sense.
        found.append(float(arc_start if septal_sense > 0 else arc_end))
    return found


def _circular_mean_deg(angles: list[float]) -> float:
    radians = np.radians(angles)
    return math.degrees(math.atan2(np.sin(radians).mean(), np.cos(radians).mean())) % 360.0


def find_anchor(
    label: np.ndarray,
    geometry: Geometry,
    *,
    orientation_recorded: bool,
    rv: np.ndarray | None = None,
    orientation_note: str = "",
) -> Anchor:
    """The anterior RV insertion: from an RV label when one is given and overlaps the LV slices, else from
    the patient orientation of the header.

    Both need the header's orientation: the RV label gives the insertion's two candidate ends, and only the
    patient axes say which of them is anterior (and on which side the septum is).

    Args:
        label: (x, y, z) EMIDEC classes.
        geometry: the study's grid (:func:`lib.label_io.read_geometry`).
        orientation_recorded: whether the header records its orientation (:func:`lib.label_io.header_facts`).
        rv: (x, y, z) boolean RV mask on the same grid, or None.
        orientation_note: why a header's orientation was not taken as recorded, for the note.
    """
    if not orientation_recorded:
        why = orientation_note or "the image header records no patient orientation"
        return Anchor(None, None, None, f"{why}, so anterior and septal cannot be told apart")
    frame = _patient_frame(geometry)
    if frame is None:
        return Anchor(
            None,
            None,
            None,
            "the slices are nearly perpendicular to the anterior or right patient axis: not a short-axis orientation",
        )
    anterior_deg, septal_sense = frame
    centres = lv_centres_mm(label, geometry.spacing)
    if rv is not None:
        insertions = _rv_insertions_deg(np.asarray(rv, bool), centres, geometry.spacing, septal_sense)
        if insertions:
            return Anchor(
                _circular_mean_deg(insertions),
                septal_sense,
                "rv_label",
                f"anterior end of the RV label's angular extent around the LV centre, mean of {len(insertions)} "
                "slice(s); which end is anterior from the header's patient orientation",
            )
        rv_note = "the RV label has no voxel on a slice with LV wall; "
    else:
        rv_note = ""
    return Anchor(
        (anterior_deg + septal_sense * ORIENTATION_ANCHOR_DEG) % 360.0,
        septal_sense,
        "patient_orientation",
        f"{rv_note}no RV label: the anterior RV insertion is taken {ORIENTATION_ANCHOR_DEG:g} degrees from the "
        "patient's anterior direction (projected into the slice) toward the patient's right; an approximation, "
        "give an RV label for the anatomical anchor",
    )


def find_base_apex(label: np.ndarray, geometry: Geometry, *, orientation_recorded: bool) -> BaseApex:
    """Which end of the stack is the base: the LV's taper when it is clear, else the header's slice direction.

    When both decide and disagree, the taper wins (a header can be wrong; a ventricle does not widen toward
    its apex) and the note says so.
    """
    wall_slices = [k for k in range(label.shape[2]) if np.isin(label[..., k], LV_WALL).any()]
    by_orientation = None
    if orientation_recorded:
        cosine = float(_axes_lps(geometry)[:, 2] @ APEX_DIRECTION_LPS)
        if abs(cosine) >= MIN_AXIS_COSINE:
            by_orientation = cosine > 0  # slice index grows toward the apex: the first slice is basal
    by_anatomy = None
    if len(wall_slices) >= 3:
        areas = [np.isin(label[..., k], HEART).sum() for k in wall_slices]
        third = max(1, len(areas) // 3)
        first, last = float(np.mean(areas[:third])), float(np.mean(areas[-third:]))
        if first > TAPER_RATIO * last:
            by_anatomy = True
        elif last > TAPER_RATIO * first:
            by_anatomy = False
    if by_anatomy is not None:
        note = "the LV's cross-section shrinks toward the apex"
        disagrees = by_orientation is not None and by_orientation != by_anatomy
        if disagrees:
            note += "; the header's slice direction says the opposite, so the header's orientation is suspect"
        return BaseApex(by_anatomy, "anatomy", note, header_disagrees=disagrees)
    if by_orientation is not None:
        return BaseApex(
            by_orientation,
            "patient_orientation",
            "the LV's taper is unclear; from the header's "
            "slice direction and the usual base-to-apex axis (left, anterior, inferior)",
        )
    return BaseApex(None, None, "neither the LV's taper nor the header's orientation says which end is the base")
