"""Training sources for the default model: EMIDEC slices from disk and generated phantoms."""

from __future__ import annotations

import re
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .engine import Study, load_study
from .phantoms import make_phantom

# The EMIDEC PNG redistribution was resized to 256x256 and lost its spacing; EMIDEC acquisitions are
# about 1.25-2 mm in-plane with 10 mm slices, so a nominal grid is assumed and scale augmentation
# (+-15 %) covers the error.
EMIDEC_PNG_NOMINAL_SPACING_MM = (1.5, 1.5, 10.0)
_SLICE_NAME = re.compile(r"(Case_[NP]\d{3})_slice(\d{3})\.png$")


def emidec_png_cases(root: str | Path) -> dict[str, list[Path]]:
    """Case name -> slice PNG paths in slice order, from ``<root>/images``."""
    images = Path(root) / "images"
    if not images.is_dir():
        raise FileNotFoundError(f"no EMIDEC PNG images under {images}")
    cases: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in images.glob("*.png"):
        match = _SLICE_NAME.search(path.name)
        if match:
            cases[match.group(1)].append((int(match.group(2)), path))
    return {case: [p for _, p in sorted(slices)] for case, slices in sorted(cases.items())}


def split_cases(cases: list[str], held_out_fraction: float = 0.2, seed: int = 2026) -> tuple[list[str], list[str]]:
    """Fixed case-level split, stratified by infarct (P) and normal (N) cases: (train, held_out)."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for group in ("Case_P", "Case_N"):
        members = sorted(c for c in cases if c.startswith(group))
        order = rng.permutation(len(members))
        n_out = int(round(held_out_fraction * len(members)))
        held_out += [members[i] for i in order[:n_out]]
        train += [members[i] for i in order[n_out:]]
    return sorted(train), sorted(held_out)


def kfold_cases(cases: list[str], folds: int = 5, seed: int = 2026) -> list[list[str]]:
    """Case-level folds for cross-validation, stratified by infarct (P) and normal (N) cases.

    Each case is in exactly one fold; fold sizes differ by at most one case per group. The order is
    fixed by ``seed``, so every recipe compared by cross-validation is judged on the same folds.
    """
    if not 2 <= folds <= len(cases):
        raise ValueError(f"folds must be between 2 and the number of cases ({len(cases)}), got {folds}")
    rng = np.random.default_rng(seed)
    out: list[list[str]] = [[] for _ in range(folds)]
    offset = 0
    for group in ("Case_P", "Case_N"):
        members = sorted(c for c in cases if c.startswith(group))
        for i, k in enumerate(rng.permutation(len(members))):
            out[(offset + i) % folds].append(members[k])
        offset += len(members)  # the next group fills the smaller folds first
    return [sorted(f) for f in out]


def read_emidec_png_case(root: str | Path, case: str, slices: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """One EMIDEC case's image and expert label as (H, W, D) arrays, slices stacked in order."""
    image = np.stack([np.asarray(Image.open(p), np.float32) for p in slices], axis=-1)
    label = np.stack([np.asarray(Image.open(Path(root) / "labels" / p.name), np.uint8) for p in slices], axis=-1)
    if label.max() > 4:
        raise ValueError(f"{case}: label values must be 0-4, got max {label.max()}")
    return image, label


def emidec_png_study(case: str, image: np.ndarray, label: np.ndarray) -> Study:
    """(H, W, D) EMIDEC arrays (any label of them) as a study on the model grid, at the nominal spacing."""
    return load_study(image, label, name=case, affine=np.diag([*EMIDEC_PNG_NOMINAL_SPACING_MM, 1.0]))


def load_emidec_png_case(root: str | Path, case: str, slices: list[Path]) -> Study:
    """One EMIDEC case as a study on the model grid, slices stacked as (H, W, D)."""
    return emidec_png_study(case, *read_emidec_png_case(root, case, slices))


def phantom_studies(seeds: range | list[int], workers: int = 0) -> list[Study]:
    """Generated LGE phantoms as studies on the model grid, rendered in ``workers`` processes."""
    seeds = list(seeds)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            phantoms = list(pool.map(make_phantom, seeds))
    else:
        phantoms = [make_phantom(seed) for seed in seeds]
    pairs = zip(seeds, phantoms, strict=True)
    return [load_study(p.image, p.label, name=f"phantom_{s}", affine=p.affine) for s, p in pairs]
