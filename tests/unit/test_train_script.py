"""The default-model script's cross-validation bookkeeping: an all-cases model vouched for by its folds.

Tiny runs (1 epoch, 2 EMIDEC exams, 1 phantom): what is checked is which validation the checkpoint
records, not its accuracy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import torch

from tests.conftest import APP_DIR

SCRIPT = APP_DIR / "scripts" / "train_default_model.py"
TINY = ["--epochs", "1", "--phantoms", "1", "--limit-cases", "2", "--batch-size", "8", "--device", "cpu"]


def _train(real_data, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--real", str(real_data), *TINY, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _validation(checkpoint) -> dict:
    return torch.load(checkpoint, weights_only=True)["provenance"]["validation"]


def test_all_cases_model_records_its_folds_or_says_it_has_none(real_data, tmp_path):
    cv = tmp_path / "cv"
    fold = _train(real_data, "--fold", "0", "--out", str(cv / "fold0.pt"), "--metrics", str(cv / "fold0.json"))
    assert fold.returncode == 0, fold.stderr[-2000:]

    # Four fold reports missing: the model is kept, but says it has no validation, and the run fails.
    partial = _train(real_data, "--all-cases", "--cv", str(cv), "--out", str(tmp_path / "early.pt"))
    assert partial.returncode != 0
    assert "saved WITHOUT its cross-validation" in partial.stderr
    assert "found 1" in partial.stderr
    early = _validation(tmp_path / "early.pt")
    assert early["source"].startswith("none: ")
    assert early["per_case_mean"]["cases"] == 0

    # All five reports: every held-out case becomes the checkpoint's validation.
    for k in range(1, 5):  # stand-ins for the other folds: same contents, other file names
        shutil.copy(cv / "fold0.json", cv / f"fold{k}.json")
    complete = _train(real_data, "--all-cases", "--cv", str(cv), "--out", str(tmp_path / "all.pt"))
    assert complete.returncode == 0, complete.stderr[-2000:]
    validation = _validation(tmp_path / "all.pt")
    assert validation["source"].startswith("5-fold cross-validation")
    assert validation["per_case_mean"]["cases"] == 5 * 13


def test_cv_needs_an_existing_folder(real_data, tmp_path):
    run = _train(real_data, "--all-cases", "--cv", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.pt"))
    assert run.returncode == 2
    assert "no such folder" in run.stderr
    assert not (tmp_path / "m.pt").exists()


# The packages of the server and its image readers, absent from a GPU machine's stock torch image.
SERVER_STACK = ("monailabel", "fastapi", "starlette", "pydantic", "SimpleITK", "itk", "pydicom", "nibabel")
WITHOUT_SERVER_STACK = f"""
import importlib.abc, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {SERVER_STACK!r}:
            raise ImportError(f"No module named {{name!r}} (absent on purpose)")
sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_script_trains_where_only_torch_and_monai_are_installed(real_data, tmp_path):
    """A GPU machine's image has torch but not the server's stack: training must need only torch and MONAI."""
    out = tmp_path / "fold0.pt"
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_SERVER_STACK, str(SCRIPT), "--real", str(real_data), *TINY, "--fold", "0"]
        + ["--out", str(out), "--metrics", str(tmp_path / "fold0.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert torch.load(out, weights_only=True)["provenance"]["validation"]["per_case_mean"]["cases"] == 13
