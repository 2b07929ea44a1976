"""The ``scar`` task config: reads the app's conf flags and builds infer, train and active learning.

The model itself (labels, grid, network) is declared in ``lib/model.py`` and ``lib/constants.py``;
this module owns the paths and the user-settable options.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.utils.others.generic import strtobool

from ..activelearning.parts import ActiveLearningParts
from ..activelearning.scoring import ScarUncertaintyScoring
from ..activelearning.strategies import FirstStrategy, RandomStrategy, ScarUncertaintyStrategy
from ..activelearning.uncertainty import MC_SAMPLES
from ..constants import LABELS, MODEL_NAME
from ..infers.scar import ScarInfer
from ..infers.semiauto import RULES, SemiAutoScarInfer
from ..model import build_network
from ..model_store import ModelStore
from ..train_options import EPOCHS_RANGE, LR_RANGE, describe_range
from ..trainers.scar import ScarTrainer

logger = logging.getLogger(__name__)

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def data_home() -> str:
    """The app's runtime data, never the source tree: ``$SCAR_LGE_HOME``, else ``$XDG_DATA_HOME/scar_lge``,
    else ``~/.local/share/scar_lge`` (the folders ``scripts/serve.sh`` uses)."""
    if os.environ.get("SCAR_LGE_HOME"):
        return os.environ["SCAR_LGE_HOME"]
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "scar_lge")


def default_model_dir() -> str:
    """Where published models go unless ``--conf model_dir`` says otherwise: ``models/`` in :func:`data_home`."""
    return os.path.join(data_home(), "models")


def default_dicomweb_mirror(url: str) -> str:
    """Where the series downloaded from the DICOMweb store ``url``, and their labels, are kept unless
    ``--conf dicomweb_mirror`` says otherwise: ``dicomweb/<hash of the URL>`` in :func:`data_home`."""
    return os.path.join(data_home(), "dicomweb", hashlib.sha256(url.encode()).hexdigest()[:16])


def shipped_model_path(app_dir: str) -> str:
    """The default model that ships with the app; read, never written."""
    return os.path.join(app_dir, "model", f"{MODEL_NAME}.pt")


@dataclass(frozen=True)
class ScarSettings:
    """User options, from ``--conf NAME VALUE`` on the server command line."""

    model_dir: str
    epochs: int = 5
    lr: float = 1e-4
    val_split: float = 0.2
    mc_samples: int = MC_SAMPLES
    reserve_minutes: float = 15.0
    multi_gpu: bool = True
    cpu_ranks: int = 1


def _flag(conf: dict[str, str], name: str, cast, default, check, allowed: str):
    raw = conf.get(name)
    if raw is None:
        return default
    try:
        value = cast(str(raw))
    except ValueError:
        value = None
    if value is None or not check(value):
        raise ValueError(f"conf {name}={raw!r} is not valid; allowed: {allowed}")
    return value


def _ranged(conf: dict[str, str], name: str, cast, default, bounds: tuple[float, float]):
    return _flag(conf, name, cast, default, lambda v: bounds[0] <= v <= bounds[1], describe_range(cast, bounds))


# Share of studies held out for validation: enough to judge (publish_gate.MIN_VALIDATION_STUDIES),
# not so many that little is left to train on.
VAL_SPLIT_RANGE = (0.05, 0.5)
# CPU processes that train together (gloo DDP) when training runs on the CPU. More than the cores only
# slows it down; the point is to run the multi-GPU path where there is no GPU (tests, a CI machine).
CPU_RANKS_RANGE = (1, 16)


def parse_settings(conf: dict[str, str], app_dir: str) -> ScarSettings:
    """Cast and check every flag once; a bad value raises ValueError naming flag, value and choices."""
    return ScarSettings(
        model_dir=_flag(
            conf,
            "model_dir",
            str,
            default_model_dir(),
            lambda v: bool(v) and os.path.realpath(v) != os.path.dirname(shipped_model_path(app_dir)),
            "a folder path other than the shipped model's folder",
        ),
        # Train defaults: held to the ranges of a train request (lib/train_options.py), so a default never fails.
        epochs=_ranged(conf, "epochs", int, ScarSettings.epochs, EPOCHS_RANGE),
        lr=_ranged(conf, "lr", float, ScarSettings.lr, LR_RANGE),
        val_split=_ranged(conf, "val_split", float, ScarSettings.val_split, VAL_SPLIT_RANGE),
        mc_samples=_flag(conf, "mc_samples", int, ScarSettings.mc_samples, lambda v: v >= 2, "an integer >= 2"),
        reserve_minutes=_flag(
            conf,
            "reserve_minutes",
            float,
            ScarSettings.reserve_minutes,
            lambda v: 0 <= v < float("inf"),
            "a number of minutes >= 0 (0: no reservations)",
        ),
        multi_gpu=_flag(conf, "multi_gpu", strtobool, ScarSettings.multi_gpu, lambda v: True, "true or false"),
        cpu_ranks=_ranged(conf, "cpu_ranks", int, ScarSettings.cpu_ranks, CPU_RANKS_RANGE),
    )


class ScarConfig(TaskConfig):
    """Wires the one ``scar`` model into MONAI Label's infer, train, strategy and scoring slots, and the
    semi-automatic rules (``scar_nsd``, ``scar_fwhm``, ``scar_ewa``) into its infer slot."""

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        app_dir = kwargs.get("app_dir", os.path.dirname(model_dir))
        self.settings = parse_settings(conf, app_dir)
        self.labels = dict(LABELS)
        self.store = ModelStore(self.settings.model_dir, shipped_model_path(app_dir))
        self.network = build_network()
        self.active_learning = ActiveLearningParts.build(
            self.store,
            mc_samples=self.settings.mc_samples,
            reserve_minutes=self.settings.reserve_minutes,
            cache_dir=os.path.join(self.store.model_dir, "uncertainty"),
        )

    def infer(self, *, datastore: Callable[[], Datastore]) -> dict[str, InferTask]:
        """The ``scar`` model task and one semi-automatic task per rule, ``scar_<rule>``.

        Args:
            datastore: returns the app's datastore, where the semi-automatic tasks find a study's labels.
        """
        scar = ScarInfer(self.store, self.network)
        semiauto = {
            f"{self.name}_{rule}": SemiAutoScarInfer(rule, scar_task=scar, datastore=datastore) for rule in RULES
        }
        return {self.name: scar, **semiauto}

    def trainer(self) -> ScarTrainer:
        s = self.settings
        return ScarTrainer(
            self.store,
            epochs=s.epochs,
            lr=s.lr,
            val_split=s.val_split,
            multi_gpu=s.multi_gpu,
            cpu_ranks=s.cpu_ranks,
        )

    def strategy(self) -> dict:
        al = self.active_learning  # one pool and one set of reservations for all three strategies
        return {
            "scar_uncertainty": ScarUncertaintyStrategy(al.pool, al.reservations, al.background),
            "random": RandomStrategy(al.pool, al.reservations),
            "first": FirstStrategy(al.pool, al.reservations),
        }

    def scoring_method(self) -> dict:
        al = self.active_learning
        return {"scar_uncertainty": ScarUncertaintyScoring(al.scorer, al.pool, al.cache_dir)}
