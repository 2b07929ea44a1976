"""Semi-automatic scar tasks: a clinical threshold rule redraws scar and MVO inside an existing LV wall.

The wall (labels 2, 3 and 4) comes from a stored label of the study (``wall_from``: a label tag,
``final`` by default) or from the ``scar`` model's own prediction on the image (``wall_from=scar``).
The rule (:mod:`lib.semiauto`) replaces scar and MVO inside that wall and leaves every voxel outside it
as it was. The answer is a label on the input's exact grid with the ``scar`` task's figures, plus what
the rule did (``semi_automatic``).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from ..caveats import assess, inversion_recovery
from ..constants import FOREGROUND_LABELS, IMAGE, LABELS, MODEL_NAME
from ..dicom_seg import label_colors
from ..errors import InputError
from ..label_io import check_label, header_facts, read_geometry, read_voxels
from ..metrics import scar_quantification
from ..names import check_name
from ..semiauto import METHODS, REMOTE_SECTOR_DEG, SemiAutoError, SemiAutoResult, nsd_scar, remote_region
from .scar import RESULT_EXTENSIONS, ScarInfer, check_result_extension, wants_compression, write_label_file

logger = logging.getLogger(__name__)

# ``wall_from`` value that takes the wall from the scar model's prediction instead of a stored label.
WALL_FROM_MODEL = MODEL_NAME
DEFAULT_WALL_TAG = DefaultLabelTag.FINAL.value
# The rule's own default, read from it so that /info/ and the rule cannot disagree.
N_SD_DEFAULT = float(inspect.signature(nsd_scar).parameters["n_sd"].default)
# MVO is redrawn by the rule's dark-core convention, which has no validation against reference MVO; the
# figures withhold it as for an unvalidated model, and the answer says why.
MVO_NOTE = (
    "MVO inside the wall is redrawn by the rule (dark cores enclosed by scar and blood pool); that convention "
    "has no MVO validation, so MVO figures are withheld (warning mvo_not_validated)"
)
RULES: dict[str, str] = {
    "nsd": f"n-SD rule: wall brighter than the remote mean plus n_sd remote SDs (n_sd, default {N_SD_DEFAULT:g})",
    "fwhm": "FWHM rule: wall at least half as bright as the brightest enhancement",
    "ewa": "EWA-family rule: EM two-class fit with partial-volume weights, minimum scar area, endocardial contact",
}


def _number(request: dict[str, Any], key: str, default: float | None) -> float | None:
    """``request[key]`` as a finite float (numbers or numeric strings); ``default`` when absent or null."""
    value = request.get(key)
    if value is None:
        return default
    number = None
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise InputError(f"{key} must be a number, got {value!r}")
    return number


class SemiAutoScarInfer(InferTask):
    """One rule of :mod:`lib.semiauto` as a MONAI Label infer task; see the module docstring.

    Request parameters (the ``params`` of ``POST /infer/scar_<rule>``): ``wall_from`` (a label tag of
    the study, default ``final``, or ``scar``), ``remote_start_deg`` and ``remote_width_deg`` (the remote
    sector; default: each slice's darkest sector), ``n_sd`` (``nsd`` only) and ``result_extension``.

    Args:
        rule: a key of :data:`RULES` (``nsd``, ``fwhm`` or ``ewa``).
        scar_task: the ``scar`` model's task, run in-process for ``wall_from=scar``.
        datastore: returns the app's datastore, where a ``wall_from`` tag is looked up.

    Raises:
        ValueError: an unknown ``rule``.
    """

    def __init__(self, rule: str, *, scar_task: ScarInfer, datastore: Callable[[], Datastore]):
        if rule not in RULES:
            raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
        config: dict[str, Any] = {"wall_from": DEFAULT_WALL_TAG, "result_extension": RESULT_EXTENSIONS[0]}
        if rule == "nsd":
            config["n_sd"] = N_SD_DEFAULT
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=dict(FOREGROUND_LABELS),
            dimension=3,
            description=f"Semi-automatic scar inside an existing LV wall; {RULES[rule]}. The wall comes from "
            f"wall_from: a label tag of the study (default '{DEFAULT_WALL_TAG}') or '{WALL_FROM_MODEL}' "
            "(the scar model's prediction)",
            config=config,
        )
        self.rule = rule
        self._scar_task = scar_task
        self._datastore = datastore

    def is_valid(self) -> bool:
        return True

    def require_model(self) -> None:
        """Nothing to require here: the rule needs no network. ``wall_from=scar`` runs the scar task, which
        refuses (HTTP 503) when there is no usable checkpoint."""

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["labels"] = dict(FOREGROUND_LABELS)  # the same names and values as the scar task (see ScarInfer.info)
        info["label_values"] = dict(LABELS)
        info["label_colors"] = label_colors()
        info["ready"] = True
        return info

    def options(self, request: dict[str, Any]) -> dict[str, Any]:
        """The rule's options from a request (task config defaults already merged in).

        Ranges (``n_sd``, sector width) are the rule's own and are checked by :mod:`lib.semiauto`.

        Raises:
            InputError: a parameter that is not a number, an unsafe ``wall_from`` tag, ``n_sd`` given to
                another rule, or an unknown ``result_extension`` (HTTP 422).
        """
        wall_from = request.get("wall_from") or DEFAULT_WALL_TAG
        if wall_from != WALL_FROM_MODEL:
            check_name("wall_from label tag", wall_from)
        if self.rule != "nsd" and request.get("n_sd") is not None:
            raise InputError(f"n_sd applies to scar_nsd only, not to the {self.rule} rule")
        options = {
            "wall_from": wall_from,
            "remote_start_deg": _number(request, "remote_start_deg", None),
            "remote_width_deg": _number(request, "remote_width_deg", REMOTE_SECTOR_DEG),
            "result_extension": check_result_extension(request.get("result_extension") or RESULT_EXTENSIONS[0]),
            "result_compress": wants_compression(request.get("result_compress", True)),
        }
        if self.rule == "nsd":
            options["n_sd"] = _number(request, "n_sd", N_SD_DEFAULT)
        return options

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Redraw scar inside the wall of ``request["wall_from"]``; returns (label file, result JSON).

        ``request["image"]`` is the study's path (resolved by the app) and ``request["image_id"]`` its
        datastore id, None for an upload.

        Raises:
            InputError: bad parameters, no such label, a label off the image's grid or without a wall,
                a tag asked for an uploaded image, or a study the rule cannot label (HTTP 4xx).
            CheckpointError: ``wall_from=scar`` with no usable model (HTTP 503).
        """
        begin = time.time()
        req = {**self.config(), **request}
        options = self.options(req)
        image_path = req.get(IMAGE)
        if not isinstance(image_path, str):
            raise InputError("give the study as a datastore id or an uploaded file")
        geometry = read_geometry(image_path)
        label, source, heart_found = self._wall(req, image_path, options["wall_from"])
        drawn = self._draw(read_voxels(image_path), label, geometry.spacing, options)
        logger.info("%s rule on the wall of %s: %s", self.rule, source, drawn.method.get("rule"))
        result = {
            **assess(
                scar_quantification(drawn.label, geometry.spacing),
                heart_found=heart_found,
                inversion_recovery=inversion_recovery(image_path),
                mvo_validation=None,
                mvo_source=f"{self.rule} semi-automatic rule",
                spacing_recorded=header_facts(image_path).spacing_recorded,
            ),
            "semi_automatic": {"method": drawn.method, "wall_source": source, "mvo": MVO_NOTE},
            "label_names": dict(LABELS),
        }
        out_path = write_label_file(
            drawn.label, image_path, options["result_extension"], compress=options["result_compress"]
        )
        result["latencies"] = {"total": round(time.time() - begin, 2)}
        return out_path, result

    def _wall(self, req: dict[str, Any], image_path: str, wall_from: str) -> tuple[np.ndarray, dict, bool]:
        """The (x, y, z) label holding the wall, where it came from, and whether a heart was found."""
        if wall_from == WALL_FROM_MODEL:
            return self._model_label(req, image_path)
        image_id = req.get("image_id")
        if not image_id:
            raise InputError(
                f"wall_from={wall_from!r} is a label tag, which needs a datastore study (?image=<id>); this image "
                f"was uploaded. Use wall_from={WALL_FROM_MODEL!r} to take the wall from the scar model's prediction"
            )
        path = self._tag_label_path(image_id, wall_from)
        try:
            label = check_label(path, image_path)
        except InputError as e:
            raise InputError(f"the {wall_from!r} label of {image_id!r} cannot give the wall: {e}", e.status_code) from e
        return label, {"tag": wall_from}, True

    def _tag_label_path(self, image_id: str, tag: str) -> str:
        """Path of study ``image_id``'s label ``tag``; :class:`InputError` (404) when there is none."""
        datastore = self._datastore()
        path = datastore.get_label_uri(image_id, tag)
        if path:
            return path
        if not any(tag in datastore.get_labels_by_image_id(i) for i in datastore.list_images()):
            raise InputError(f"wall_from: no study has a label tagged {tag!r}", 404)
        tags = sorted(datastore.get_labels_by_image_id(image_id))
        raise InputError(f"wall_from: study {image_id!r} has no {tag!r} label; its labels: {tags or 'none'}", 404)

    def _model_label(self, req: dict[str, Any], image_path: str) -> tuple[np.ndarray, dict, bool]:
        """The scar model's prediction on the image, run in-process; its temporary label file is removed."""
        scar_request = {IMAGE: image_path, "result_extension": RESULT_EXTENSIONS[0]}
        if req.get("device"):
            scar_request["device"] = req["device"]
        path, result = self._scar_task(scar_request)
        try:
            label = check_label(path, image_path)
        finally:
            os.remove(path)
        source = {"model": MODEL_NAME, "version": result["model"]["version"]}
        return label, source, bool(result["localisation"]["heart_found"])

    def _draw(
        self, image: np.ndarray, label: np.ndarray, spacing_mm: tuple[float, ...], options: dict[str, Any]
    ) -> SemiAutoResult:
        """The rule on (x, y, z) arrays, its refusals as :class:`InputError` (422)."""
        try:
            remote = remote_region(
                image, label, start_deg=options["remote_start_deg"], width_deg=options["remote_width_deg"]
            )
            # The real in-plane spacing sets the rules' minimum areas (scar pieces, MVO cores) in mm^2.
            kwargs: dict[str, Any] = {"remote": remote, "spacing_mm": spacing_mm}
            if self.rule == "nsd":
                kwargs["n_sd"] = options["n_sd"]
            return METHODS[self.rule](image, label, **kwargs)
        except SemiAutoError as e:
            raise InputError(f"{self.rule} rule: {e}") from e
