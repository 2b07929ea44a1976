"""The noisy-label benchmark's statistics, on hand-made runs with answers computed by hand."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "noisy_labels.py"
spec = importlib.util.spec_from_file_location("noisy_labels", SCRIPT)
noisy_labels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(noisy_labels)


def _case(scar, pct, g, *, has_scar=True, expert_pct=10.0, expert_g=5.0):
    return {
        "wall": 0.8,
        "scar": scar,
        "mvo": 0.0,
        "has_scar": has_scar,
        "has_mvo": False,
        "scar_g": g,
        "expert_scar_g": expert_g if has_scar else 0.0,
        "scar_pct": pct,
        "expert_scar_pct": expert_pct if has_scar else 0.0,
    }


def _run(arm, seed, a, b, normal_g=0.0):
    return {
        "arm": arm,
        "seed": seed,
        "per_case": {
            "P1": _case(a, 12.0 + seed, 6.0),
            "P2": _case(b, 8.0, 4.0 + seed),
            "N1": _case(1.0, 0.0, normal_g, has_scar=False),
        },
    }


RUNS = [
    # written out of seed order: statistics must pair by seed number, not by position
    _run("3sd / rule_soft_target", 1, 0.7, 0.5),
    _run("3sd / dice_ce", 0, 0.6, 0.4, normal_g=2.0),
    _run("3sd / rule_soft_target", 0, 0.6, 0.6),
    _run("3sd / dice_ce", 1, 0.4, 0.4, normal_g=0.5),
]


def test_seed_means_sample_sd_and_agreement_with_the_expert():
    summary = noisy_labels.summarise(RUNS, {})
    dice_ce = summary["3sd / dice_ce"]
    assert dice_ce["scar_dice"]["per_seed"] == {"0": pytest.approx(0.5), "1": pytest.approx(0.4)}
    assert dice_ce["scar_dice"]["mean"] == pytest.approx(0.45)
    assert dice_ce["scar_dice"]["sd"] == pytest.approx(np.std([0.5, 0.4], ddof=1))
    # scar %LV, seed-mean per infarct exam minus expert: P1 (12 + 13) / 2 - 10 = 2.5, P2 8 - 10 = -2
    assert dice_ce["scar_pct_bias"] == pytest.approx(0.25)
    sd = np.std([2.5, -2.0], ddof=1)
    assert dice_ce["scar_pct_sd"] == pytest.approx(sd)
    assert dice_ce["scar_pct_loa"] == pytest.approx([0.25 - 1.96 * sd, 0.25 + 1.96 * sd])
    # mass, seed mean minus expert over all exams: P1 6 - 5, P2 4.5 - 5, N1 1.25 - 0
    assert dice_ce["scar_mass_bias_g"] == pytest.approx((1.0 - 0.5 + 1.25) / 3)
    assert dice_ce["normals_over_1g"] == 1 and dice_ce["normals"] == 1  # seed mean 1.25 g


def test_arms_are_paired_with_dice_ce_seed_by_seed_and_references_left_out():
    references = {"3sd labels themselves": {"per_case": RUNS[1]["per_case"]}}
    summary = noisy_labels.summarise(RUNS, references)
    paired = noisy_labels.paired_against_dice_ce(summary, references=list(references))
    assert set(paired) == {"3sd / rule_soft_target"}
    soft = paired["3sd / rule_soft_target"]
    # seed 0: 0.6 - 0.5; seed 1: 0.6 - 0.4
    assert soft["seeds"] == [0, 1]
    assert soft["seed_differences"] == pytest.approx([0.1, 0.2])
    assert soft["mean_difference"] == pytest.approx(0.15)
    assert soft["sd_difference"] == pytest.approx(np.std([0.1, 0.2], ddof=1))
    table = noisy_labels.markdown_table(summary, paired, references=list(references))
    reference_row = next(line for line in table.splitlines() if line.startswith("| 3sd labels themselves"))
    assert reference_row.split("|")[4].strip() == "-"  # no "vs Dice + CE" for a reference
    assert table.splitlines()[-1] == reference_row  # references last
