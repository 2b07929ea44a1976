"""The publish gate on hand-made validation results: pooled Dice, false scar, judgeable sets, membership."""

import pytest

from lib.metrics import pooled_dice
from lib.publish_gate import decide, is_validation_study, score_model, split_validation


def _case(wall=(90, 100, 100), scar=(0, 0, 0), scar_ml=0.0, has_scar=None):
    """One study's validate() result from (intersection, predicted, reference) voxel counts."""
    counts = lambda i, p, r: {"intersection": i, "predicted": p, "reference": r}  # noqa: E731
    return {
        "overlap": {
            "lv_cavity": counts(100, 100, 100),
            "lv_wall": counts(*wall),
            "scar": counts(*scar),
            "mvo": counts(0, 0, 0),
        },
        "predicted_scar_ml": scar_ml,
        "truth_has_scar": scar[2] > 0 if has_scar is None else has_scar,
        "truth_has_mvo": False,
    }


def test_pooled_dice_weighs_studies_by_voxels_not_one_vote_each():
    cases = [_case(scar=(90, 100, 100)), _case(scar=(0, 0, 0)), _case(scar=(0, 5, 0))]
    # per-study mean would be (0.9 + 1 + 0) / 3 = 0.63; pooled: 2*90 / (105 + 100)
    assert pooled_dice(cases)["scar"] == pytest.approx(180 / 205)
    assert pooled_dice([_case()])["mvo"] is None


CURRENT = [_case(scar=(60, 100, 100)), _case(scar=(30, 50, 50)), _case(scar=(0, 0, 0))]


def test_a_worse_candidate_is_refused():
    worse = [_case(scar=(40, 100, 100)), _case(scar=(20, 50, 50)), _case()]
    decision = decide(worse, CURRENT)
    assert decision.judged and not decision.publish and "lower than the current" in decision.reason


def test_a_better_candidate_is_published():
    better = [_case(scar=(80, 100, 100)), _case(scar=(40, 50, 50)), _case()]
    decision = decide(better, CURRENT)
    assert decision.publish and decision.candidate.score > decision.current.score


def test_a_tie_publishes():
    assert decide([dict(c) for c in CURRENT], CURRENT).publish


def test_more_false_scar_on_scar_free_studies_is_refused_even_with_better_dice():
    better_but_noisy = [_case(scar=(80, 100, 100)), _case(scar=(40, 50, 50)), _case(scar=(0, 30, 0), scar_ml=2.5)]
    current = [*CURRENT[:2], _case(scar=(0, 10, 0), scar_ml=0.8)]
    decision = decide(better_but_noisy, current)
    assert not decision.publish and "scar-free" in decision.reason


def test_a_scar_free_validation_set_cannot_judge_even_on_a_tie():
    scar_free = [_case(), _case(), _case()]
    decision = decide(scar_free, scar_free)
    assert not decision.judged and not decision.publish and "no validation study has scar" in decision.reason
    forced = decide(scar_free, scar_free, publish="force")
    assert forced.publish and "force" in forced.reason and not forced.judged


def test_fewer_than_three_validation_studies_cannot_judge():
    decision = decide(CURRENT[:2], CURRENT[:2])
    assert not decision.judged and not decision.publish and "at least 3" in decision.reason


def test_publish_never_keeps_even_a_better_model():
    better = [_case(scar=(80, 100, 100)), _case(scar=(40, 50, 50)), _case()]
    assert not decide(better, CURRENT, publish="never").publish


def test_score_is_the_mean_of_pooled_wall_and_scar_dice():
    score = score_model([_case(wall=(80, 100, 100), scar=(50, 100, 100))])
    assert score.score == pytest.approx((0.8 + 0.5) / 2)


def test_validation_membership_never_changes_as_studies_are_added():
    first = [f"lge_{i:03d}" for i in range(10)]
    more = first + [f"new_{i:03d}" for i in range(200)]
    _, val_before = split_validation(first, 0.2)
    train_after, val_after = split_validation(more, 0.2)
    assert set(val_before) <= set(val_after) and not set(val_before) & set(train_after)
    assert 0.12 < len(val_after) / len(more) < 0.28  # the hash threshold gives about the asked share
    assert is_validation_study("lge_002", 0.2) and not is_validation_study("lge_000", 0.2)
