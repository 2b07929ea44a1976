"""The AHA 16-segment model: levels, segment numbers from angles, transmurality classes and their reading.

Cerqueira et al., Circulation 2002;105:539-542. Basal (1-6) and mid (7-12) levels have six 60-degree
segments, the border of the anterior and anteroseptal segments at the anterior RV insertion point; the
apical level (13-16) has four 90-degree segments, the septal one centred on the septum (120 degrees wide in
the basal and mid levels, between the anterior and inferior RV insertions). The apex cap (17) has no
short-axis slice and is not reported.
"""

from __future__ import annotations

import numpy as np

LEVELS = ("basal", "mid", "apical")
RING_SEGMENT_DEG = 60.0  # basal and mid segments
APICAL_SEGMENT_DEG = 90.0
# The anterior segment is centred half a segment before the anterior RV insertion (away from the septum).
ANTERIOR_CENTRE_FROM_INSERTION_DEG = RING_SEGMENT_DEG / 2
# The septum spans two ring segments from the anterior insertion; the apical septal segment is centred on
# its middle, so the apical segments start this far from the insertion.
APICAL_START_DEG = RING_SEGMENT_DEG - APICAL_SEGMENT_DEG / 2
_RING_NAMES = ("anterior", "anteroseptal", "inferoseptal", "inferior", "inferolateral", "anterolateral")
_APICAL_NAMES = ("anterior", "septal", "inferior", "lateral")
SEGMENT_NAMES: dict[int, str] = {
    **{1 + i: f"basal {n}" for i, n in enumerate(_RING_NAMES)},
    **{7 + i: f"mid {n}" for i, n in enumerate(_RING_NAMES)},
    **{13 + i: f"apical {n}" for i, n in enumerate(_APICAL_NAMES)},
}
SEGMENT_LEVEL: dict[int, str] = {s: SEGMENT_NAMES[s].split()[0] for s in SEGMENT_NAMES}

# Transmural extent classes of Kim et al., NEJM 2000;343:1445-1453, upper bounds in percent.
TRANSMURALITY_CLASSES = (("0", 0.0), ("1-25", 25.0), ("26-50", 50.0), ("51-75", 75.0), ("76-100", 100.0))
OVER_HALF_TRANSMURAL = ("51-75", "76-100")  # the classes unlikely to recover function
# What each class says of recovery after revascularisation in chronic infarction (Kim et al. 2000: of the
# segments with dysfunction, 78 % with no enhancement recovered, 1 of 58 with more than 75 % transmurality).
VIABILITY = {
    "0": "no scar: viable",
    "1-25": "viable: likely to recover function (chronic infarction, at most 50 % transmural)",
    "26-50": "viable: likely to recover function (chronic infarction, at most 50 % transmural)",
    "51-75": "unlikely to recover function (more than 50 % transmural)",
    "76-100": "non-viable: very unlikely to recover function (more than 75 % transmural)",
}


def levels_of_slices(wall_slices: list[int], first_slice_is_base: bool) -> dict[int, str]:
    """Basal, mid and apical thirds of the slices with LV wall, by slice position from the base.

    Slices are split as evenly as possible; with a remainder the basal, then the mid third gets the extra
    slice (the base is where a short-axis stack has most LV).

    Raises:
        ValueError: fewer than 3 slices.
    """
    if len(wall_slices) < 3:
        raise ValueError(f"3 slices with LV wall are needed for basal, mid and apical thirds, got {len(wall_slices)}.")
    ordered = sorted(wall_slices, reverse=not first_slice_is_base)
    return {int(k): level for level, part in zip(LEVELS, np.array_split(ordered, 3), strict=True) for k in part}


def segment_numbers(level: str, phi_deg: np.ndarray) -> np.ndarray:
    """AHA segment numbers of angles ``phi_deg`` measured from the anterior RV insertion toward the septum.

    Basal/mid: [0, 60) anteroseptal, [60, 120) inferoseptal, [120, 180) inferior, [180, 240) inferolateral,
    [240, 300) anterolateral, [300, 360) anterior. Apical: septal centred on the septum's middle (60),
    so [15, 105) septal, [105, 195) inferior, [195, 285) lateral, [285, 15) anterior.
    """
    phi = np.mod(np.asarray(phi_deg, float), 360.0)
    if level in ("basal", "mid"):
        ring = (np.floor(phi / RING_SEGMENT_DEG).astype(int) + 1) % 6  # 0 anterior, 1 anteroseptal, ...
        return ring + (1 if level == "basal" else 7)
    if level == "apical":
        quadrant = (np.floor(np.mod(phi - APICAL_START_DEG, 360.0) / APICAL_SEGMENT_DEG).astype(int) + 1) % 4
        return quadrant + 13
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")


def transmurality_class(percent: float) -> str:
    """Kim et al.'s class of a transmural extent in percent: '0', '1-25', '26-50', '51-75' or '76-100'.

    The classes are whole percentages, so the extent is rounded to one first: a partial-volume sliver under
    0.5 % is '0', not a '1-25' segment "likely to recover"; the bounds are inclusive above (25 % is '1-25').
    """
    if not np.isfinite(percent) or percent < 0 or percent > 100 + 1e-9:
        raise ValueError(f"a transmural extent is a percentage in [0, 100], got {percent}.")
    whole = round(percent)
    for name, upper in TRANSMURALITY_CLASSES:
        if whole <= upper:
            return name
    return TRANSMURALITY_CLASSES[-1][0]
