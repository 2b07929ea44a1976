"""Background runs end with the server that started them.

MONAI Label runs training and scoring as child processes of the server. A process manager stopping
the server (SIGTERM to its PID alone) or a crash would leave them running with no one to report to,
so both ends act: the server stops its children on shutdown (:func:`stop_background_runs`), and a
child stops itself when its parent is gone (:class:`ParentWatch`), also after a SIGKILL.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)
# Progress lines for GET /train/ (MONAI Label shows a run's last stdout lines there): plain text, one
# line per event, apart from the library logging of the same process.
progress = logging.getLogger("scar_lge.progress")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
BACKGROUND_METHODS = ("train", "scoring", "batch_infer")


def in_background_run() -> bool:
    """True in a process MONAI Label started for a train/scoring/batch-infer task (not in the server)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", "") == "monailabel.interfaces.utils.app"


def stop_with_parent() -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: ParentWatch's pid check still works
        logger.debug("prctl(PR_SET_PDEATHSIG) unavailable")


class ParentWatch:
    """In a background run: notices when the server process that started it has gone.

    Asks the kernel to send SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``), and records the
    parent's pid so :meth:`parent_gone` also catches a parent that died before that request was made.
    Does nothing in the server itself (a synchronous ``run_sync`` run): its parent is a shell.
    """

    def __init__(self):
        self.parent_pid = os.getppid()
        self.active = in_background_run()
        if self.active:
            stop_with_parent()

    def parent_gone(self) -> bool:
        """True once the starting process has exited (the child was re-parented)."""
        return self.active and os.getppid() != self.parent_pid


def stop_background_runs() -> list[str]:
    """Kill every train, scoring and batch-infer process this server started; returns what was stopped.

    A killed run publishes nothing: models are published by an atomic rename at the very end of a run.
    """
    from monailabel.utils.async_tasks.task import AsyncTask
    from monailabel.utils.async_tasks.utils import background_executors, processes, tasks

    stopped = []
    for method in BACKGROUND_METHODS:
        # Queued runs first, so none starts (and publishes) while the server shuts down.
        executor = background_executors.get(method)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        for task in tasks(method):
            if task.get("status") == "SUBMITTED":
                task["status"] = "STOPPED"
                stopped.append(f"{method} {task.get('id')} (queued)")
        while processes(method):
            task = AsyncTask.stop(method)
            if task is None:
                break
            stopped.append(f"{method} {task.get('id')}")
    if stopped:
        logger.info("stopped background runs: %s", stopped)
    return stopped


def show_progress_plainly() -> None:
    """In a background run: progress lines go to stdout bare; library chatter below errors is dropped."""
    if not in_background_run():
        return
    if not progress.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False
    for name in ("monai", "monailabel", "ignite", "lib", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.captureWarnings(True)
