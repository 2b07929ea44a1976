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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
