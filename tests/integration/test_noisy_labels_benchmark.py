"""The noisy-label benchmark's --quick mode on real EMIDEC exams: every arm runs, is judged, and resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.datasets import EMIDEC_PNG_NOMINAL_SPACING_MM, emidec_png_cases
from lib.metrics import dice
from lib.semiauto import nsd_scar

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "noisy_labels.py"


@pytest.fixture(scope="module")
def quick_run(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy")
    command = [sys.executable, str(SCRIPT), "--real", str(real_data), "--out", str(out), "--quick", "--workers", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, command, json.loads((out / "summary.json").read_text())


def test_every_arm_is_run_and_judged_against_the_expert(quick_run):
    out, _, report = quick_run
    summary = report["summary"]
    expected = {"base (no fine-tuning)", "expert / dice_ce", "3sd / dice_ce", "3sd / rule_soft_target"}
    assert expected | {"3sd labels themselves"} <= set(summary)
    table = (out / "table.md").read_text()
    assert all(f"| {arm} |" in table for arm in expected)
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    base = next(r for r in runs if r["loss"] is None)
    for run in runs:
        assert set(run["per_case"]) == set(report["test_cases"])
        if run["loss"] is not None:  # fine-tuning happened and changed the answer
            assert run["steps"] > 0
            assert any(run["per_case"][c]["scar_g"] != base["per_case"][c]["scar_g"] for c in run["per_case"])


def test_the_lower_reference_is_the_rules_own_agreement_with_the_expert(quick_run, real_data):
    _, _, report = quick_run
    reference = report["summary"]["3sd labels themselves"]
    assert reference["wall_dice"]["mean"] == 1.0  # drawn inside the expert's own myocardium
    root = real_data / "emidec_png"
    cases = emidec_png_cases(root)
    scores = []
    for case in report["test_cases"]:
        image = np.stack([np.asarray(Image.open(p), np.float32) for p in cases[case]], axis=-1)
        expert = np.stack([np.asarray(Image.open(root / "labels" / p.name)) for p in cases[case]], axis=-1)
        if np.isin(expert, (3, 4)).any():
            made = nsd_scar(image, expert, n_sd=3.0, spacing_mm=EMIDEC_PNG_NOMINAL_SPACING_MM)
            scores.append(dice(np.isin(made.label, (3, 4)), np.isin(expert, (3, 4))))
    assert reference["scar_dice"]["mean"] == pytest.approx(float(np.mean(scores)), abs=1e-6)


def test_figures_are_written(quick_run):
    out, _, _ = quick_run
    for name in ("bland_altman.png", "overlays.png"):
        with Image.open(out / name) as png:
            assert png.width > 300 and png.height > 200


def test_a_rerun_resumes_without_training_again(quick_run):
    out, command, _ = quick_run
    before = (out / "runs.jsonl").read_text()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "runs.jsonl").read_text() == before
