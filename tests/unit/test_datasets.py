"""Case-level splits of the EMIDEC cases: every recipe is judged on the same, stratified cases."""

import pytest

from lib.datasets import kfold_cases, split_cases

CASES = [f"Case_P{i:03d}" for i in range(45)] + [f"Case_N{i:03d}" for i in range(20)]


def test_every_case_is_held_out_exactly_once_and_folds_are_stratified():
    folds = kfold_cases(CASES, 5)
    assert sorted(c for f in folds for c in f) == sorted(CASES)
    assert [sum(c.startswith("Case_P") for c in f) for f in folds] == [9] * 5
    assert [sum(c.startswith("Case_N") for c in f) for f in folds] == [4] * 5


def test_folds_are_fixed_by_the_seed_and_differ_between_seeds():
    assert kfold_cases(CASES, 5) == kfold_cases(list(reversed(CASES)), 5)
    assert kfold_cases(CASES, 5, seed=1) != kfold_cases(CASES, 5, seed=2)


def test_uneven_groups_fill_the_smaller_folds_first():
    folds = kfold_cases(CASES[:7] + CASES[-2:], 3)  # 7 infarct (3, 2, 2 per fold) + 2 normal cases
    assert [len(f) for f in folds] == [3, 3, 3]


def test_bad_fold_counts_are_refused():
    with pytest.raises(ValueError, match="folds"):
        kfold_cases(CASES, 1)


def test_the_fixed_hold_out_is_disjoint_from_training():
    train, held_out = split_cases(CASES)
    assert not set(train) & set(held_out) and len(held_out) == 13
