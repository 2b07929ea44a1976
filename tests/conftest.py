"""Shared fixtures: the app's ``lib`` on the path, the real-data folder, tiny synthetic studies."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "apps" / "scar_lge"
SAMPLE_DATA = ROOT / "sample-data"
DEFAULT_MODEL = APP_DIR / "model" / "scar.pt"
REAL_DATA = Path(os.environ.get("SCAR_LGE_REAL_DATA", ROOT.parent / "shared" / "real"))

sys.path.insert(0, str(APP_DIR))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/real (or $SCAR_LGE_REAL_DATA); tests that need it skip only when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder {REAL_DATA} is absent")
    return REAL_DATA


def copy_first_phase(series: Path, dest: Path) -> int:
    """Copy one frame per slice position (the earliest trigger time) of a multi-phase DICOM series; returns how many."""
    import shutil

    import pydicom

    first: dict[tuple, tuple[float, Path]] = {}
    for f in sorted(series.glob("*.dcm")):
        ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        key = tuple(round(float(v), 2) for v in ds.ImagePositionPatient)
        if key not in first or float(ds.TriggerTime) < first[key][0]:
            first[key] = (float(ds.TriggerTime), f)
    dest.mkdir(parents=True)
    for _, f in first.values():
        shutil.copy(f, dest / f.name)
    return len(first)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def pytest_terminal_summary(terminalreporter):
    """Say in the summary why real-data tests skipped, so a run without the data cannot pass for a full one."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "real data folder" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"real-data tests: {len(skipped)} skipped because {REAL_DATA} is absent "
            "(set SCAR_LGE_REAL_DATA to the folder holding emidec_png, emidec_nifti and sunnybrook)",
            yellow=True,
        )
