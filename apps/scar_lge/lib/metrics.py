"""Clinical quantities and segmentation overlap from EMIDEC-labelled volumes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .constants import LV_CAVITY, LV_WALL, MVO, MYOCARDIUM_DENSITY_G_PER_ML, TOTAL_SCAR

# Structures reported and scored: a clinical structure is a set of label values.
STRUCTURES: dict[str, tuple[int, ...]] = {
    "lv_cavity": (LV_CAVITY,),
    "lv_wall": LV_WALL,  # whole LV myocardium: normal, infarcted and obstructed
    "scar": TOTAL_SCAR,  # total infarct: MVO is infarct too
    "mvo": (MVO,),
}


def voxel_volume_ml(spacing_mm: Sequence[float]) -> float:
    """Volume of one voxel in mL from its (row, col, slice) spacing in mm (1 mL = 1000 mm^3)."""
    return float(np.prod(spacing_mm)) / 1000.0


def scar_quantification(label: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """What a reader acts on, from a label on its real voxel grid.

    Mass is volume times myocardial density, 1.05 g/mL. Scar is total infarct (scar plus MVO); LV
    mass is the whole wall (normal myocardium, scar, MVO). Areas are per slice, in the slice's plane.

    Args:
        label: (H, W, D) integer EMIDEC classes.
        spacing_mm: (row, col, slice) spacing; the slice spacing is the distance between slice centres.

    Returns:
        JSON-ready dict of volumes (mL), masses (g), percentages and per-slice scar areas (mm^2). The
        percentages of LV mass are None when the label has no LV wall: a share of nothing is undefined,
        and 0 % would read as "no scar" (``lib.caveats.assess`` gives the reason).

    Raises:
        ValueError: if ``label`` is not 3D.
    """
    if label.ndim != 3:
        raise ValueError(f"label must be (H, W, D), got shape {label.shape}.")
    voxel_ml = voxel_volume_ml(spacing_mm)
    pixel_mm2 = float(spacing_mm[0] * spacing_mm[1])
    wall = np.isin(label, LV_WALL)
    scar = np.isin(label, TOTAL_SCAR)
    mvo = label == MVO
    lv_mass = wall.sum() * voxel_ml * MYOCARDIUM_DENSITY_G_PER_ML
    scar_mass = scar.sum() * voxel_ml * MYOCARDIUM_DENSITY_G_PER_ML
    mvo_mass = mvo.sum() * voxel_ml * MYOCARDIUM_DENSITY_G_PER_ML
    per_slice = [
        {
            "slice": k,
            "scar_area_mm2": round(float(scar[..., k].sum() * pixel_mm2), 1),
            "mvo_area_mm2": round(float(mvo[..., k].sum() * pixel_mm2), 1),
            "lv_wall_area_mm2": round(float(wall[..., k].sum() * pixel_mm2), 1),
        }
        for k in range(label.shape[-1])
    ]
    return {
        "spacing_mm": [round(float(s), 5) for s in spacing_mm],
        "lv_cavity_volume_ml": round(float((label == LV_CAVITY).sum() * voxel_ml), 2),
        "lv_myocardial_volume_ml": round(float(wall.sum() * voxel_ml), 2),
        "lv_myocardial_mass_g": round(float(lv_mass), 2),
        "scar_volume_ml": round(float(scar.sum() * voxel_ml), 2),
        "scar_mass_g": round(float(scar_mass), 2),
        "scar_percent_lv_mass": round(float(100.0 * scar_mass / lv_mass), 2) if lv_mass else None,
        "mvo_volume_ml": round(float(mvo.sum() * voxel_ml), 2),
        "mvo_mass_g": round(float(mvo_mass), 2),
        "mvo_percent_lv_mass": round(float(100.0 * mvo_mass / lv_mass), 2) if lv_mass else None,
        "scar_slices": int(sum(1 for s in per_slice if s["scar_area_mm2"] > 0)),
        "per_slice": per_slice,
    }


def dice_from_counts(intersection: int, predicted: int, reference: int) -> float | None:
    r"""Dice from voxel counts, the one place its formula is written.

    .. math:: D = \frac{2 |P \cap T|}{|P| + |T|}

    with :math:`|P \cap T|` = ``intersection``, :math:`|P|` = ``predicted``, :math:`|T|` = ``reference``.
    ``None`` when both are empty: there is nothing to overlap.
    """
    total = predicted + reference
    return None if total == 0 else 2.0 * intersection / total


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (:func:`dice_from_counts`).

    Both empty gives 1 (a scar-free study predicted scar-free is right); one empty gives 0.
    Written out because a structure here is a union of label values on a plain array, where
    MONAI's DiceMetric wants batched one-hot tensors per class.
    """
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    value = dice_from_counts(int(np.logical_and(p, t).sum()), int(p.sum()), int(t.sum()))
    return 1.0 if value is None else value


def structure_overlap(pred: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, int]]:
    """Voxel counts per clinical structure: |P & T|, |P| and |T|, the parts pooled Dice sums over studies."""
    out = {}
    for name, values in STRUCTURES.items():
        p, t = np.isin(pred, values), np.isin(truth, values)
        out[name] = {
            "intersection": int(np.logical_and(p, t).sum()),
            "predicted": int(p.sum()),
            "reference": int(t.sum()),
        }
    return out


def overlap_dice(overlap: dict[str, dict[str, int]]) -> dict[str, float]:
    """Dice of each structure from :func:`structure_overlap`'s counts (both empty gives 1, as in :func:`dice`)."""
    return {name: 1.0 if (value := dice_from_counts(**counts)) is None else value for name, counts in overlap.items()}


def structure_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of each clinical structure in :data:`STRUCTURES` between two label volumes (both empty gives 1)."""
    return overlap_dice(structure_overlap(pred, truth))


def pooled_dice(per_case: list[dict]) -> dict[str, float | None]:
    r"""Dice per structure pooled over a set of studies (nnU-Net's global Dice per class).

    .. math:: D_s = \frac{2 \sum_n |P_{n,s} \cap T_{n,s}|}{\sum_n |P_{n,s}| + \sum_n |T_{n,s}|}

    for structure :math:`s` over studies :math:`n`. A study contributes in proportion to its voxels, so a
    scar-free study does not count as a perfect 1 or a failed 0 for scar, as it does in a mean of
    per-study Dice. ``None`` where the structure is absent from both prediction and reference in
    every study (nothing to score).

    Args:
        per_case: dicts with an ``"overlap"`` entry as made by :func:`structure_overlap`.
    """
    return {
        name: dice_from_counts(
            **{
                key: sum(c["overlap"][name][key] for c in per_case)
                for key in ("intersection", "predicted", "reference")
            }
        )
        for name in STRUCTURES
    }


def summarise_cases(per_case: list[dict]) -> dict:
    """Mean and SD of each structure's Dice over cases, as challenges report them.

    Scar is averaged over cases with scar in the reference only, MVO over cases with MVO only (a
    scar-free case scores 1 or 0 on scar, which says whether scar was called, not how well it was
    drawn); ``false_scar_in_normal_cases`` counts reference-scar-free cases given any scar.
    """
    out: dict = {"cases": len(per_case)}
    for name, keep in (("lv_cavity", None), ("lv_wall", None), ("scar", "truth_has_scar"), ("mvo", "truth_has_mvo")):
        values = [c[name] for c in per_case if keep is None or c[keep]]
        out[name] = {
            "mean": round(float(np.mean(values)), 4) if values else None,
            "sd": round(float(np.std(values)), 4) if values else None,
            "n": len(values),
        }
    out["false_scar_in_normal_cases"] = sum(1 for c in per_case if not c["truth_has_scar"] and c["scar"] < 1.0)
    return out
