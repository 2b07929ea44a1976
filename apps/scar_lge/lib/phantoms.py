"""Synthetic LGE short-axis studies with exactly known labels.

An LGE phantom reproduces what makes real LGE hard: myocardium nulled dark by the inversion time
(imperfectly), a bright blood pool, bright infarct in a coronary territory growing from the
endocardium (the wavefront phenomenon), a dark microvascular-obstruction core, bright epicardial
and chest-wall fat that mimics scar, Rician magnitude noise, a smooth receive-coil bias field,
partial volume at every edge, and a thick-sliced stack with a variable field of view and spacing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .constants import LV_CAVITY, MVO, MYOCARDIUM, NUM_CLASSES, RAS_TO_LPS, SCAR
from .report.short_axis import ANTERIOR_LPS, APEX_DIRECTION_LPS

# Coronary territories as angular sectors in the short-axis plane: angle 0 is lateral, 90 anterior,
# 180 septal, 270 inferior. Centre and half-width in degrees, and which part of the stack (0 base,
# 1 apex) each artery mostly supplies.
TERRITORIES = {
    "LAD": {"center_deg": 120.0, "half_width_deg": (30.0, 70.0), "levels": (0.3, 1.0)},
    "RCA": {"center_deg": 250.0, "half_width_deg": (30.0, 55.0), "levels": (0.0, 0.7)},
    "LCx": {"center_deg": 330.0, "half_width_deg": (25.0, 50.0), "levels": (0.0, 0.7)},
}


@dataclass
class Phantom:
    """One synthetic study. ``image`` and ``label`` are (H, W, D) arrays; ``affine`` is RAS, in mm."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (np.abs(noise).max() + 1e-8)


def _random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A short-axis plane is double-oblique to the scanner axes."""
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def short_axis_frame_lps() -> np.ndarray:
    """(3, 3) LPS directions (columns) of a phantom's rows, columns and slices in a standard short-axis stack.

    Rows grow away from the anterior wall (anterior is up), columns toward the lateral wall (the septum on
    the left, as a short-axis view is shown), slices from the base toward the apex, along the usual LV long
    axis (:data:`lib.report.short_axis.APEX_DIRECTION_LPS`).
    """
    apex = APEX_DIRECTION_LPS
    anterior_in_plane = ANTERIOR_LPS - (ANTERIOR_LPS @ apex) * apex
    rows = -anterior_in_plane / np.linalg.norm(anterior_in_plane)
    cols = np.cross(apex, rows)  # rows x cols = apex: a right-handed grid
    return np.stack([rows, cols, apex], axis=1)


def make_phantom(
    seed: int,
    *,
    scar: bool | None = None,
    mvo: bool | None = None,
    spacing_mm: float | None = None,
    shape: tuple[int, int] | None = None,
    n_slices: int | None = None,
    slice_spacing_mm: float | None = None,
    supersample: int = 2,
) -> Phantom:
    """Render one LGE short-axis study.

    Args:
        seed: seed of every random choice; the same seed gives the same study.
        scar: force an infarct (True) or a scar-free study (False); random (70 % infarct) if None.
        mvo: force a microvascular obstruction core in the infarct; random (40 %) if None.
        spacing_mm: in-plane pixel spacing; random in 0.7-1.9 mm if None.
        shape: in-plane size (rows, cols); random field of view (tight crop to whole chest) if None.
        n_slices: number of short-axis slices; random 6-12 if None.
        slice_spacing_mm: distance between slices; random 6-13 mm if None.
        supersample: in-plane oversampling used to render partial volume at edges.

    Returns:
        A :class:`Phantom` whose label uses the EMIDEC values of ``lib.constants.LABELS``.
    """
    rng = np.random.default_rng(seed)
    has_scar = bool(rng.random() < 0.7) if scar is None else scar
    has_mvo = has_scar and (bool(rng.random() < 0.4) if mvo is None else mvo)
    spacing = float(rng.uniform(0.7, 1.9)) if spacing_mm is None else float(spacing_mm)
    if shape is None:
        fov_mm = rng.uniform(170.0, 380.0)
        n = int(round(fov_mm / spacing / 8.0)) * 8
        shape = (n, n + 8 * int(rng.integers(-2, 3)))
    depth = int(rng.integers(6, 13)) if n_slices is None else int(n_slices)
    dz = float(rng.uniform(6.0, 13.0)) if slice_spacing_mm is None else float(slice_spacing_mm)

    rows, cols = shape[0] * supersample, shape[1] * supersample
    fine = spacing / supersample
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    y_mm = (yy - rows / 2 + 0.5) * fine
    x_mm = (xx - cols / 2 + 0.5) * fine

    # Tissue intensities before coil shading; myocardium nulling varies with the chosen inversion time.
    tissue = {
        "air": 0.0,
        "lung": 0.03,
        "body": rng.uniform(0.18, 0.3),
        "fat": rng.uniform(0.55, 0.75),
        "blood": rng.uniform(0.38, 0.6),
        "myocardium": rng.uniform(0.03, 0.15),
        "scar": rng.uniform(0.8, 1.0),
        "mvo": rng.uniform(0.04, 0.12),
    }
    max_shift = max(0.0, min(shape) * spacing / 2 - 75.0)
    lv_y, lv_x = rng.uniform(-max_shift, max_shift, size=2) * 0.6
    r_endo_base = rng.uniform(20.0, 28.0)
    wall_mm = rng.uniform(7.0, 11.0)
    body_a, body_b = rng.uniform(140, 175), rng.uniform(100, 130)
    shading = _smooth_field(rng, (rows, cols), sigma=rows / 4)

    territory_name = str(rng.choice(list(TERRITORIES)))
    territory = TERRITORIES[territory_name]
    scar_center = np.deg2rad(territory["center_deg"] + rng.uniform(-20, 20))
    scar_half = np.deg2rad(rng.uniform(*territory["half_width_deg"]))
    scar_depth = rng.uniform(0.3, 1.0)  # transmural extent at the sector centre
    level_lo, level_hi = territory["levels"]
    first = int(np.floor(level_lo * (depth - 1) + rng.uniform(0, 0.25) * depth))
    last = int(np.ceil(level_hi * (depth - 1) - rng.uniform(0, 0.25) * depth))
    first, last = min(first, depth - 2), max(last, min(first + 1, depth - 1))
    texture_seed = rng.integers(1 << 30)

    image = np.zeros((shape[0], shape[1], depth), np.float32)
    label = np.zeros((shape[0], shape[1], depth), np.uint8)
    for k in range(depth):
        level = k / max(depth - 1, 1)  # 0 at the base, 1 at the apex
        dy, dx = y_mm - (lv_y + rng.normal(0, 1.0)), x_mm - (lv_x + rng.normal(0, 1.0))
        radius = np.hypot(dy, dx)
        theta = np.mod(np.arctan2(-dy, dx), 2 * np.pi)  # rows grow downward; anterior is up
        wobble = 1 + 0.06 * np.cos(theta - rng.uniform(0, 2 * np.pi)) + 0.04 * np.cos(2 * theta - rng.uniform(0, 6))
        r_endo = r_endo_base * (1 - 0.6 * level**1.5) * wobble
        r_epi = r_endo + wall_mm * (1 - 0.25 * level) * (1 + 0.05 * np.cos(theta))

        cls = np.zeros((rows, cols), np.uint8)  # fine-grid label
        value = np.full((rows, cols), tissue["air"], np.float32)
        body = (x_mm / body_a) ** 2 + ((y_mm - 10) / body_b) ** 2 < 1
        value[body] = tissue["fat"]
        value[(x_mm / (body_a - 12)) ** 2 + ((y_mm - 10) / (body_b - 12)) ** 2 < 1] = tissue["body"]
        for side in (-1, 1):
            lung = ((x_mm - side * 75 - lv_x * 0.3) / 55) ** 2 + ((y_mm - 5) / 80) ** 2 < 1
            value[lung & (radius > r_epi + 25)] = tissue["lung"]
        # Right ventricle: a crescent of blood on the septal side.
        rv = (np.hypot(dy, dx + r_endo_base * 1.3) < r_endo_base * 1.55 * (1 - 0.4 * level)) & (radius > r_epi + 2)
        value[rv] = tissue["blood"]
        # Epicardial fat in the atrioventricular and interventricular grooves: bright, outside the wall.
        fat_ring = (radius > r_epi) & (radius < r_epi + rng.uniform(2, 5))
        grooves = (np.cos(theta - np.deg2rad(90)) > 0.85) | (np.cos(theta - np.deg2rad(270)) > 0.9)
        value[fat_ring & grooves] = tissue["fat"]

        cavity = radius < r_endo
        wall = (radius >= r_endo) & (radius < r_epi)
        value[cavity] = tissue["blood"]
        cls[cavity] = LV_CAVITY
        # Papillary muscles: dark myocardium inside the cavity, labelled cavity as in EMIDEC.
        for pm_angle in (np.deg2rad(rng.uniform(300, 330)), np.deg2rad(rng.uniform(200, 230))):
            pm_y, pm_x = -np.sin(pm_angle) * r_endo_base * 0.65, np.cos(pm_angle) * r_endo_base * 0.65
            pm = np.hypot(dy - pm_y, dx - pm_x) < 3.5 * (1 - 0.5 * level)
            value[pm & cavity] = tissue["myocardium"] * 1.5
        value[wall] = tissue["myocardium"]
        cls[wall] = MYOCARDIUM

        if has_scar and first <= k <= last:
            angular = np.abs(np.angle(np.exp(1j * (theta - scar_center)))) / scar_half
            slice_taper = 1 - 0.5 * abs((k - (first + last) / 2) / max((last - first) / 2, 1)) ** 2
            extent = scar_depth * slice_taper * np.sqrt(np.clip(1 - angular**2, 0, 1))
            depth_in_wall = (radius - r_endo) / (r_epi - r_endo)
            infarct = wall & (depth_in_wall < extent) & (extent > 0.05)
            texture = 1 + 0.1 * _smooth_field(np.random.default_rng(texture_seed + k), (rows, cols), 3)
            value[infarct] = (tissue["scar"] * texture)[infarct]
            cls[infarct] = SCAR
            if has_mvo and abs(k - (first + last) / 2) <= max(1, (last - first) / 4):
                core = infarct & (angular < 0.45) & (depth_in_wall < 0.45 * extent)
                value[core] = tissue["mvo"]
                cls[core] = MVO

        value *= 1 + 0.3 * shading
        image[:, :, k] = value.reshape(shape[0], supersample, shape[1], supersample).mean(axis=(1, 3))
        onehot = np.eye(NUM_CLASSES, dtype=np.float32)[cls].reshape(shape[0], supersample, shape[1], supersample, -1)
        label[:, :, k] = onehot.mean(axis=(1, 3)).argmax(-1)

    # Receive-coil bias: a smooth multiplicative field, plus Rician noise of a magnitude image.
    bias = 1 + rng.uniform(0.1, 0.35) * _smooth_field(rng, shape, sigma=min(shape) / 3)
    sigma = rng.uniform(0.015, 0.05)
    signal = image * bias[:, :, None]
    image = np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))
    image = np.round(image * 1000).astype(np.int16)

    affine = np.eye(4)
    rotation = _random_rotation(rng, 25.0)
    # A standard short-axis stack in the patient, tilted at random: anterior up, base first (lib.report reads
    # the AHA segments from this orientation). The voxels do not depend on it.
    affine[:3, :3] = RAS_TO_LPS[:3, :3] @ rotation @ short_axis_frame_lps() @ np.diag([spacing, spacing, dz])
    affine[:3, 3] = rng.uniform(-120, 120, size=3)
    info = {
        "seed": seed,
        "scar": has_scar,
        "mvo": bool(has_mvo and (label == MVO).any()),
        "territory": territory_name if has_scar else None,
        "spacing_mm": [spacing, spacing, dz],
    }
    return Phantom(image=image, label=label, affine=affine, info=info)
