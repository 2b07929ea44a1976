"""The ``scar_uncertainty`` scoring task: scores unscored studies under the current model into the cache."""

from __future__ import annotations

import logging
import os

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from ..errors import InputError
from ..model import CheckpointError
from .score_cache import ScoreCache
from .studies import StudyPool
from .uncertainty import MyocardialUncertainty

logger = logging.getLogger(__name__)


class ScarUncertaintyScoring(ScoringMethod):
    """Score every unlabelled study that has no score under the current model version.

    MONAI Label runs it as its background ``scoring`` task (a subprocess rebuilding the app), started
    by :class:`~.background.BackgroundScoring` or by ``POST /scoring/scar_uncertainty``. The cache
    file is written after each study, so a run that is stopped keeps what it scored. The run stops
    early when another version becomes current, whose scores are the ones worth having.

    Args:
        scorer: the Monte-Carlo dropout scorer.
        pool: the studies strategies may hand out; refused ones are not scored.
        cache_dir: folder of the per-version score files.
    """

    def __init__(self, scorer: MyocardialUncertainty, pool: StudyPool, cache_dir: str):
        super().__init__("Monte-Carlo dropout disagreement inside the myocardium, per unlabelled study (background)")
        self.scorer = scorer
        self.pool = pool
        self.cache_dir = cache_dir

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        """Score what is missing; returns the version, the ids scored now and those skipped, with reasons.

        Raises:
            CheckpointError: no usable current model (its path and the reason in the message); nothing is
                scored, since scores of random weights would rank studies by noise.
        """
        try:
            model, network = self.scorer.model()
        except CheckpointError as e:
            logger.error("uncertainty scoring not run: %s", e)
            raise CheckpointError(e.path, f"no usable model to score with: {e.reason}") from e
        cache = ScoreCache(self.cache_dir, model)
        studies, refused = self.pool.unlabelled(datastore)
        todo = cache.unscored(studies)
        result = {"version": model.version, "scored": {}, "failed": {}, "refused": refused}
        result["already_scored"] = len(studies) - len(todo)
        threads = torch.get_num_threads()
        if self.scorer.device == "cpu":
            # Background work: leave the server half the cores, so infer and saves stay responsive.
            torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
        try:
            for study in todo:
                if self.scorer.store.current() != model:
                    result["stopped"] = f"model {self.scorer.store.current().version} became current"
                    break
                try:
                    value = self.scorer.score(network, study.path)
                    cache.put(study, score=value)
                    result["scored"][study.id] = value
                    logger.info("uncertainty of %s under %s: %.5f", study.id, model.version, value)
                except InputError as e:
                    cache.put(study, error=str(e))
                    result["failed"][study.id] = str(e)
                    logger.warning("cannot score %s: %s", study.id, e)
                cache.save(keep=datastore.list_images())
        finally:
            torch.set_num_threads(threads)
        return result
