"""The clinical scar report of one study: per study, per slice and per AHA segment, each figure or why not."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..caveats import FIGURES
from ..constants import LV_CAVITY, LV_WALL, MYOCARDIUM, MYOCARDIUM_DENSITY_G_PER_ML, SCAR, TOTAL_SCAR
from ..label_io import Geometry, HeaderFacts
from ..metrics import voxel_volume_ml
from . import aha, grey_zone, short_axis
from .transmurality import CHORDS_PER_SLICE, SliceChords, slice_chords

REPORT_VERSION = 1
TRANSMURALITY_RULE = (
    f"along {CHORDS_PER_SLICE} radial chords per slice from the LV centre: scar (and MVO) length over wall "
    "length, from the endocardium to the epicardium; per slice the mean and maximum over the chords that "
    "cross scar; per segment the mean over all of its chords (Kim et al., NEJM 2000, classes "
    + ", ".join(name for name, _ in aha.TRANSMURALITY_CLASSES)
    + " %)"
)


def scar_outside_wall(label: np.ndarray) -> dict[int, int]:
    """Scar or MVO voxels per slice that lie outside the LV wall: slice -> voxel count (empty if none).

    A piece of wall (myocardium, scar, MVO; 8-connected in the slice) is LV wall when it holds normal
    myocardium or borders the LV cavity: a ring, a ring broken by partial volume, a transmural arc. Scar in
    any other piece (a bright blob in the blood pool's surroundings, the RV or fat, a slice with scar and
    nothing else) is not myocardial scar.
    """
    eight = np.ones((3, 3), bool)
    outside = {}
    for k in range(label.shape[2]):
        plane = label[..., k]
        pieces, count = ndimage.label(np.isin(plane, LV_WALL), structure=eight)
        if count == 0:
            continue
        near_cavity = ndimage.binary_dilation(plane == LV_CAVITY, structure=eight)
        accepted = {int(p) for p in np.unique(pieces[(plane == MYOCARDIUM) | near_cavity]) if p}
        stray = np.isin(plane, TOTAL_SCAR) & (pieces > 0) & ~np.isin(pieces, list(accepted))
        if stray.any():
            outside[k] = int(stray.sum())
    return outside


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


GREY_ZONE_FIELDS = (
    "mass_g",
    "core_mass_g",
    "percent_lv_mass",
    "percent_of_scar",
    "remote_mean_signal",
    "remote_sd_signal",
    "threshold_signal",
)


def _grey_zone(image: np.ndarray | None, label: np.ndarray, voxel_g: float | None, lv_voxels: int) -> tuple[dict, dict]:
    """Grey-zone figures (:data:`GREY_ZONE_FIELDS`, None where withheld) and ``{field: reason}`` of those withheld."""
    figures = dict.fromkeys(GREY_ZONE_FIELDS)
    if image is None:
        return figures, {"grey_zone": "no image given: the grey zone is a signal-intensity rule"}
    scar_voxels = int(np.isin(label, TOTAL_SCAR).sum())
    grey, reasons = np.zeros(label.shape, bool), {}
    if (label == SCAR).any():  # MVO alone is all core: no enhanced signal to split
        try:
            grey, mean, sd, threshold = grey_zone.split_grey_zone(image, label)
        except ValueError as e:
            return figures, {"grey_zone": str(e)}
        figures.update(
            remote_mean_signal=_round(mean, 3), remote_sd_signal=_round(sd, 3), threshold_signal=_round(threshold, 3)
        )
    grey_voxels = int(grey.sum())
    if voxel_g is None:
        reasons["grey_zone.mass_g"] = reasons["grey_zone.core_mass_g"] = "the image header records no voxel spacing"
    else:
        figures["mass_g"] = _round(grey_voxels * voxel_g)
        figures["core_mass_g"] = _round((scar_voxels - grey_voxels) * voxel_g)
    if lv_voxels:
        figures["percent_lv_mass"] = _round(100.0 * grey_voxels / lv_voxels)
    else:
        reasons["grey_zone.percent_lv_mass"] = "no LV myocardium segmented: a share of zero LV mass is undefined"
    if scar_voxels:
        figures["percent_of_scar"] = _round(100.0 * grey_voxels / scar_voxels)
    else:
        reasons["grey_zone.percent_of_scar"] = "no scar: a share of no scar is undefined"
    return figures, reasons


def _slice_rows(assessed: dict, chords: dict[int, SliceChords], levels: dict[int, str]) -> list:
    rows = []
    for k, figures in enumerate(assessed["per_slice"]):
        row = {
            "slice": k,
            "level": levels.get(k),
            "lv_wall_area_mm2": figures["lv_wall_area_mm2"],
            "scar_area_mm2": figures["scar_area_mm2"],
            "mean_transmurality_percent": None,
            "max_transmurality_percent": None,
            "scar_circumference_percent": None,
        }
        if k in chords and chords[k].angles_deg.size:
            t = chords[k].transmurality
            crossing = t[t > 0]
            row["mean_transmurality_percent"] = _round(100.0 * crossing.mean()) if crossing.size else 0.0
            row["max_transmurality_percent"] = _round(100.0 * t.max())
            row["scar_circumference_percent"] = _round(100.0 * crossing.size / t.size)
        rows.append(row)
    return rows


def _segment_rows(
    label: np.ndarray,
    geometry: Geometry,
    centres: dict,
    levels: dict[int, str],
    anchor: short_axis.Anchor,
    chords: dict[int, SliceChords],
    voxel_g: float | None,
) -> list[dict]:
    wall_voxels = np.zeros(17, int)
    scar_voxels = np.zeros(17, int)
    chord_values: dict[int, list[np.ndarray]] = {s: [] for s in aha.SEGMENT_NAMES}
    for k, level in levels.items():
        plane = label[..., k]
        i, j = np.nonzero(np.isin(plane, LV_WALL))
        angles = short_axis.image_angles_deg(centres[k], geometry.spacing, i, j)
        numbers = aha.segment_numbers(level, anchor.phi_deg(angles))
        wall_voxels += np.bincount(numbers, minlength=17)
        scar_voxels += np.bincount(numbers[np.isin(plane[i, j], TOTAL_SCAR)], minlength=17)
        chord_numbers = aha.segment_numbers(level, anchor.phi_deg(chords[k].angles_deg))
        for number in np.unique(chord_numbers):
            chord_values[int(number)].append(chords[k].transmurality[chord_numbers == number])
    rows = []
    for number, name in aha.SEGMENT_NAMES.items():
        row = {"segment": number, "name": name, "level": aha.SEGMENT_LEVEL[number]}
        if wall_voxels[number] == 0 or not chord_values[number]:
            rows.append({**row, "reason": "no LV wall in this segment"})
            continue
        # A segment without a scar voxel has none: its border chords may graze the neighbour's scar pixels.
        t = 100.0 * np.concatenate(chord_values[number]) * (scar_voxels[number] > 0)
        extent = float(t.mean())
        cls = aha.transmurality_class(extent)
        rows.append(
            {
                **row,
                "wall_mass_g": _round(wall_voxels[number] * voxel_g) if voxel_g is not None else None,
                "scar_mass_g": _round(scar_voxels[number] * voxel_g) if voxel_g is not None else None,
                "scar_percent": _round(100.0 * scar_voxels[number] / wall_voxels[number]),
                "transmural_extent_percent": _round(extent),
                "max_transmurality_percent": _round(float(t.max())),
                "transmurality_class": cls,
                "viability": aha.VIABILITY[cls],
            }
        )
    return rows


def build_report(
    label: np.ndarray,
    geometry: Geometry,
    facts: HeaderFacts,
    assessed: dict,
    *,
    image: np.ndarray | None = None,
    rv: np.ndarray | None = None,
) -> dict:
    """The clinical scar report of a label on its study's grid.

    Study figures are those of :func:`lib.caveats.assess` (masses at
    :data:`lib.constants.MYOCARDIUM_DENSITY_G_PER_ML`, scar = scar + MVO); the report adds the grey zone
    (:mod:`lib.report.grey_zone`), per-slice transmurality (:mod:`lib.report.transmurality`) and the AHA
    segments (:mod:`lib.report.aha`, anchor and levels from :mod:`lib.report.short_axis`). Whatever cannot
    be computed is None, and ``null_reasons`` says why.

    Args:
        label: (x, y, z) EMIDEC classes on the study's grid.
        geometry: the study's grid (spacing in mm, LPS direction).
        facts: what the header records (:func:`lib.label_io.header_facts`).
        assessed: :func:`lib.caveats.assess` of :func:`lib.metrics.scar_quantification` of ``label``.
        image: (x, y, z) LGE signal for the grey zone, or None.
        rv: (x, y, z) boolean RV mask for the anatomical anchor, or None.

    Returns:
        JSON-ready dict: ``study``, ``grey_zone``, ``slices``, ``aha`` (``anchor``, ``base``, ``levels``,
        ``segments``), the rules used, ``warnings`` and ``null_reasons``.

    Raises:
        ValueError: ``label``, ``image`` or ``rv`` is not (x, y, z) on ``geometry``'s grid.
    """
    if label.shape != tuple(geometry.size):
        raise ValueError(f"label shape {label.shape} is not the study's grid {tuple(geometry.size)}.")
    for name, array in (("image", image), ("rv", rv)):
        if array is not None and array.shape != label.shape:
            raise ValueError(f"{name} shape {array.shape} differs from the label's {label.shape}.")
    warnings = [dict(w) for w in assessed["warnings"]]
    null_reasons = dict(assessed["null_reasons"])
    study = {field: assessed[field] for field in FIGURES}
    voxel_g = voxel_volume_ml(geometry.spacing) * MYOCARDIUM_DENSITY_G_PER_ML if facts.spacing_recorded else None
    lv_voxels = int(np.isin(label, LV_WALL).sum())

    # Scar that is not myocardial: every scar figure would count it.
    scar_reason = null_reasons.get("scar_slices")
    outside = scar_outside_wall(label)
    if outside and scar_reason is None:
        scar_reason = (
            f"{sum(outside.values())} scar/MVO voxel(s) lie outside the LV wall ring on slice(s) {sorted(outside)}: "
            "scar is myocardium; correct the label"
        )
        warnings.append({"code": "scar_outside_wall", "message": scar_reason})
        # The stray voxels are counted as LV wall too, so every wall figure but the cavity's is withheld.
        for field in FIGURES:
            if field != "lv_cavity_volume_ml":
                study[field] = None
                null_reasons.setdefault(field, scar_reason)

    if scar_reason is not None:
        grey, grey_reasons = dict.fromkeys(GREY_ZONE_FIELDS), {"grey_zone": scar_reason}
    else:
        grey, grey_reasons = _grey_zone(image, label, voxel_g, lv_voxels)
        lv_share_reason = null_reasons.get("scar_percent_lv_mass")  # too few slices, no myocardium...
        if lv_share_reason and grey["percent_lv_mass"] is not None:
            grey["percent_lv_mass"] = None
            grey_reasons["grey_zone.percent_lv_mass"] = lv_share_reason
    null_reasons.update(grey_reasons)

    centres = short_axis.lv_centres_mm(label, geometry.spacing)
    chords = {k: slice_chords(label[..., k], centre, geometry.spacing) for k, centre in centres.items()}
    anchor = short_axis.find_anchor(
        label, geometry, orientation_recorded=facts.orientation_recorded, rv=rv, orientation_note=facts.orientation_note
    )
    base = short_axis.find_base_apex(label, geometry, orientation_recorded=facts.orientation_recorded)
    levels: dict[int, str] = {}
    segments_reason = None
    if len(centres) < 3:
        segments_reason = f"{len(centres)} slice(s) with LV wall: basal, mid and apical thirds need at least 3"
    elif base.first_slice_is_base is None:
        segments_reason = f"base and apex cannot be told apart: {base.note}"
    else:
        levels = aha.levels_of_slices(sorted(centres), base.first_slice_is_base)
        if anchor.source is None:
            segments_reason = f"no angular anchor: {anchor.note}"
        elif base.header_disagrees:
            # Even an RV label needs the header to say which end of its arc is anterior.
            segments_reason = (
                "the header's slice direction contradicts the LV's taper, so its anterior and septal directions "
                "are not trusted either"
            )
    if base.header_disagrees:
        warnings.append({"code": "orientation_disagrees_with_anatomy", "message": base.note})
    if anchor.source == "patient_orientation":
        warnings.append({"code": "approximate_anchor", "message": anchor.note})

    segments = None
    if segments_reason is None and scar_reason is None:
        segments = _segment_rows(label, geometry, centres, levels, anchor, chords, voxel_g)
    elif segments_reason is None:
        segments_reason = scar_reason
    if segments_reason is not None:
        null_reasons["aha.segments"] = segments_reason

    slices = _slice_rows(assessed, {} if scar_reason else chords, levels)
    if scar_reason is not None:
        null_reasons.setdefault("slices.transmurality", scar_reason)
    scored = [s for s in segments or [] if "transmurality_class" in s]
    return {
        "report_version": REPORT_VERSION,
        "spacing_mm": [round(float(s), 5) for s in geometry.spacing],
        "header": {"spacing_recorded": facts.spacing_recorded, "orientation_recorded": facts.orientation_recorded},
        "study": study,
        "grey_zone": {"rule": grey_zone.RULE, **grey},
        "slices": slices,
        "aha": {
            "model": "AHA 16 segments (Cerqueira et al., Circulation 2002); apex cap (17) not imaged in short axis",
            "anchor": {
                "source": anchor.source,
                "anterior_insertion_image_deg": _round(anchor.insertion_deg, 1),
                "septal_sense": anchor.septal_sense,
                "note": anchor.note,
            },
            "base": {"first_slice_is_base": base.first_slice_is_base, "source": base.source, "note": base.note},
            "levels": {level: [k for k, v in sorted(levels.items()) if v == level] for level in aha.LEVELS},
            "segments": segments,
            "segments_with_scar": sum(1 for s in scored if s["transmurality_class"] != "0") if segments else None,
            "segments_over_50_percent_transmural": (
                sum(1 for s in scored if s["transmurality_class"] in aha.OVER_HALF_TRANSMURAL) if segments else None
            ),
        },
        "transmurality_rule": TRANSMURALITY_RULE,
        "warnings": warnings,
        "null_reasons": null_reasons,
    }
