"""The ``scar`` task config: reads the app's conf flags and builds infer, train and active learning.

The model itself (labels, grid, network) is declared in ``lib/model.py`` and ``lib/constants.py``;
this module owns the paths and the user-settable options.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from ..activelearning.uncertainty import MyocardialUncertainty, ScarUncertaintyScoring, ScarUncertaintyStrategy
from ..constants import LABELS, MODEL_NAME
from ..infers.scar import ScarInfer
from ..model import build_network
from ..trainers.scar import ScarTrainer

logger = logging.getLogger(__name__)

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


@dataclass(frozen=True)
class ScarSettings:
    """User options, from ``--conf NAME VALUE`` on the server command line."""

    model_dir: str
    epochs: int = 5
    lr: float = 1e-4
    val_split: float = 0.2
    mc_samples: int = 8


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


def parse_settings(conf: dict[str, str], app_dir: str) -> ScarSettings:
    """Cast and check every flag once; a bad value raises ValueError naming flag, value and choices."""
    return ScarSettings(
        model_dir=_flag(conf, "model_dir", str, os.path.join(app_dir, "model"), lambda v: bool(v), "a folder path"),
        epochs=_flag(conf, "epochs", int, ScarSettings.epochs, lambda v: v >= 1, "an integer >= 1"),
        lr=_flag(conf, "lr", float, ScarSettings.lr, lambda v: v > 0, "a number > 0"),
        val_split=_flag(conf, "val_split", float, ScarSettings.val_split, lambda v: 0 < v < 1, "a number in (0, 1)"),
        mc_samples=_flag(conf, "mc_samples", int, ScarSettings.mc_samples, lambda v: v >= 2, "an integer >= 2"),
    )


class ScarConfig(TaskConfig):
    """Wires the one ``scar`` model into MONAI Label's infer, train, strategy and scoring slots."""

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.settings = parse_settings(conf, kwargs.get("app_dir", os.path.dirname(model_dir)))
        os.makedirs(self.settings.model_dir, exist_ok=True)
        self.labels = dict(LABELS)
        self.path = os.path.join(self.settings.model_dir, f"{MODEL_NAME}.pt")
        self.network = build_network()
        self.scorer = MyocardialUncertainty(self.path, samples=self.settings.mc_samples)

    def infer(self) -> dict[str, ScarInfer]:
        return {self.name: ScarInfer(self.path, self.network)}

    def trainer(self) -> ScarTrainer:
        s = self.settings
        return ScarTrainer(self.path, epochs=s.epochs, lr=s.lr, val_split=s.val_split)

    def strategy(self) -> dict:
        return {"scar_uncertainty": ScarUncertaintyStrategy(self.scorer), "random": Random(), "first": First()}

    def scoring_method(self) -> dict:
        return {"scar_uncertainty": ScarUncertaintyScoring(self.scorer)}
