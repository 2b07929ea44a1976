"""When the scar figures should not be trusted: warnings, and the figures withheld (set to None) with a reason."""

from __future__ import annotations

import copy
import logging
import math

from pydicom.dataset import Dataset

from .label_io import first_dicom_header

logger = logging.getLogger(__name__)

# LV mass and volumes are summed over short-axis discs from base to apex. Fewer than three slices cannot
# even sample the basal, mid and apical levels of the AHA 17-segment model (Cerqueira et al., Circulation
# 2002;105:539-542), so such a sum is a fragment of the ventricle, not its mass.
MIN_SLICES_FOR_LV_MASS = 3

# The model counts as validated for MVO only when both hold. A pooled Dice from one or two studies with MVO
# says more about those patients than about the model. Below a pooled Dice of 0.5, predicted and reference
# MVO of equal size overlap by less than half: most of what the model calls MVO is not the MVO there is.
MVO_MIN_VALIDATION_STUDIES = 3
MVO_MIN_POOLED_DICE = 0.5

WARNING_CODES: dict[str, str] = {
    "no_heart_found": (
        "The localiser found no heart; the segmentation of the image centre is not a measurement, so no mass, "
        "volume, percentage or scar area is reported."
    ),
    "too_few_slices": (
        f"Fewer than {MIN_SLICES_FOR_LV_MASS} slices: LV mass, LV volumes and percentages of LV mass are not "
        "reported; scar volume and mass cover only the imaged slices."
    ),
    "not_inversion_recovery": (
        "The DICOM series is not an inversion-recovery (LGE) acquisition, e.g. cine SSFP: bright myocardium there "
        "is not scar, so no scar or MVO figure is reported."
    ),
    "mvo_not_validated": (
        f"The model was not validated for MVO (fewer than {MVO_MIN_VALIDATION_STUDIES} validation studies with "
        f"MVO, or pooled MVO Dice below {MVO_MIN_POOLED_DICE}): no MVO figure is reported."
    ),
    "no_myocardium": "No LV myocardium was segmented: scar and MVO cannot be given as a percentage of LV mass.",
    "no_spacing": (
        "The image header records no voxel spacing (ITK's 1 mm default is not a measurement): no mass, volume or "
        "area is reported; shares of LV mass, counted in voxels, still are."
    ),
    "calibrated_on_default_model": (
        "The scar-presence probability, the speck rule and the intervals were fitted for the default model (on a "
        "cross-validation of its training recipe); this model version was fine-tuned since and they were not "
        "re-checked for it."
    ),
}

# Figures of the dict made by lib.metrics.scar_quantification, grouped by what each rule withholds;
# FIGURES is all of them (the clinical report's study figures too).
_LV_FIGURES = ("lv_cavity_volume_ml", "lv_myocardial_volume_ml", "lv_myocardial_mass_g")
_PERCENT_FIGURES = ("scar_percent_lv_mass", "mvo_percent_lv_mass")
_SCAR_FIGURES = ("scar_volume_ml", "scar_mass_g", "scar_percent_lv_mass", "scar_slices")
_MVO_FIGURES = ("mvo_volume_ml", "mvo_mass_g", "mvo_percent_lv_mass")
FIGURES = tuple(dict.fromkeys(_LV_FIGURES + _SCAR_FIGURES + _MVO_FIGURES))
_SLICE_AREAS = ("scar_area_mm2", "mvo_area_mm2", "lv_wall_area_mm2")
# Figures in physical units: meaningless without a recorded spacing. Percentages are voxel-count ratios.
_PHYSICAL_FIGURES = tuple(f for f in FIGURES if f not in _PERCENT_FIGURES and f != "scar_slices")
# null_reasons key of a per-slice field, which is withheld on every slice at once.
PER_SLICE_PREFIX = "per_slice."


def inversion_recovery(image_path: str) -> bool | None:
    """Whether a study is an inversion-recovery acquisition, as LGE is, from one DICOM header.

    True when Inversion Time (0018,0082) is positive, Scanning Sequence (0018,0020) contains ``IR``, or
    (Enhanced MR) Inversion Times (0018,9079) is positive or Inversion Recovery (0018,9009) is ``YES``.
    False when the header records a sequence without inversion, such as cine SSFP (GR, steady state).

    Args:
        image_path: a DICOM series folder (any file names; the first readable image header is used), a
            single DICOM file, or a NIfTI/NRRD file.

    Returns:
        True or False as above; None when unknown: not DICOM (NIfTI and NRRD carry no sequence), no
        readable DICOM image in the folder, no sequence recorded in the header, or a magnetization-prepared
        sequence without a recorded inversion time (some vendors keep it in private tags only).
    """
    header = first_dicom_header(image_path)
    if header is None:
        return None
    return _header_says_inversion_recovery(header)


def _multi(value) -> list[str]:
    """A DICOM code string (single or multi-valued) as a list of upper-case codes."""
    if value is None or value == "":
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip().upper() for v in values]


def _positive_ms(value) -> bool:
    """Whether a DS/FD time (single or multi-valued; first value) is a finite number above zero."""
    if value is None or value == "":
        return False
    first = value if isinstance(value, int | float | str) else next(iter(value), None)
    try:
        ms = float(first)
    except (TypeError, ValueError):
        return False
    return math.isfinite(ms) and ms > 0


def _header_says_inversion_recovery(ds: Dataset) -> bool | None:
    """Rule of :func:`inversion_recovery` on one header."""
    sequence = _multi(ds.get("ScanningSequence"))
    # Philips classic exports may omit (0018,0082) yet fill the Enhanced MR (0018,9079) (dcm2niix issues
    # #380 and #385), whose first value is the inversion time; 0 there means no inversion.
    if (
        _positive_ms(ds.get("InversionTime"))
        or _positive_ms(ds.get("InversionTimes"))
        or "IR" in sequence
        or str(ds.get("InversionRecovery", "")).upper() == "YES"
    ):
        return True
    if not sequence:
        return None
    # Magnetization-prepared (MP) without a recorded inversion may be an LGE whose vendor keeps the
    # inversion time in a private tag: unknown, rather than withholding the scar of a real LGE.
    if "MP" in _multi(ds.get("SequenceVariant")):
        return None
    return False


def _mvo_validated(mvo_validation: dict | None) -> tuple[bool, str]:
    """Whether the checkpoint's MVO validation passes both thresholds, and what it was, in words."""
    if not mvo_validation:
        return False, "no MVO validation was recorded"
    studies, pooled = mvo_validation.get("studies_with_mvo"), mvo_validation.get("pooled_dice")
    studies_text = "an unknown number of" if studies is None else str(studies)
    dice_text = "unknown" if pooled is None else f"{float(pooled):.2f}"
    described = f"pooled MVO Dice {dice_text} on {studies_text} validation studies with MVO"
    validated = (
        studies is not None
        and pooled is not None
        and studies >= MVO_MIN_VALIDATION_STUDIES
        and pooled >= MVO_MIN_POOLED_DICE
    )
    return validated, described


def assess(
    figures: dict,
    *,
    heart_found: bool,
    inversion_recovery: bool | None,
    mvo_validation: dict | str | None,
    mvo_source: str = "model",
    calibrated_version: bool | None = None,
    spacing_recorded: bool = True,
) -> dict:
    """Withhold the figures that cannot be trusted and say why; pure (no I/O).

    Rules, each adding a warning (codes in :data:`WARNING_CODES`) and withholding figures:

    - ``no_heart_found``: every LV, scar and MVO figure (masses, volumes, percentages, ``scar_slices``)
      and every per-slice area.
    - ``not_inversion_recovery`` (``inversion_recovery is False``): scar and MVO figures, ``scar_slices``
      and the per-slice scar and MVO areas. None (unknown) gives no warning.
    - ``too_few_slices`` (fewer than :data:`MIN_SLICES_FOR_LV_MASS` slices): LV mass and volumes and the
      percentages of LV mass; scar volume and mass stay, covering the imaged slices only.
    - ``no_spacing`` (``spacing_recorded`` False): every mass, volume and area; percentages stay.
    - ``mvo_not_validated`` (unless ``studies_with_mvo >= MVO_MIN_VALIDATION_STUDIES`` and
      ``pooled_dice >= MVO_MIN_POOLED_DICE``): MVO mass, volume, percentage and per-slice MVO areas.
      Skipped when ``mvo_validation`` is ``"reader"``: a reader's own MVO needs no model validation.
    - ``no_myocardium`` (heart found, LV mass 0): the percentages of LV mass.
    - ``calibrated_on_default_model`` (``calibrated_version is False``): a warning only.

    A figure withheld by several rules keeps the reason of the first rule in the order above.

    Args:
        figures: dict returned by :func:`lib.metrics.scar_quantification`; not modified.
        heart_found: whether the localiser found a heart.
        inversion_recovery: result of :func:`inversion_recovery` for the input image.
        mvo_validation: the checkpoint provenance's MVO validation, e.g.
            ``{"pooled_dice": 0.62, "studies_with_mvo": 5}``, None when none was recorded, or ``"reader"``
            when the label was drawn or corrected by a reader.
        mvo_source: what drew the MVO, in the warning's words ("model", "semi-automatic rule").
        calibrated_version: whether the calibration (lib/calibration.py) was fitted for the model version
            that answered; None when no calibration was applied.
        spacing_recorded: whether the image header records its voxel spacing
            (:func:`lib.label_io.header_facts`).

    Returns:
        A copy of ``figures`` with withheld figures set to None, plus ``warnings`` (list of
        ``{"code", "message"}``, empty when nothing is wrong) and ``null_reasons`` (``{field: reason}`` for
        every figure set to None; per-slice fields as ``"per_slice.<field>"``).

    Raises:
        ValueError: if ``figures`` lacks a figure of ``scar_quantification``.
    """
    missing = [k for k in (*FIGURES, "per_slice") if k not in figures]
    if missing:
        raise ValueError(f"figures must be the dict of scar_quantification; missing {missing}.")
    out = copy.deepcopy(figures)
    warnings: list[dict[str, str]] = []
    null_reasons: dict[str, str] = {}

    def withhold(fields: tuple[str, ...], slice_fields: tuple[str, ...], reason: str) -> None:
        for field in fields:
            out[field] = None
            null_reasons.setdefault(field, reason)
        for field in slice_fields:
            for row in out["per_slice"]:
                row[field] = None
            null_reasons.setdefault(PER_SLICE_PREFIX + field, reason)

    def warn(code: str, message: str) -> None:
        warnings.append({"code": code, "message": message})

    if not heart_found:
        warn("no_heart_found", WARNING_CODES["no_heart_found"])
        withhold(
            FIGURES,
            _SLICE_AREAS,
            "no heart found by the localiser; the segmentation of the image centre is not a measurement",
        )
    if inversion_recovery is False:
        warn("not_inversion_recovery", WARNING_CODES["not_inversion_recovery"])
        withhold(
            _SCAR_FIGURES + _MVO_FIGURES,
            ("scar_area_mm2", "mvo_area_mm2"),
            "not an inversion-recovery (LGE) image: bright myocardium is not scar",
        )
    n_slices = len(figures["per_slice"])
    if n_slices < MIN_SLICES_FOR_LV_MASS:
        warn(
            "too_few_slices",
            f"Only {n_slices} slice(s) imaged; a valid LV mass needs at least {MIN_SLICES_FOR_LV_MASS} short-axis "
            "slices, so LV mass, LV volumes and percentages of LV mass are not reported. Scar volume and mass "
            "cover only the imaged slices, not the whole ventricle.",
        )
        withhold(
            _LV_FIGURES + _PERCENT_FIGURES,
            (),
            f"no valid LV mass from {n_slices} slice(s) (at least {MIN_SLICES_FOR_LV_MASS} needed)",
        )
    if not spacing_recorded:
        warn("no_spacing", WARNING_CODES["no_spacing"])
        withhold(_PHYSICAL_FIGURES, _SLICE_AREAS, "the image header records no voxel spacing")
    validated, described = (True, "") if mvo_validation == "reader" else _mvo_validated(mvo_validation)
    if not validated:
        warn(
            "mvo_not_validated",
            f"The {mvo_source} was not validated for MVO ({described}; needs at least {MVO_MIN_VALIDATION_STUDIES} "
            f"studies and Dice >= {MVO_MIN_POOLED_DICE}), so MVO figures are not reported.",
        )
        withhold(_MVO_FIGURES, ("mvo_area_mm2",), f"{mvo_source} not validated for MVO ({described})")
    if heart_found and figures["lv_myocardial_mass_g"] == 0:
        warn("no_myocardium", WARNING_CODES["no_myocardium"])
        withhold(_PERCENT_FIGURES, (), "no LV myocardium segmented: a percentage of zero LV mass is undefined")
    if calibrated_version is False:
        warn("calibrated_on_default_model", WARNING_CODES["calibrated_on_default_model"])

    out["warnings"] = warnings
    out["null_reasons"] = null_reasons
    return out
