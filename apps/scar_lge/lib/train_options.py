"""The options of a training request, checked when the request arrives and again where it runs.

``POST /train/scar`` starts a background process; an option that is wrong must be refused before that
(HTTP 422 naming the option, the value and what is allowed), not found out minutes later. The server's
request guard and the train task both call :func:`parse_train_options`, so the two cannot disagree.
The share of validation studies is not a request option: it is the server's ``--conf val_split``, so
a study never moves between training and validation from one run to the next.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InputError

MAX_EPOCHS = 500  # a fine-tuning run past this is a mistake (1e9 ran until stopped); README states it
EPOCHS_RANGE = (1, MAX_EPOCHS)
LR_RANGE = (1e-8, 1.0)
BATCH_SIZE_RANGE = (1, 256)
PUBLISH_CHOICES = ("auto", "force", "never")
DEVICE_CHOICES = ("cpu", "cuda")

# Keys MONAI Label adds to a train request on its way to the run (endpoint, AsyncTask, process runner).
# A client may not send them: bundle_path, for one, is put on the run's PYTHONPATH.
FRAMEWORK_KEYS = frozenset({"model", "gpus", "local_rank", "bundle_path"})
# Keys clients add that are not options: MONAILabelClient adds client_id to every request.
CLIENT_KEYS = frozenset({"client_id"})


@dataclass(frozen=True)
class TrainOptions:
    """One training run's options, all checked."""

    max_epochs: int
    lr: float
    batch_size: int = 16
    publish: str = "auto"
    device: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe_range(kind: type, bounds: tuple[float, float]) -> str:
    """What a range allows, in words: "a whole number 1-500", "a number in [1e-08, 1]"."""
    low, high = (f"{b:g}" for b in bounds)
    return f"a whole number {low}-{high}" if kind is int else f"a number in [{low}, {high}]"


def _number(name: str, value: Any, kind: type, bounds: tuple[float, float]):
    allowed = describe_range(kind, bounds)
    # bool is an int in Python; "true" epochs is a typo, not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"train option {name}={value!r} is not a number; allowed: {allowed}")
    if not math.isfinite(value) or not bounds[0] <= value <= bounds[1]:
        raise InputError(f"train option {name}={value!r} is out of range; allowed: {allowed}")
    if kind is int and value != int(value):
        raise InputError(f"train option {name}={value!r} is not a whole number; allowed: {allowed}")
    return kind(value)


def parse_train_options(
    request: dict[str, Any], defaults: dict[str, Any], *, from_client: bool = False
) -> TrainOptions:
    """Check every option of a train request; unknown keys are refused with the list of known ones.

    Args:
        request: the request body, or (in the run) the request MONAI Label built from it.
        defaults: the server's defaults for ``max_epochs`` and ``lr`` (its conf flags).
        from_client: True for a body as a client sent it, where MONAI Label's own keys are refused too.

    Raises:
        InputError: (HTTP 422) naming the option, the value given and what is allowed.
    """
    known = set(TrainOptions.__dataclass_fields__)
    passing = CLIENT_KEYS if from_client else CLIENT_KEYS | FRAMEWORK_KEYS
    unknown = sorted(k for k in request if k not in known and k not in passing)
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
        max_epochs=_number("max_epochs", merged["max_epochs"], int, EPOCHS_RANGE),
        lr=_number("lr", merged["lr"], float, LR_RANGE),
        batch_size=_number("batch_size", merged.get("batch_size", TrainOptions.batch_size), int, BATCH_SIZE_RANGE),
        publish=publish,
        device=device,
    )
