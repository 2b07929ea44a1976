"""The active-learning objects that strategies, the scoring method and the server's time loop share."""

from __future__ import annotations

from dataclasses import dataclass

from ..model_store import ModelStore
from .background import BackgroundScoring
from .reservations import Reservations
from .studies import StudyPool
from .uncertainty import MyocardialUncertainty


@dataclass(frozen=True)
class ActiveLearningParts:
    """Built once per app process; cheap (no model is loaded until a study is scored)."""

    scorer: MyocardialUncertainty
    pool: StudyPool
    reservations: Reservations
    background: BackgroundScoring
    cache_dir: str

    @classmethod
    def build(
        cls, store: ModelStore, *, mc_samples: int, reserve_minutes: float, cache_dir: str
    ) -> ActiveLearningParts:
        """Wire the parts on ``store``; ``cache_dir`` holds the per-version score files."""
        pool = StudyPool()
        return cls(
            scorer=MyocardialUncertainty(store, samples=mc_samples),
            pool=pool,
            reservations=Reservations(reserve_minutes),
            background=BackgroundScoring(store, pool, cache_dir),
            cache_dir=cache_dir,
        )
