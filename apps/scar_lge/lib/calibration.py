r"""What the model's own cross-validation says about its scar figures: specks, scar presence, intervals.

Fitted by ``benchmarks/eval_default_model.py --cv DIR --real R --calibration OUT`` on out-of-fold
predictions (each EMIDEC exam judged by the fold model that never saw it) and shipped as
``apps/scar_lge/model/calibration.json``; the ``scar`` infer task applies it to every answer:

1. **Specks**: per slice, scar components (scar plus MVO, 4-connected) smaller than ``min_scar_area_mm2``
   become myocardium. The area is chosen among :data:`SPECK_AREAS_MM2` by cross-validation.
2. **Scar present or not**: a logistic model of the study's scar % of LV mass :math:`s` and of how
   far its scar stands out from the rest of its wall, :math:`c` (:func:`scar_contrast_sd`),
   :math:`p = \sigma(a + b \log(0.1 + s) + g\,c)`; below ``p = 0.5`` the study reads "no scar" and its
   scar voxels become myocardium, so a normal heart reads 0 g instead of a sum of specks. LGE scar is
   enhanced by definition; the network's false scar in normal hearts mostly is not.
3. **Enhanced wall next to scar**, in a study read as scar (:func:`grow_enhanced_scar`): myocardium
   brighter than the level ``scar_growth_fraction`` of the way from the rest of the wall's median to
   the scar's median, and connected in plane through such voxels to the network's scar, becomes scar.
   The network draws infarcts too small (out-of-fold scar % LV bias -3.5 points); the fraction, or
   none, is chosen among :data:`SCAR_GROWTH_FRACTIONS` by cross-validation. After rule 2, so that it
   cannot make a normal heart's specks look like an infarct. A level between two medians, not a
   multiple of the noise SD: resampling a study to another grid changes its noise SD, and a threshold
   in SDs then moved its scar mass by over 5 % (a real exam at 1.15x its pixel size); the area above
   a level half-way between two plateaus hardly moves when the image is blurred.
4. **Intervals** (split-conformal, normalised): with :math:`\hat y` the predicted scar % LV and
   :math:`\sigma` the SD of scar % LV over the four flip passes of the segmenter (each labelled as the
   answer is: argmax, clean-up, rules 1-2, rule 2 with the answer's own :math:`c`; not rule 3), the interval is
   :math:`\hat y \pm q (\sigma + f)`, clipped to 0-100, :math:`f` = :data:`SPREAD_FLOOR_PP`, where :math:`q` is the
   :math:`\lceil (n+1)\,\ell \rceil`-th smallest of the out-of-fold scores
   :math:`|y_i - \hat y_i| / (\sigma_i + f)` at level :math:`\ell`. Scar mass gets its own :math:`q_m`
   on :math:`y_i` = expert scar mass as a % of the *predicted* LV mass, so its interval is
   :math:`\hat M_{LV} (\hat y \pm q_m (\sigma + f)) / 100` and carries over to any voxel size. The
   quantiles are taken separately over studies read as scar and studies read as "no scar" (Mondrian
   conformal, by rule 2's answer), so that each group gets the level, not only their mix: with one
   pooled quantile, studies read as "no scar" were covered in 17 of 20 (the infarcts the rule missed
   fall there), with their own in 18 of 20 (out-of-fold). That group is mostly normal hearts, covered
   whatever the quantile, so its quantile rests on the few missed infarcts. A group with too few
   scores for a finite quantile takes the pooled one.

Split-conformal intervals cover a new exchangeable case with probability at least :math:`\ell`. Here
that is approximate, not guaranteed: the scores come from the fold models, not from the shipped model
trained on every case; the same cases chose the speck area and fitted rule 2; and at inference
:math:`\hat y` comes from the label on the input grid while :math:`\sigma` comes from the passes on the
model grid. So coverage is *measured*, leave-one-fold-out, and shipped in ``cross_validation``.
EMIDEC PNGs carry no spacing, so the speck area was chosen in nominal mm^2 (1.5 mm pixels; the exams'
true spacing is 1.25-2 mm).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from monai.transforms import RemoveSmallObjects
from scipy import ndimage
from scipy.special import expit

from .constants import LV_WALL, MYOCARDIUM, SCAR, TOTAL_SCAR
from .transforms.anatomy import AnatomicalCleanup

CALIBRATION_FILE = Path(__file__).resolve().parents[1] / "model" / "calibration.json"

SPECK_AREAS_MM2 = (0.0, 10.0, 25.0, 50.0, 100.0)  # candidates compared by cross-validation
SCAR_GROWTH_FRACTIONS = (None, 0.5, 0.65, 0.8)  # candidates compared by cross-validation; None: no growth
SPREAD_FLOOR_PP = 1.0  # four flip passes that agree are not certainty: every interval has this much spread
PRESENCE_OFFSET_PP = 0.1  # log(0.1 + s): a scar-free prediction (s = 0) stays finite
MIN_REST_OF_WALL_VOXELS = 20  # fewer myocardium-labelled voxels give no usable wall level: no contrast, no growth
INTERVAL_LEVEL = 0.9


def remove_scar_specks(label: np.ndarray, spacing_mm, min_area_mm2: float) -> np.ndarray:
    """``label`` with scar components under ``min_area_mm2`` on their slice turned into myocardium.

    Per slice because LGE slices are 6-13 mm apart: a component's area in its plane is what a reader
    sees. Scar and MVO count together (MVO is infarct). MONAI's RemoveSmallObjects measures the area in
    mm^2 from ``spacing_mm``.

    Shape: (H, W, D) integer EMIDEC classes; ``spacing_mm`` (row, col, slice). Returns a new array.
    """
    out = np.array(label, copy=True)
    if min_area_mm2 <= 0:
        return out
    keep = RemoveSmallObjects(min_size=min_area_mm2, connectivity=1, by_measure=True, pixdim=spacing_mm[:2])
    scar = np.isin(out, TOTAL_SCAR)
    for k in range(out.shape[-1]):
        if scar[..., k].any():
            with warnings.catch_warnings():  # scikit-image's notice about renaming min_size, every call
                warnings.simplefilter("ignore", FutureWarning)
                kept = np.asarray(keep(scar[None, ..., k]))[0].astype(bool)
            out[..., k][scar[..., k] & ~kept] = MYOCARDIUM
    return out


def _median_and_robust_sd(values: np.ndarray) -> tuple[float, float]:
    r"""Median and :math:`1.4826\,\mathrm{MAD}` (the SD of a normal sample, unmoved by a bright minority)."""
    values = values.astype(np.float64)
    median = float(np.median(values))
    return median, 1.4826 * float(np.median(np.abs(values - median)))


def grow_enhanced_scar(label: np.ndarray, image: np.ndarray, fraction: float | None) -> np.ndarray:
    r"""``label`` with enhanced myocardium that touches its scar turned into scar.

    With :math:`m` the median intensity of the myocardium-labelled voxels and :math:`S` that of the scar
    (label 3), the candidates are myocardium voxels brighter than :math:`m + f (S - m)`; a candidate
    becomes scar when it is connected to scar (or MVO) on its own slice through candidates (4-connected
    in plane: LGE slices lie 6-13 mm apart, so growth never crosses to a slice where no scar was
    drawn). Medians, because the myocardium label still holds the enhanced voxels this rule looks for.
    No growth when ``fraction`` is None, the label has no scar, fewer than
    :data:`MIN_REST_OF_WALL_VOXELS` myocardium voxels, or a scar no brighter than the wall.

    Shape: ``label`` and ``image`` (H, W, D) on one grid. Returns a new array.
    """
    out = np.array(label, copy=True)
    scar = np.isin(out, TOTAL_SCAR)
    rest = out == MYOCARDIUM
    enhanced = out == SCAR
    if fraction is None or not enhanced.any() or rest.sum() < MIN_REST_OF_WALL_VOXELS:
        return out
    if image.shape != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} must lie on one grid")
    wall_level = float(np.median(image[rest].astype(np.float64)))
    scar_level = float(np.median(image[enhanced].astype(np.float64)))
    if scar_level <= wall_level:
        return out
    candidates = rest & (image > wall_level + fraction * (scar_level - wall_level))
    in_plane = ndimage.generate_binary_structure(3, 1)
    in_plane[..., 0] = in_plane[..., 2] = False
    components, _ = ndimage.label(candidates | scar, in_plane)
    touching = np.unique(components[scar])
    out[candidates & np.isin(components, touching[touching > 0])] = SCAR
    return out


def scar_percent_lv(label: np.ndarray) -> float | None:
    """Scar (scar plus MVO) as a % of LV wall voxels, i.e. of LV mass; None without LV wall."""
    wall = int(np.isin(label, LV_WALL).sum())
    return None if wall == 0 else 100.0 * int(np.isin(label, TOTAL_SCAR).sum()) / wall


def label_passes(passes: torch.Tensor) -> np.ndarray:
    """Each pass's label as far as scar % LV can tell: argmax, then the wall step of the clean-up.

    The one labelling of flip passes (and Monte-Carlo samples) for :meth:`Calibration.spread_pp`, used
    by inference and by the cross-validation that fits the intervals, so both see the same spread. Two
    short cuts change no wall or scar voxel: the cavity clean-up is skipped, and only the box holding
    every pass's foreground is kept (outside it every pass is background).

    Shape: (P, K, H, W, D) probabilities -> (P, h, w, D) uint8 labels, (h, w) the foreground box.
    """
    # Classes last before argmax: torch's CPU argmax over a strided class axis took 0.46 s here, 0.05 s so.
    labels = passes.permute(0, 2, 3, 4, 1).contiguous().argmax(dim=-1)  # (P, H, W, D)
    rows, cols = torch.nonzero((labels > 0).any(dim=0).any(dim=-1), as_tuple=True)
    if rows.numel() == 0:
        return labels[:, :0, :0].numpy().astype(np.uint8)
    box = labels[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    cleanup = AnatomicalCleanup()
    return np.stack([cleanup(label[None], wall_only=True)[0].numpy() for label in box]).astype(np.uint8)


def conformity_score(truth: float, predicted: float, spread_pp: float, floor_pp: float = SPREAD_FLOOR_PP) -> float:
    """:math:`|y - \\hat y| / (\\sigma + f)`, the normalised residual whose quantile sets an interval."""
    return abs(truth - predicted) / (spread_pp + floor_pp)


def scar_contrast_sd(image: np.ndarray, label: np.ndarray) -> float:
    """How far the labelled scar stands out from the rest of the LV wall, in that rest's robust SDs.

    :math:`c = (\\mathrm{median}\\,I_{scar} - m) / s`, with :math:`m` the median and
    :math:`s = 1.4826\\,\\mathrm{MAD}` of the myocardium-labelled voxels: the n-SD idea of clinical scar
    rules, asked of a whole label. Scar is label 3 only: MVO is dark by definition and would pull an
    infarct's contrast down. Medians, because the rest of the wall still holds whatever enhanced wall
    the label missed. Unchanged by any intensity scaling :math:`aI + b`, :math:`a > 0`, so it is taken
    on the input grid without normalisation; it is a contrast-to-noise ratio, though, so it depends on
    how well the sequence nulls myocardium, and :meth:`Calibration.scar_present` clips it to the range it
    was fitted on.
    0 when the label has no scar, fewer than :data:`MIN_REST_OF_WALL_VOXELS` other wall voxels,
    or :math:`s = 0`.

    Shape: ``image`` and ``label`` (H, W, D), on one grid.
    """
    if image.shape != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} must lie on one grid")
    scar = label == SCAR
    rest = label == MYOCARDIUM
    if not scar.any() or rest.sum() < MIN_REST_OF_WALL_VOXELS:
        return 0.0
    median, robust_sd = _median_and_robust_sd(image[rest])
    if robust_sd <= 0.0:
        return 0.0
    return (float(np.median(image[scar].astype(np.float64))) - median) / robust_sd


def presence_features(percent_lv: float | None, contrast_sd: float) -> list[float]:
    """The scar-presence model's inputs :math:`[\\log(0.1 + s), c]`; a study without LV wall counts as s = 0."""
    return [math.log(PRESENCE_OFFSET_PP + (percent_lv or 0.0)), float(contrast_sd)]


def fit_presence(
    percent_lv: list[float | None], contrast_sd: list[float], has_scar: list[bool]
) -> tuple[float, float, float, list[float]]:
    """Intercept, the slopes of scar % LV and contrast in the scar-presence model (scikit-learn, L2, C = 1),
    and the range of contrasts it was fitted on."""
    from sklearn.linear_model import LogisticRegression

    x = np.array([presence_features(s, c) for s, c in zip(percent_lv, contrast_sd, strict=True)])
    model = LogisticRegression(C=1.0).fit(x, np.asarray(has_scar, int))
    fitted_range = [round(float(x[:, 1].min()), 3), round(float(x[:, 1].max()), 3)]
    return float(model.intercept_[0]), float(model.coef_[0, 0]), float(model.coef_[0, 1]), fitted_range


def conformal_quantile(scores: list[float], level: float = INTERVAL_LEVEL) -> float:
    """The :math:`\\lceil (n+1)\\ell \\rceil`-th smallest score; infinite when n is too small for ``level``."""
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    return math.inf if rank > n else float(sorted(scores)[rank - 1])


class ScarReading(NamedTuple):
    """A study's label after the calibrated rules, and whether (with what probability) it has scar."""

    label: np.ndarray
    present: bool
    probability: float
    contrast_sd: float  # scar_contrast_sd of the speck-free label, on which the decision was taken


@dataclass
class Calibration:
    """The fitted rules (see the module docstring) and how well they did in cross-validation."""

    min_scar_area_mm2: float
    presence_intercept: float
    presence_slope: float  # of log(0.1 + scar % LV)
    interval_level: float
    interval_q_percent: float  # for studies read as scar (for all, in a calibration without the two below)
    interval_q_mass: float
    presence_contrast_slope: float = 0.0  # of scar_contrast_sd; 0 in a calibration fitted before it existed
    presence_contrast_range: list[float] | None = None  # contrasts the model was fitted on; others are clipped
    scar_growth_fraction: float | None = None  # rule 3; None: off (and in a calibration fitted before it existed)
    interval_q_percent_no_scar: float | None = None  # for studies read as "no scar"; None: interval_q_percent
    interval_q_mass_no_scar: float | None = None
    spread_floor_pp: float = SPREAD_FLOOR_PP
    cross_validation: dict = field(default_factory=dict)  # what it achieved on held-out folds, for the answer
    source: dict = field(default_factory=dict)  # fold models, recipe, command, date

    def finalise(self, label: np.ndarray, spacing_mm, image: np.ndarray) -> ScarReading:
        """Speck removal, the scar-presence decision, then growth into enhanced wall (rules 1-3).

        A "no scar" study's scar becomes myocardium; a study read as scar grows into enhanced wall.

        Shape: ``label`` (H, W, D) integer EMIDEC classes and ``image`` the study's intensities on the same
        grid; the reading's label is a new array.
        """
        out = remove_scar_specks(label, spacing_mm, self.min_scar_area_mm2)
        reading = self._decide(out, scar_contrast_sd(image, out))
        if not reading.present:
            return reading
        return reading._replace(label=grow_enhanced_scar(reading.label, image, self.scar_growth_fraction))

    def _decide(self, speck_free: np.ndarray, contrast_sd: float) -> ScarReading:
        present, probability = self.scar_present(scar_percent_lv(speck_free), contrast_sd)
        if not present:
            speck_free[np.isin(speck_free, TOTAL_SCAR)] = MYOCARDIUM
        return ScarReading(speck_free, present, probability, contrast_sd)

    def scar_present(self, percent_lv: float | None, contrast_sd: float) -> tuple[bool, float]:
        """(scar present, its probability) for a speck-free label with ``percent_lv`` scar this enhanced.

        A contrast outside the fitted range is clipped to it: the logistic model is not extrapolated to
        sequences that null myocardium far better (or worse) than the exams it was fitted on.
        """
        if self.presence_contrast_range is not None:
            contrast_sd = float(np.clip(contrast_sd, *self.presence_contrast_range))
        log_percent, contrast = presence_features(percent_lv, contrast_sd)
        z = self.presence_intercept + self.presence_slope * log_percent + self.presence_contrast_slope * contrast
        p = float(expit(z))  # scipy's logistic: no overflow for large |z|
        return p >= 0.5, p

    def spread_pp(self, pass_labels: np.ndarray, spacing_mm, contrast_sd: float) -> float:
        """SD of scar % LV over passes labelled by :func:`label_passes`, each through the rules.

        Every pass's scar is decided with the answer's ``contrast_sd`` (:attr:`ScarReading.contrast_sd`),
        and rule 3 is left out: the passes are boxes of the model grid, and the study's intensities lie
        on the input grid. Inference and the cross-validation that fits the intervals both leave it out,
        so the intervals' coverage, measured that way, stands.
        """
        area = self.min_scar_area_mm2
        percents = [
            scar_percent_lv(self._decide(remove_scar_specks(label, spacing_mm, area), contrast_sd).label) or 0.0
            for label in pass_labels
        ]
        return float(np.std(percents))

    def _bounds(self, q: float, percent_lv: float, spread_pp: float) -> tuple[float, float]:
        """:math:`\\hat y \\pm q (\\sigma + f)`, clipped to 0-100 %."""
        half = q * (spread_pp + self.spread_floor_pp)
        return max(0.0, percent_lv - half), min(100.0, percent_lv + half)

    def _quantiles(self, present: bool) -> tuple[float, float]:
        """(scar % LV, scar mass) quantiles of the group a study falls in by rule 2's answer."""
        if present or self.interval_q_percent_no_scar is None or self.interval_q_mass_no_scar is None:
            return self.interval_q_percent, self.interval_q_mass
        return self.interval_q_percent_no_scar, self.interval_q_mass_no_scar

    def percent_interval(self, percent_lv: float, spread_pp: float, *, present: bool) -> list[float]:
        """Interval of scar % of LV mass, clipped to 0-100, for a study read as scar (``present``) or not."""
        return [round(v, 2) for v in self._bounds(self._quantiles(present)[0], percent_lv, spread_pp)]

    def mass_interval(self, percent_lv: float, spread_pp: float, lv_mass_g: float, *, present: bool) -> list[float]:
        """Interval of scar mass in grams, from the predicted LV mass (see the module docstring)."""
        bounds = self._bounds(self._quantiles(present)[1], percent_lv, spread_pp)
        return [round(lv_mass_g * v / 100.0, 2) for v in bounds]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, path: str | Path = CALIBRATION_FILE) -> Calibration:
        return cls(**json.loads(Path(path).read_text()))


def load_shipped(path: str | Path = CALIBRATION_FILE) -> tuple[Calibration | None, str | None]:
    """(the calibration, None), or (None, why not) when the file is missing or unreadable."""
    try:
        return Calibration.load(path), None
    except FileNotFoundError:
        return None, f"no calibration file at {path}"
    except (OSError, ValueError, TypeError) as e:  # truncated JSON, foreign keys
        return None, f"calibration file {path} is unreadable ({type(e).__name__}: {e})"


def _rule_text(calibration: Calibration) -> str:
    """The rules as applied, in words; steps cross-validation switched off are not named."""
    steps = []
    if calibration.min_scar_area_mm2 > 0:
        steps.append(f"scar components under {calibration.min_scar_area_mm2:g} mm^2 per slice removed")
    contrast = (
        " and of the scar's contrast to the rest of the wall (in that rest's robust SDs)"
        if calibration.presence_contrast_slope != 0.0
        else ""
    )
    steps.append(
        f"a logistic model of log(0.1 + scar % LV){contrast}; below probability 0.5 the study reads 'no scar' "
        "and its scar is shown as myocardium"
    )
    if calibration.scar_growth_fraction is not None:
        steps.append(
            f"in a study read as scar, myocardium brighter than {calibration.scar_growth_fraction:g} of the way from "
            "the rest of the wall's median to the scar's median and connected to the scar on its slice made scar"
        )
    return ", then ".join(steps)


def calibrated_figures(
    calibration: Calibration | None,
    reading: ScarReading | None,
    assessed: dict,
    spread_pp: float | None,
    *,
    unavailable: str | None = None,
) -> dict:
    """The answer's ``scar_present`` and ``scar_intervals``, each None with a reason when it cannot be given.

    Args:
        calibration: the shipped calibration, or None (then ``unavailable`` says why).
        reading: :meth:`Calibration.finalise` of the answer's label.
        assessed: the answer's figures after :func:`lib.caveats.assess`; a scar or LV figure it withheld
            withholds what depends on it, for the same reason. Its ``null_reasons`` gain the new entries.
        spread_pp: SD of scar % LV over the flip passes (model grid).
    """
    reasons = assessed["null_reasons"]
    out: dict = {"scar_present": None, "scar_intervals": None}
    if calibration is None:
        for key in out:
            reasons[key] = unavailable or "no calibration"
        return out
    if assessed.get("scar_mass_g") is None:
        for key in out:
            reasons[key] = reasons.get("scar_mass_g", "scar mass withheld")
        return out
    cv = calibration.cross_validation
    out["scar_present"] = {
        "value": reading.present,
        "probability": round(reading.probability, 3),
        "rule": _rule_text(calibration),
        "scar_contrast_sd": round(reading.contrast_sd, 2),
        "scar_contrast_fitted_range": calibration.presence_contrast_range,  # the decision clips to it
        "cross_validation": cv.get("scar_presence"),
    }
    percent, lv_mass = assessed.get("scar_percent_lv_mass"), assessed.get("lv_myocardial_mass_g")
    spread = spread_pp or 0.0
    intervals: dict = {
        "level": calibration.interval_level,
        "flip_spread_pp": round(spread, 2),
        "scar_percent_lv_mass": None,
        "scar_mass_g": None,
        "method": "split-conformal on the cross-validated EMIDEC exams, scaled by the spread of scar % LV over the "
        "segmenter's four flip passes (lib/calibration.py)",
        "cross_validation": cv.get("intervals"),
    }
    if percent is None:
        reason = reasons.get("scar_percent_lv_mass", "scar % of LV mass withheld")
        reasons["scar_intervals.scar_percent_lv_mass"] = reasons["scar_intervals.scar_mass_g"] = reason
    else:
        intervals["scar_percent_lv_mass"] = calibration.percent_interval(percent, spread, present=reading.present)
        if lv_mass is None:
            reasons["scar_intervals.scar_mass_g"] = reasons.get("lv_myocardial_mass_g", "LV mass withheld")
        else:
            intervals["scar_mass_g"] = calibration.mass_interval(percent, spread, lv_mass, present=reading.present)
    out["scar_intervals"] = intervals
    return out
