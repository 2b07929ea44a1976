"""Which labelled studies validate, and whether a fine-tuned model may replace the current one.

Validation membership is decided per study from a hash of its id against a threshold, so a study is
a validation study or a training study for good: adding studies never moves one across, and a study
the gate judges on has never been trained on.

The gate scores the current and the candidate model on the same validation studies with Dice pooled
over the set per structure (:func:`lib.metrics.pooled_dice`), plus a false-positive term: predicted
scar volume on the scar-free validation studies. The candidate is published when

* the set can judge: at least :data:`MIN_VALIDATION_STUDIES` studies and some reference scar, and
* its score, the mean of pooled LV-wall and pooled scar Dice, is not lower than the current model's, and
* its predicted scar on scar-free validation studies is not larger than the current model's.

A tie publishes: the candidate has seen more corrected labels and is no worse on anything the gate
measures. A set that cannot judge (too few studies, or no scar at all: a scar-free set cannot tell
a model that finds scar from one that never does) publishes nothing unless the request says
``publish: "force"``; ``publish: "never"`` trains and scores without publishing.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from .metrics import pooled_dice

MIN_VALIDATION_STUDIES = 3


def is_validation_study(image_id: str, fraction: float) -> bool:
    """True when ``image_id`` is held out for validation at this ``fraction`` of studies.

    The first 8 hex digits of SHA-256 of the id, read as a number in [0, 1), below ``fraction``.
    Depends on the id alone, never on which other studies exist.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}.")
    return int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16) / 16**8 < fraction


def split_validation(image_ids: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(training ids, validation ids), each sorted; see :func:`is_validation_study`."""
    validation = sorted(i for i in image_ids if is_validation_study(i, fraction))
    return sorted(set(image_ids) - set(validation)), validation


@dataclass(frozen=True)
class ModelScore:
    """One model on the validation set."""

    pooled_dice: dict[str, float | None]
    score: float  # mean of pooled LV-wall and scar Dice
    false_scar_ml: float  # predicted scar volume summed over scar-free validation studies

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def score_model(per_case: list[dict]) -> ModelScore:
    """Gate figures of one model from :func:`lib.engine.validate`'s per-study results."""
    pooled = pooled_dice(per_case)
    wall, scar = pooled["lv_wall"] or 0.0, pooled["scar"] or 0.0
    false_scar = sum(c["predicted_scar_ml"] for c in per_case if not c["truth_has_scar"])
    return ModelScore(pooled_dice=pooled, score=(wall + scar) / 2, false_scar_ml=float(false_scar))


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer, with every figure it used, for train_stats."""

    publish: bool
    judged: bool
    reason: str
    candidate: ModelScore
    current: ModelScore | None

    def to_json(self) -> dict:
        return {
            "published": self.publish,
            "judged": self.judged,
            "reason": self.reason,
            "candidate": self.candidate.to_json(),
            "current": self.current.to_json() if self.current else None,
        }


def can_judge(per_case: list[dict]) -> tuple[bool, str]:
    """Whether a validation set can decide publishing, and why not."""
    if len(per_case) < MIN_VALIDATION_STUDIES:
        return False, f"{len(per_case)} validation studies; at least {MIN_VALIDATION_STUDIES} are needed to judge"
    if not any(c["truth_has_scar"] for c in per_case):
        return False, "no validation study has scar, so scar accuracy cannot be judged"
    return True, ""


def decide(candidate_cases: list[dict], current_cases: list[dict] | None, publish: str = "auto") -> GateDecision:
    """Publish or keep, from both models' per-study validation results on the same studies.

    Args:
        candidate_cases: the fine-tuned model's :func:`lib.engine.validate` results.
        current_cases: the current model's on the same studies; None when training started from scratch.
        publish: "auto" (the rule above), "force" (publish whatever the figures) or "never".
    """
    candidate = score_model(candidate_cases)
    current = score_model(current_cases) if current_cases is not None else None
    judged, why_not = can_judge(candidate_cases)
    if publish == "never":
        return GateDecision(False, judged, "the request said publish: never", candidate, current)
    if publish == "force":
        note = "" if judged else f" (the set could not judge: {why_not})"
        return GateDecision(
            True, judged, f"published because the request said publish: force{note}", candidate, current
        )
    if not judged:
        return GateDecision(
            False, False, f"not published: {why_not}; send publish: force to publish anyway", candidate, current
        )
    if current is None:
        return GateDecision(
            True, True, "published: no current model to compare with (trained from scratch)", candidate, current
        )
    if candidate.score < current.score:
        reason = f"not published: validation score {candidate.score:.4f} is lower than the current {current.score:.4f}"
        return GateDecision(False, True, reason, candidate, current)
    if candidate.false_scar_ml > current.false_scar_ml:
        reason = (
            f"not published: predicts {candidate.false_scar_ml:.2f} mL of scar on scar-free validation studies, "
            f"more than the current model's {current.false_scar_ml:.2f} mL"
        )
        return GateDecision(False, True, reason, candidate, current)
    return GateDecision(
        True,
        True,
        f"published: validation score {candidate.score:.4f} not lower than the current {current.score:.4f}, "
        "and no more scar on scar-free studies",
        candidate,
        current,
    )
