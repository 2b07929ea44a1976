"""The options of a training request, checked when the request arrives and again where it runs.

``POST /train/scar`` starts a background process; an option that is wrong must be refused before that
(HTTP 422 naming the option, the value and what is allowed), not found out minutes later. The server's
request guard and the train task both call :func:`parse_train_options`, so the two cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .label_io import InputError

MAX_EPOCHS = 500  # a fine-tuning run past this is a mistake (1e9 ran until stopped); README states it
PUBLISH_CHOICES = ("auto", "force", "never")
DEVICE_CHOICES = ("cpu", "cuda")

# Keys MONAI Label itself puts into every train request (endpoint, AsyncTask, the app's info config);
# they are not user options and are passed through unchecked.
FRAMEWORK_KEYS = frozenset({"model", "gpus", "local_rank", "bundle_path", "multi_gpu", "dataset", "name"})


@dataclass(frozen=True)
class TrainOptions:
    """One training run's options, all checked."""

    max_epochs: int
    lr: float
    val_split: float
    batch_size: int = 16
    publish: str = "auto"
    device: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _number(name: str, value: Any, kind: type, low: float, high: float, allowed: str):
    # bool is an int in Python; "true" epochs is a typo, not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"train option {name}={value!r} is not a number; allowed: {allowed}")
    if not math.isfinite(value) or not low <= value <= high:
        raise InputError(f"train option {name}={value!r} is out of range; allowed: {allowed}")
    if kind is int and value != int(value):
        raise InputError(f"train option {name}={value!r} is not a whole number; allowed: {allowed}")
    return kind(value)


def parse_train_options(request: dict[str, Any], defaults: dict[str, Any]) -> TrainOptions:
    """Check every option of a train request; unknown keys are refused with the list of known ones.

    Args:
        request: the request body (and MONAI Label's own keys, which pass through).
        defaults: the server's defaults for ``max_epochs``, ``lr`` and ``val_split`` (its conf flags).

    Raises:
        InputError: (HTTP 422) naming the option, the value given and what is allowed.
    """
    known = {f for f in TrainOptions.__dataclass_fields__}
    unknown = sorted(k for k in request if k not in known and k not in FRAMEWORK_KEYS)
    if unknown:
        raise InputError(f"unknown train option(s) {unknown}; known options: {sorted(known)}")
    merged = {**defaults, **{k: v for k, v in request.items() if k in known}}
    publish = merged.get("publish", "auto")
    if publish not in PUBLISH_CHOICES:
        raise InputError(f"train option publish={publish!r} is not valid; allowed: {list(PUBLISH_CHOICES)}")
    device = merged.get("device")
    if device is not None and device not in DEVICE_CHOICES:
        raise InputError(f"train option device={device!r} is not valid; allowed: {list(DEVICE_CHOICES)}")
    return TrainOptions(
        max_epochs=_number("max_epochs", merged["max_epochs"], int, 1, MAX_EPOCHS, f"a whole number 1-{MAX_EPOCHS}"),
        lr=_number("lr", merged["lr"], float, 1e-8, 1.0, "a number in [1e-8, 1]"),
        val_split=_number("val_split", merged["val_split"], float, 0.05, 0.5, "a number in [0.05, 0.5]"),
        batch_size=_number("batch_size", merged.get("batch_size", 16), int, 1, 256, "a whole number 1-256"),
        publish=publish,
        device=device,
    )
