"""When to start the background uncertainty scoring, in the server process: a model without scores, new studies.

The check is cheap (file stamps, one small JSON file, a cached checkpoint check), so it runs on every
``scar_uncertainty`` request and every few seconds from the server's time loop. It starts MONAI Label's
``scoring`` task, a subprocess, so no request ever waits for Monte-Carlo dropout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from monailabel.interfaces.datastore import Datastore
from timeloop import Timeloop

from ..model_store import ModelStore, ModelVersion
from .score_cache import ScoreCache
from .studies import Study, StudyPool

logger = logging.getLogger(__name__)

SCORING_METHOD = "scar_uncertainty"
CHECK_INTERVAL_S = 15  # how soon a publish or a new study is noticed when nobody asks for a study
RETRY_AFTER_S = 600  # a run that left the same studies unscored (failed, stopped) is not repeated sooner


@dataclass
class ScoringState:
    """What the current model's scores cover now, and what was done about the rest."""

    model: ModelVersion
    problem: str | None  # why the current model cannot be used, or None
    cache: ScoreCache
    unscored: list[Study] = field(default_factory=list)  # handable studies with no score under ``model``
    scoring: str = "idle"  # "idle" (nothing to score), "running", "started", or why not started


def _scoring_busy() -> bool:
    from monailabel.utils.async_tasks.utils import processes, tasks

    # A task is queued ("SUBMITTED") before its process exists; both mean one is under way.
    return bool(processes("scoring")) or any(t.get("status") in ("SUBMITTED", "RUNNING") for t in tasks("scoring"))


def _start_scoring() -> dict | None:
    from monailabel.utils.async_tasks.task import AsyncTask

    task, detail = AsyncTask.run("scoring", request={"method": SCORING_METHOD})
    if task is None:
        logger.info("uncertainty scoring not started: %s", detail)
    return task


class BackgroundScoring:
    """Starts the ``scar_uncertainty`` scoring task when handable studies lack scores for the current model.

    Only the server process calls it (strategies and the time loop started by the app's
    ``on_init_complete``); the train and scoring subprocesses never do.

    Args:
        store: model versions; scores belong to the current one.
        pool: studies strategies may hand out.
        cache_dir: folder of the per-version score files.
        start: starts the scoring task, returns the task or None; MONAI Label's ``AsyncTask`` by default.
        busy: whether a scoring task is queued or running.
        clock: seconds; injectable for tests.
    """

    def __init__(
        self,
        store: ModelStore,
        pool: StudyPool,
        cache_dir: str,
        *,
        start: Callable[[], dict | None] = _start_scoring,
        busy: Callable[[], bool] = _scoring_busy,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.pool = pool
        self.cache_dir = cache_dir
        self._start, self._busy, self._clock = start, busy, clock
        self._last: tuple[tuple, float] | None = None  # (what was left to score, when started)
        self._lock = threading.Lock()
        self._loop: Timeloop | None = None

    def model_problem(self, model: ModelVersion) -> str | None:
        """Why ``model`` cannot be used (missing, unreadable, other recipe), or None (see ModelStore.problem)."""
        problem = self.store.problem(model)
        return None if problem is None else str(problem)

    def check(
        self, datastore: Datastore, request: dict | None = None, *, studies: list[Study] | None = None
    ) -> ScoringState:
        """Read the current model's scores for the handable studies; start scoring if some are missing.

        Args:
            datastore: its current unlabelled list.
            request: a strategy request (``label_tag``/``labels`` go to the datastore).
            studies: the handable studies, when the caller has just listed them.
        """
        model = self.store.current()
        studies = studies if studies is not None else self.pool.unlabelled(datastore, request)[0]
        state = ScoringState(model, self.model_problem(model), ScoreCache(self.cache_dir, model))
        state.unscored = state.cache.unscored(studies)
        if state.problem:
            state.scoring = f"not started: no usable model ({state.problem})"
        elif state.unscored:
            state.scoring = self._ensure_running(state)
        return state

    def _ensure_running(self, state: ScoringState) -> str:
        left = (state.model.version, str(state.cache.model_stamp), tuple((s.id, s.stamp) for s in state.unscored))
        with self._lock:
            if self._busy():
                return "running"
            now = self._clock()
            if self._last and self._last[0] == left and now - self._last[1] < RETRY_AFTER_S:
                wait = RETRY_AFTER_S - (now - self._last[1])
                return f"not started: the last run left these studies unscored (GET /scoring/); retry in {wait:.0f} s"
            if self._start() is None:
                return "not started: MONAI Label refused to start the scoring task"
            self._last = (left, now)
        logger.info("uncertainty scoring started for %d studies under model %s", len(state.unscored), left[0])
        return "started"

    def periodic_check(self, datastore: Callable[[], Datastore]) -> None:
        """One time-loop tick: never raises, so the loop's thread keeps running."""
        try:
            self.check(datastore())
        except Exception:
            logger.exception("background uncertainty check failed")

    def start_loop(self, datastore: Callable[[], Datastore], interval_s: float = CHECK_INTERVAL_S) -> Timeloop:
        """Run :meth:`periodic_check` every ``interval_s`` in a daemon thread; call once, in the server."""
        if self._loop is None:
            self._loop = Timeloop()
            self._loop._add_job(self.periodic_check, timedelta(seconds=interval_s), datastore)
            self._loop.start(block=False)
        return self._loop
