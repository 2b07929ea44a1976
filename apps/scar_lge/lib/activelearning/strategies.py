"""The strategies (next study to annotate): ``scar_uncertainty``, ``random`` and ``first``, on one shared base.

Each strategy only orders the candidates; the base decides what a candidate is (an unlabelled study
infer accepts, from the datastore's current list) and reserves the study it hands out for the asking
client, so annotators asking in turn get different studies. Nothing here computes a score: requests
answer in milliseconds.
"""

from __future__ import annotations

import logging
import random
from abc import abstractmethod

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from .background import BackgroundScoring
from .reservations import Reservations, client_key
from .studies import Study, StudyPool

logger = logging.getLogger(__name__)


class ReservingStrategy(Strategy):
    """Hands out the first study of :meth:`rank`'s order that no other client holds, and reserves it.

    Args:
        description: shown in ``GET /info/``.
        pool: unlabelled studies infer accepts.
        reservations: shared by every strategy of the app, so a study held via one is held for all.
    """

    def __init__(self, description: str, pool: StudyPool, reservations: Reservations):
        super().__init__(description)
        self.pool = pool
        self.reservations = reservations

    @abstractmethod
    def rank(self, request: dict, datastore: Datastore, studies: list[Study]) -> tuple[list[str], dict]:
        """Candidate ids, preferred first, and fields for the reply; ``studies`` is never empty."""

    def answer(self, image_id: str, fields: dict) -> dict:
        """The reply for the study handed out; strategies add per-study fields."""
        return {"id": image_id, **fields}

    def __call__(self, request: dict, datastore: Datastore) -> dict | None:
        studies, refused = self.pool.unlabelled(datastore, request)
        if not studies:
            return None
        order, fields = self.rank(request, datastore, studies)
        claimed = self.reservations.claim(client_key(request), order)
        if claimed is None:
            logger.info("all %d candidate studies are reserved by other clients", len(order))
            return None
        image_id, until = claimed
        reply = self.answer(image_id, fields)
        if until is not None:
            reply["reserved_until"] = int(until)
        if refused:
            reply["refused"] = refused
        return reply


class FirstStrategy(ReservingStrategy):
    """The unlabelled study first by id that no other annotator holds."""

    def __init__(self, pool: StudyPool, reservations: Reservations):
        super().__init__("First unlabelled study by id, skipping studies other annotators hold", pool, reservations)

    def rank(self, request: dict, datastore: Datastore, studies: list[Study]) -> tuple[list[str], dict]:
        return sorted(s.id for s in studies), {}


class RandomStrategy(ReservingStrategy):
    """A uniformly random unlabelled study that no other annotator holds.

    Args:
        rng: source of randomness; seed it for repeatable tests.
    """

    def __init__(self, pool: StudyPool, reservations: Reservations, *, rng: random.Random | None = None):
        super().__init__("Random unlabelled study, skipping studies other annotators hold", pool, reservations)
        self.rng = rng or random.Random()

    def rank(self, request: dict, datastore: Datastore, studies: list[Study]) -> tuple[list[str], dict]:
        order = [s.id for s in studies]
        self.rng.shuffle(order)
        return order, {}


class ScarUncertaintyStrategy(ReservingStrategy):
    """The unlabelled study with the highest cached myocardial MC-dropout disagreement under the current model.

    Scores are only read here (see :class:`~.background.BackgroundScoring`). Fallback, while some
    candidate has no score for the current model: scored studies first, best first, then the rest by
    id; with no usable model, all by id. The reply then carries ``fallback`` (the reason) and always
    ``scored``/``unscored`` counts, ``model_version`` and ``scoring`` (the background task's state).
    Studies the scoring task could not read come last, listed in ``failed``; they are not waited for.
    """

    def __init__(self, pool: StudyPool, reservations: Reservations, background: BackgroundScoring):
        super().__init__(
            "Unlabelled study the model is least sure about inside the myocardium (MC dropout, scored in the "
            "background; id order until scores exist)",
            pool,
            reservations,
        )
        self.background = background

    def rank(self, request: dict, datastore: Datastore, studies: list[Study]) -> tuple[list[str], dict]:
        state = self.background.check(datastore, request, studies=studies)
        ids = {s.id for s in studies}
        scores = {} if state.problem else {s.id: state.cache.score(s) for s in studies}
        scores = {k: v for k, v in scores.items() if v is not None}
        failed = {} if state.problem else {s.id: state.cache.error(s) for s in studies if state.cache.error(s)}
        waiting = len(ids) - len(scores) - len(failed)
        order = sorted(scores, key=lambda k: (-scores[k], k)) + sorted(ids - set(scores))
        fields = {
            "model_version": state.model.version,
            "scores": scores,
            "scored": len(scores),
            "unscored": waiting,
            "scoring": state.scoring,
        }
        if failed:
            fields["failed"] = failed
        if state.problem:
            fields["fallback"] = f"no usable model ({state.problem}); studies in id order"
        elif waiting:
            rest = "best-scored first, then the rest in id order" if scores else "studies in id order"
            fields["fallback"] = (
                f"{waiting} of {len(ids)} studies not yet scored by model {state.model.version} "
                f"(background scoring {state.scoring}); {rest}"
            )
        return order, fields

    def answer(self, image_id: str, fields: dict) -> dict:
        reply = {"id": image_id, **fields}
        if image_id in fields["scores"]:
            reply["score"] = fields["scores"][image_id]
        return reply
