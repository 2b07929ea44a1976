"""The cross-validated calibration protocol of benchmarks/eval_default_model.py, on hand-made out-of-fold cases."""

import importlib.util
from pathlib import Path

import numpy as np

from lib.constants import LV_CAVITY, MYOCARDIUM, SCAR

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_default_model.py"
spec = importlib.util.spec_from_file_location("eval_default_model", SCRIPT)
eval_default_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eval_default_model)


def _ring(scar_pixels: int) -> np.ndarray:
    """A 48x48x3 LV: cavity, myocardial ring, scar on the first ``scar_pixels`` wall pixels of each slice."""
    yy, xx = np.mgrid[:48, :48]
    r = np.hypot(yy - 24, xx - 24)
    plane = np.zeros((48, 48), np.uint8)
    plane[r < 16] = MYOCARDIUM
    plane[r < 9] = LV_CAVITY
    wall = np.argwhere(plane == MYOCARDIUM)
    wall = wall[np.argsort(np.arctan2(wall[:, 0] - 24, wall[:, 1] - 24))]
    for y, x in wall[:scar_pixels]:
        plane[y, x] = SCAR
    return np.repeat(plane[..., None], 3, axis=-1)


def _lge(truth: np.ndarray, seed: int) -> np.ndarray:
    """The exam's intensities: myocardium 100 +- 10, its expert scar enhanced to 250."""
    image = 100.0 + np.random.default_rng(seed).normal(0.0, 10.0, truth.shape)
    image[truth == SCAR] += 150.0
    return image


def _case(name: str, fold: int, truth_scar: int, pred_scar: int, passes: tuple[int, ...]) -> dict:
    return {
        "name": name,
        "fold": fold,
        "voxel_ml": 0.0225,
        "intensities": _lge(_ring(truth_scar), seed=len(name) + fold + truth_scar),
        "truth": _ring(truth_scar),
        "pred": _ring(pred_scar),
        "flip_passes": np.stack([_ring(p) for p in passes]),
        "mc_dropout": np.stack([_ring(p) for p in passes]),
    }


def _cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for i in range(40):
        infarct = i % 3 != 0
        truth = int(rng.integers(60, 200)) if infarct else 0
        pred = max(0, truth + int(rng.integers(-30, 30))) if infarct else int(rng.integers(0, 4))
        passes = tuple(max(0, pred + int(rng.integers(-10, 10))) for _ in range(4))
        cases.append(_case(f"Case_{'P' if infarct else 'N'}{i:03d}", i % 5, truth, pred, passes))
    return cases


def test_each_fold_is_judged_by_rules_fitted_without_it():
    cases = _cases(np.random.default_rng(0))
    before = eval_default_model.calibrate(cases, 5)
    # Erase fold 1's expert scar: had its own labels fitted the rules that judge it, its rows would move.
    changed = [dict(c, truth=_ring(0)) if c["fold"] == 1 else c for c in cases]
    after = eval_default_model.calibrate(changed, 5)
    fold1 = lambda result: [r for r in result["per_case"] if r["fold"] == 1]  # noqa: E731
    moved = [
        (a["interval"], b["interval"])
        for a, b in zip(fold1(before), fold1(after), strict=True)
        if a["interval"] != b["interval"] or a["scar_present_probability"] != b["scar_present_probability"]
    ]
    assert moved == []  # fold 1's intervals and probabilities ignore fold 1's expert labels


def test_the_protocol_reports_what_the_issue_asks():
    result = eval_default_model.calibrate(_cases(np.random.default_rng(1)), 5)
    figures = result["figures"]
    assert figures["folds"] == 5 and figures["cases"] == 40
    presence = figures["scar_presence"]
    assert presence["infarct_cases"] + presence["normal_cases"] == 40
    assert presence["sensitivity"] > 0.9 and presence["specificity"] > 0.9  # the two are far apart here
    intervals = figures["intervals"]
    assert 0.7 <= intervals["scar_percent_lv_coverage"] <= 1.0 and intervals["cases"] == 40
    assert len(result["per_case"]) == 40
    assert result["calibration"].interval_q_percent > 0
    # One quantile per group by the presence decision (Mondrian): here normal exams' errors are ~0 points.
    assert result["calibration"].interval_q_percent_no_scar < result["calibration"].interval_q_percent
