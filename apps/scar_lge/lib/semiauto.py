"""Semi-automatic scar inside a given LV wall: n-SD, FWHM and an EM-weighted method (EWA family).

These are the rules clinics use when an annotator draws the myocardium and lets a threshold mark the
scar (Flett et al., JACC Imaging 2011; Engblom et al., JCMR 2016). Each works on the study's own
intensities (LGE has no absolute scale), inside the wall (labels 2, 3 and 4 of the given label), and
returns a label with the wall's scar and MVO replaced, a per-voxel scar probability that encodes how
sure the rule is (a soft training target), and a JSON-ready description of what it did.

Angles, wherever they appear, are degrees in the image plane around each slice's LV centre (the
cavity's centroid, else the wall's), measured from the first voxel axis towards the second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from sklearn.mixture import GaussianMixture

from .constants import LV_CAVITY, LV_WALL, MVO, MYOCARDIUM, SCAR

# The darkest 60-degree wall sector (one AHA segment's width) stands in for remote myocardium when the
# reader gives none; sectors are tried every 10 degrees.
REMOTE_SECTOR_DEG = 60.0
REMOTE_STEP_DEG = 10.0
MIN_REMOTE_VOXELS = 10
# FWHM needs an enhanced core to take half of; below this many remote SDs the brightest wall voxel is
# partial volume with blood or noise, not scar (a normal heart would otherwise get half its wall).
FWHM_MIN_CORE_SD = 5.0
# ... and half of that core must itself stand clear of remote myocardium, or the image's intensity scale
# does not start near zero for nulled myocardium and "half the maximum" means nothing.
FWHM_MIN_THRESHOLD_SD = 2.0
# EWA-family a priori rules: the enhanced class must stand clearly above remote (two Gaussians fitted
# to one normal distribution sit about 1.6 SD apart); isolated specks are not infarct.
EM_MIN_SEPARATION_SD = 3.0
MIN_SCAR_AREA_MM2 = 20.0
# A dark core smaller than this is a gap between specks of a noisy threshold, not no-reflow.
MIN_MVO_AREA_MM2 = 10.0


class SemiAutoError(ValueError):
    """The study cannot be labelled by a semi-automatic rule; the message says why."""


@dataclass(frozen=True)
class RemoteRegion:
    """Remote (normal) myocardium: a wall sector per slice and its intensity statistics.

    Statistics are per slice because LGE brightness drifts from slice to slice (coil sensitivity, the
    inversion time's nulling changing over the acquisition): one study-wide SD mixes those drifts in
    and puts the threshold too high. A slice whose sector holds too few voxels uses the pooled figures.
    """

    start_deg: list[float | None]  # per slice; None where it has no wall or no sector of enough voxels
    width_deg: float
    mean: list[float]
    sd: list[float]
    voxels: list[int]
    automatic: bool

    def z_scores(self, image: np.ndarray) -> np.ndarray:
        """Intensities in remote SDs above remote mean, slice by slice: (H, W, D) -> (H, W, D)."""
        mean = np.asarray(self.mean, np.float32)
        sd = np.asarray(self.sd, np.float32)
        return (np.asarray(image, np.float32) - mean) / sd

    def describe(self) -> dict:
        """JSON-ready, rounded."""
        return {
            "definition": "darkest wall sector of each slice" if self.automatic else "the given wall sector",
            "start_deg": self.start_deg,
            "width_deg": self.width_deg,
            "angle_convention": "degrees around the LV centre, from the first voxel axis towards the second",
            "mean": [round(v, 4) for v in self.mean],
            "sd": [round(v, 4) for v in self.sd],
            "voxels": self.voxels,
        }


@dataclass
class SemiAutoResult:
    """A semi-automatic label and what made it.

    Attributes:
        label: (H, W, D) uint8, the input label with scar (3) and MVO (4) redrawn inside its wall.
        scar_probability: (H, W, D) float32 in [0, 1], the rule's own confidence that a voxel is
            infarct (MVO is 1, outside the wall 0): the soft target for noise-aware training.
        method: JSON-ready description: rule, threshold, remote region, anatomical rules applied.
    """

    label: np.ndarray
    scar_probability: np.ndarray
    method: dict = field(default_factory=dict)


def lv_wall(label: np.ndarray) -> np.ndarray:
    """The LV wall (myocardium, scar and MVO) of an EMIDEC-labelled volume; raises if there is none."""
    wall = np.isin(label, LV_WALL)
    if not wall.any():
        raise SemiAutoError("the label has no LV wall (values 2, 3 or 4) to look for scar in")
    return wall


def wall_angles_deg(wall: np.ndarray, cavity: np.ndarray) -> np.ndarray:
    """Angle of every voxel around its slice's LV centre, in [0, 360); NaN on slices without wall.

    Shape: wall, cavity (H, W, D) bool -> (H, W, D) float.
    """
    rows, cols = np.meshgrid(np.arange(wall.shape[0]), np.arange(wall.shape[1]), indexing="ij")
    angles = np.full(wall.shape, np.nan, np.float32)
    for k in range(wall.shape[-1]):
        centre_of = cavity[..., k] if cavity[..., k].any() else wall[..., k]
        if not centre_of.any():
            continue
        r0, c0 = ndimage.center_of_mass(centre_of)
        angles[..., k] = np.degrees(np.arctan2(cols - c0, rows - r0)) % 360.0
    return angles


def _in_sector(angles: np.ndarray, start_deg: float, width_deg: float) -> np.ndarray:
    return ((angles - start_deg) % 360.0) < width_deg


def _darkest_sector(image: np.ndarray, wall: np.ndarray, angles: np.ndarray, width_deg: float) -> float | None:
    best = None
    for start in np.arange(0.0, 360.0, REMOTE_STEP_DEG):
        values = image[wall & _in_sector(angles, start, width_deg)]
        if values.size >= MIN_REMOTE_VOXELS and (best is None or values.mean() < best[1]):
            best = (float(start), float(values.mean()))
    return None if best is None else best[0]


def remote_region(
    image: np.ndarray,
    label: np.ndarray,
    *,
    start_deg: float | None = None,
    width_deg: float = REMOTE_SECTOR_DEG,
) -> RemoteRegion:
    """Remote myocardium: the given sector, or each slice's wall sector with the lowest mean intensity.

    Args:
        image: (H, W, D) intensities. label: (H, W, D) EMIDEC classes (wall 2-4, cavity 1).
        start_deg: where the sector starts, the same in every slice; None picks each slice's darkest
            sector of ``width_deg``.
        width_deg: sector width, 10-180 degrees.

    Raises:
        SemiAutoError: no wall, a bad sector, or too few wall voxels in it over the whole study.
    """
    if not 10.0 <= width_deg <= 180.0:
        raise SemiAutoError(f"remote sector width must be 10-180 degrees, got {width_deg}")
    wall = lv_wall(label)
    angles = wall_angles_deg(wall, label == LV_CAVITY)
    starts: list[float | None] = []
    sector = np.zeros_like(wall)
    for k in range(wall.shape[-1]):
        if start_deg is None:
            start = _darkest_sector(image[..., k], wall[..., k], angles[..., k], width_deg)
        else:
            start = float(start_deg) % 360.0 if wall[..., k].any() else None
        starts.append(start)
        if start is not None:
            sector[..., k] = wall[..., k] & _in_sector(angles[..., k], start, width_deg)
    pooled = image[sector].astype(np.float64)
    if pooled.size < MIN_REMOTE_VOXELS:
        where = "any slice" if start_deg is None else f"the sector {start_deg:g}+{width_deg:g} degrees"
        raise SemiAutoError(f"{where} holds {pooled.size} remote wall voxels, fewer than {MIN_REMOTE_VOXELS}")
    means, sds, counts = [], [], []
    for k in range(wall.shape[-1]):
        values = image[..., k][sector[..., k]].astype(np.float64)
        use = values if values.size >= MIN_REMOTE_VOXELS else pooled
        means.append(float(use.mean()))
        sds.append(float(max(use.std(), 1e-6)))
        counts.append(int(values.size))
    return RemoteRegion(starts, float(width_deg), means, sds, counts, automatic=start_deg is None)


def _min_voxels(area_mm2: float, spacing_mm: Sequence[float]) -> int:
    return max(1, int(np.ceil(area_mm2 / (float(spacing_mm[0]) * float(spacing_mm[1])))))


def _dark_cores(scar: np.ndarray, wall: np.ndarray, cavity: np.ndarray, min_voxels: int) -> np.ndarray:
    """Wall left unlabelled but enclosed, slice by slice, by scar and blood pool: MVO, the no-reflow core.

    MVO is infarct whose capillaries are obstructed, so gadolinium never reaches it and it stays dark
    inside bright scar; a threshold alone calls it normal myocardium. The rule presumes that normal
    myocardium reaches the epicardial border, so it is not enclosed; a scar ring closed only through a
    diagonal step counts as enclosing (holes are filled with 4-connected background).
    """
    cores = np.zeros_like(scar)
    for k in range(scar.shape[-1]):
        if scar[..., k].any():
            enclosed = ndimage.binary_fill_holes(scar[..., k] | cavity[..., k])
            cores[..., k] = enclosed & wall[..., k] & ~scar[..., k]
    return _drop_small(cores, min_voxels)


def _drop_small(scar: np.ndarray, min_voxels: int) -> np.ndarray:
    """Scar without in-plane components (8-connected, as in :func:`_touching_endocardium`) under ``min_voxels``."""
    kept = np.zeros_like(scar)
    for k in range(scar.shape[-1]):
        components, n = ndimage.label(scar[..., k], structure=np.ones((3, 3), bool))
        if n:
            sizes = ndimage.sum_labels(scar[..., k], components, index=np.arange(1, n + 1))
            kept[..., k] = np.isin(components, 1 + np.flatnonzero(sizes >= min_voxels))
    return kept


def _touching_endocardium(scar: np.ndarray, cavity: np.ndarray) -> np.ndarray:
    """Scar components that touch the blood pool, slice by slice; a slice without cavity keeps all.

    Ischaemic infarction starts at the endocardium and grows outwards (the wavefront phenomenon), so
    enhancement cut off from the endocardium is not an infarct (EWA's a priori rule).
    """
    kept = np.zeros_like(scar)
    structure = np.ones((3, 3), bool)
    for k in range(scar.shape[-1]):
        if not cavity[..., k].any():
            kept[..., k] = scar[..., k]
            continue
        components, n = ndimage.label(scar[..., k], structure=structure)
        border = ndimage.binary_dilation(cavity[..., k], structure=structure)
        touching = np.unique(components[border & scar[..., k]])
        kept[..., k] = np.isin(components, touching[touching > 0])
    return kept


def _compose(label: np.ndarray, wall: np.ndarray, scar: np.ndarray, mvo: np.ndarray) -> np.ndarray:
    out = np.asarray(label, np.uint8).copy()
    out[wall] = MYOCARDIUM
    out[wall & scar] = SCAR
    out[wall & mvo] = MVO
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def _check(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape != np.shape(label):
        raise SemiAutoError(f"image and label must be the same (H, W, D) grid, got {image.shape} and {np.shape(label)}")
    if not np.isfinite(image).all():
        raise SemiAutoError("the image holds non-finite intensities")
    label = np.asarray(label)
    return image, label, lv_wall(label)


def _remote(image, label, remote: RemoteRegion | Sequence[float] | None) -> RemoteRegion:
    if isinstance(remote, RemoteRegion):
        return remote
    if remote is None:
        return remote_region(image, label)
    start, width = (list(remote) + [REMOTE_SECTOR_DEG])[:2]
    return remote_region(image, label, start_deg=float(start), width_deg=float(width))


def _finish(
    label, wall, scar, probability, method: dict, *, fill_mvo: bool, spacing_mm: Sequence[float]
) -> SemiAutoResult:
    cavity = label == LV_CAVITY
    mvo = (
        _dark_cores(scar, wall, cavity, _min_voxels(MIN_MVO_AREA_MM2, spacing_mm)) if fill_mvo else np.zeros_like(scar)
    )
    probability = np.where(wall, probability, 0.0).astype(np.float32)
    probability[mvo] = 1.0
    if fill_mvo:
        method["rules"] = [
            *method.get("rules", []),
            f"dark cores of at least {MIN_MVO_AREA_MM2:g} mm^2 enclosed by scar and blood pool are MVO",
        ]
    return SemiAutoResult(_compose(label, wall, scar, mvo), probability, method)


def nsd_scar(
    image: np.ndarray,
    label: np.ndarray,
    *,
    n_sd: float = 5.0,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    remote: RemoteRegion | Sequence[float] | None = None,
    fill_mvo: bool = True,
) -> SemiAutoResult:
    r"""Scar is wall brighter than remote mean plus ``n_sd`` remote SDs, slice by slice.

    .. math:: z_i = \frac{I_i - \mu_{r,k}}{\sigma_{r,k}},\quad \text{scar}_i = [\,z_i > n\,],\quad
              q_i = \sigma(z_i - n)

    with :math:`\mu_{r,k}, \sigma_{r,k}` the remote mean and SD of voxel i's slice k, :math:`\sigma`
    the logistic function and :math:`q_i` the soft target: how many remote SDs the voxel sits from the
    threshold (0.5 on it, 0.73 one SD above).

    Args:
        image: (H, W, D) intensities. label: (H, W, D) EMIDEC classes giving the wall (2-4) and cavity.
        n_sd: 1-10. spacing_mm: (row, col, slice) spacing, for the smallest MVO core.
        remote: a :class:`RemoteRegion`, (start_deg[, width_deg]) or None (darkest sector).
        fill_mvo: label dark cores enclosed by scar as MVO (the clinical convention: MVO counts as scar).

    Raises:
        SemiAutoError: no wall, mismatched grids, a bad ``n_sd`` or remote region.
    """
    if not 1.0 <= n_sd <= 10.0:
        raise SemiAutoError(f"n_sd must be between 1 and 10, got {n_sd}")
    image, label, wall = _check(image, label)
    region = _remote(image, label, remote)
    z = region.z_scores(image)
    method = {"rule": f"{n_sd:g}SD", "n_sd": n_sd, "threshold_remote_sd": n_sd, "remote": region.describe()}
    return _finish(label, wall, wall & (z > n_sd), _sigmoid(z - n_sd), method, fill_mvo=fill_mvo, spacing_mm=spacing_mm)


def fwhm_scar(
    image: np.ndarray,
    label: np.ndarray,
    *,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    remote: RemoteRegion | Sequence[float] | None = None,
    fill_mvo: bool = True,
) -> SemiAutoResult:
    r"""Full width at half maximum: scar is wall at least half as bright as the brightest enhancement.

    .. math:: \text{scar}_i = [\,I_i \ge \tfrac12 I_{max}\,],\quad
              q_i = \sigma\!\left(\frac{I_i - \tfrac12 I_{max}}{\sigma_{r,k}}\right)

    :math:`I_{max}` is the brightest wall voxel of the study after a 3x3 in-plane median filter, so
    one hot voxel does not set it; :math:`\sigma_{r,k}` is the remote SD of the voxel's slice. When
    :math:`I_{max}` is less than 5 remote SDs above its slice's remote mean there is no enhanced core
    and no scar (FWHM presumes one; on a normal heart it would mark half the wall).

    FWHM also presumes that nulled myocardium sits near zero intensity, as in a magnitude LGE image.
    Where half the maximum is not at least 2 remote SDs above the remote mean (an offset or windowed
    export, such as EMIDEC's 8-bit PNGs), half the maximum cannot separate scar from myocardium and
    the rule refuses the study instead of marking most of the wall.

    Raises:
        SemiAutoError: no wall, mismatched grids, a bad remote region, or an image FWHM cannot read.
    """
    image, label, wall = _check(image, label)
    region = _remote(image, label, remote)
    # Outside the wall counts as remote in the filter, so bright blood next to the endocardium cannot
    # set the maximum.
    inside = np.where(wall, image, np.asarray(region.mean, np.float32))
    smoothed = np.where(wall, ndimage.median_filter(inside, size=(3, 3, 1)), -np.inf)
    peak_at = np.unravel_index(int(np.argmax(smoothed)), image.shape)
    peak = float(smoothed[peak_at])
    peak_sd = float(region.z_scores(np.full(image.shape[-1], peak))[peak_at[-1]])
    method = {
        "rule": "FWHM",
        "maximum": round(peak, 4),
        "maximum_remote_sd": round(peak_sd, 2),
        "remote": region.describe(),
    }
    if peak_sd < FWHM_MIN_CORE_SD:
        method["threshold"] = None
        method["no_scar_reason"] = (
            f"no enhanced core: the brightest wall voxel is {peak_sd:.1f} remote SDs above remote, "
            f"under {FWHM_MIN_CORE_SD:g}"
        )
        return _finish(
            label, wall, np.zeros_like(wall), np.zeros_like(image), method, fill_mvo=fill_mvo, spacing_mm=spacing_mm
        )
    threshold = 0.5 * peak
    threshold_sd = float(region.z_scores(np.full(image.shape[-1], threshold))[peak_at[-1]])
    if threshold_sd < FWHM_MIN_THRESHOLD_SD:
        raise SemiAutoError(
            f"FWHM does not apply to this image: half the maximum ({threshold:.4g}) is only {threshold_sd:.1f} "
            f"remote SDs above remote myocardium (at least {FWHM_MIN_THRESHOLD_SD:g} needed), so nulled "
            "myocardium is not near zero intensity here (an offset or windowed export); use scar_nsd or scar_ewa"
        )
    method["threshold"] = round(threshold, 4)
    soft = _sigmoid((image - threshold) / np.asarray(region.sd, np.float32))
    return _finish(label, wall, wall & (image >= threshold), soft, method, fill_mvo=fill_mvo, spacing_mm=spacing_mm)


def ewa_scar(
    image: np.ndarray,
    label: np.ndarray,
    *,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    remote: RemoteRegion | Sequence[float] | None = None,
    min_scar_area_mm2: float = MIN_SCAR_AREA_MM2,
    seed: int = 0,
) -> SemiAutoResult:
    r"""Expectation maximisation, weighted intensity, a priori rules: the EWA family (Engblom 2016).

    Works on :math:`z_i`, the intensity in remote SDs above the remote mean of the voxel's slice.

    1. A two-class Gaussian mixture is fitted by EM to the wall's :math:`z`, started from remote
       (0) and the wall's 95th percentile; the classes' means :math:`\mu_n < \mu_e` come out.
    2. Partial-volume weight per voxel, the share of it that is infarct:
       :math:`w_i = \mathrm{clip}\big((z_i - \mu_n) / (\mu_e - \mu_n), 0, 1\big)`.
    3. Scar core: voxels whose EM posterior of the enhanced class exceeds 0.5 and that are brighter than
       :math:`\mu_n` (a very dark voxel can fall to the broader class); then the a priori rules:
       in-plane components under ``min_scar_area_mm2`` are dropped, only components touching the
       endocardium are kept, and dark cores enclosed by scar become MVO (counted as infarct).
    4. No scar when :math:`\mu_e - \mu_n < 3` (the mixture only split normal myocardium in two).

    The soft target is :math:`w_i` on the kept scar and its one-voxel rim (partial volume at the
    border), 1 on MVO and 0 elsewhere; ``method["weighted_scar_voxels"]`` is :math:`\sum_i w_i` over
    that region, the weighted infarct size EWA reports.

    Args:
        image: (H, W, D) intensities. label: (H, W, D) EMIDEC classes giving the wall and cavity.
        spacing_mm: (row, col, slice) spacing, for the smallest scar component and MVO core.
        remote: as for :func:`nsd_scar`. seed: EM's random state (the fit is deterministic given it).

    Raises:
        SemiAutoError: no wall, mismatched grids, or a bad remote region.
    """
    image, label, wall = _check(image, label)
    region = _remote(image, label, remote)
    z = region.z_scores(image)
    cavity = label == LV_CAVITY
    values = z[wall].astype(np.float64)[:, None]
    start = np.array([[0.0], [max(float(np.percentile(values, 95)), 1.0)]])
    mixture = GaussianMixture(2, means_init=start, random_state=seed).fit(values)
    order = np.argsort(mixture.means_[:, 0])
    mu_normal, mu_enhanced = (float(mixture.means_[i, 0]) for i in order)
    method = {
        "rule": "EWA-family EM",
        "normal_mean_remote_sd": round(mu_normal, 3),
        "enhanced_mean_remote_sd": round(mu_enhanced, 3),
        "remote": region.describe(),
        "rules": [
            f"in-plane scar components under {min_scar_area_mm2:g} mm^2 dropped",
            "scar must touch the endocardium",
        ],
    }
    if mu_enhanced - mu_normal < EM_MIN_SEPARATION_SD:
        method["no_scar_reason"] = (
            f"no enhanced class: EM's two classes are {mu_enhanced - mu_normal:.1f} remote SDs apart, "
            f"under {EM_MIN_SEPARATION_SD:g}"
        )
        scar, weight = np.zeros_like(wall), np.zeros_like(image)
    else:
        posterior = np.zeros(image.shape, np.float64)
        posterior[wall] = mixture.predict_proba(values)[:, order[1]]
        min_voxels = _min_voxels(min_scar_area_mm2, spacing_mm)
        core = wall & (posterior > 0.5) & (z > mu_normal)
        scar = _touching_endocardium(_drop_small(core, min_voxels), cavity)
        rim = ndimage.binary_dilation(scar, structure=np.ones((3, 3, 1), bool)) & wall
        weight = np.where(rim, np.clip((z - mu_normal) / (mu_enhanced - mu_normal), 0.0, 1.0), 0.0)
    result = _finish(label, wall, scar, weight, method, fill_mvo=True, spacing_mm=spacing_mm)
    result.method["weighted_scar_voxels"] = round(float(result.scar_probability.sum()), 2)
    return result


METHODS = {"nsd": nsd_scar, "fwhm": fwhm_scar, "ewa": ewa_scar}
