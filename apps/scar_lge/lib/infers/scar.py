"""Inference task: localise the heart, segment the LV and scar, measure, write on the input grid."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, Compose, Invertd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from ..calibration import calibrated_figures, label_passes, load_shipped
from ..caveats import assess, inversion_recovery
from ..constants import FOREGROUND_LABELS, IMAGE, LABELS, PRED
from ..dicom_seg import label_colors
from ..errors import InputError
from ..label_io import header_facts, read_geometry, read_voxels, write_label_like
from ..metrics import scar_quantification
from ..model import CHECKPOINT_KEY, SPEC, ScarNet
from ..model_store import DEFAULT_VERSION, CurrentNetwork, ModelStore
from ..report.build import build_report
from ..transforms.anatomy import AnatomicalCleanupd
from ..transforms.pipelines import preprocess

logger = logging.getLogger(__name__)

# Label file types a client may ask for (``result_extension``); the first is the default.
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")


def check_result_extension(extension: str) -> str:
    """``extension`` when it is one of :data:`RESULT_EXTENSIONS` (the suffix becomes part of a file name).

    Raises:
        InputError: any other extension (HTTP 422).
    """
    if extension not in RESULT_EXTENSIONS:
        raise InputError(f"result_extension {extension!r} is not allowed; use one of {list(RESULT_EXTENSIONS)}")
    return extension


def wants_compression(value: Any) -> bool:
    """A request's ``result_compress``: OHIF sends JSON false, a form may send the text 'false'."""
    return str(value).strip().lower() not in ("false", "0", "no", "off")


def write_label_file(label_xyz: np.ndarray, image_path: str, extension: str, *, compress: bool = True) -> str:
    """Write an (x, y, z) label on exactly ``image_path``'s grid to a new temporary file; returns its path.

    The server sends that file and deletes it after answering.

    Raises:
        InputError: ``extension`` is not one of :data:`RESULT_EXTENSIONS`.
    """
    suffix = check_result_extension(extension)
    out_path = tempfile.NamedTemporaryFile(suffix=suffix, delete=False).name
    try:
        return write_label_like(label_xyz, image_path, out_path, compress=compress)
    except BaseException:
        os.remove(out_path)
        raise


class ScarInfer(BasicInferTask):
    """The ``scar`` model: EMIDEC classes plus the scar figures a reader acts on."""

    def __init__(
        self,
        store: ModelStore,
        network: ScarNet,
        *,
        description: str = "LV myocardium, scar and MVO on LGE MRI",
        config: dict[str, Any] | None = None,
    ):
        super().__init__(
            path=store.current().path,
            network=network,
            type=InferType.SEGMENTATION,
            labels=dict(FOREGROUND_LABELS),
            dimension=3,
            description=description,
            model_state_dict=CHECKPOINT_KEY,
            config={"result_extension": RESULT_EXTENSIONS[0], **(config or {})},
        )
        self.store = store
        # Built once: Invertd must see the very transform objects that preprocessed the image.
        self._preprocess = preprocess([IMAGE])
        self._current: dict[str, CurrentNetwork] = {}  # per device; see _get_network
        self._lock = threading.Lock()
        # The rules fitted on the default model's cross-validation (lib/calibration.py), read once.
        self.calibration, self.calibration_problem = load_shipped()

    def get_path(self, validate: bool = True) -> str | None:
        # The current version's checkpoint, asked on every call, so a publish or rollback is used by the
        # next request without a restart.
        path = self.store.current().path
        return path if not validate or os.path.exists(path) else None

    def is_valid(self) -> bool:
        # Always listed in /info/ (with "ready" and the reason when no model is usable), so a viewer
        # shows why it cannot segment instead of silently dropping the model.
        return True

    def require_model(self) -> None:
        """Raise :class:`CheckpointError` when there is no usable model: no answer from random weights."""
        problem = self.store.problem(self.store.current())
        if problem is not None:
            raise problem

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["labels"] = dict(FOREGROUND_LABELS)  # name -> value, read by value by OHIF and Slicer
        info["label_values"] = dict(LABELS)
        info["label_colors"] = label_colors()
        info["spacing_mm"] = SPEC.spacing_mm
        current = self.store.current()
        problem = self.store.problem(current)
        info["model_version"] = current.version
        info["ready"] = problem is None
        if problem is not None:
            info["not_ready_reason"] = str(problem)
        return info

    def __call__(self, request, callbacks=None):
        self.require_model()
        # Refuse a 2D, 4D, colour or unreadable image with a reason before the pipeline trips on it.
        if isinstance(request.get("image"), str):
            read_geometry(request["image"])
        return super().__call__(request, callbacks)

    def _get_network(self, device, data):
        """The current version's network on ``device`` (:class:`lib.model_store.CurrentNetwork`).

        Replaces BasicInferTask's loader, which serves the bare network (random weights) when the file
        is missing and loads weights without checking what they were trained for. The version used is
        written into ``data`` so the answer names the checkpoint that made it, even if a newer one is
        published while this request runs.
        """
        with self._lock:
            current = self._current.setdefault(str(device), CurrentNetwork(self.store, device))
        version, network, provenance = current.get()
        if data is not None:
            data["model_version"] = version.version
            data["model_provenance"] = provenance
            data["model_network"] = network
        return network

    def pre_transforms(self, data=None):
        return self._preprocess

    def inferer(self, data=None):
        return _FlipPasses()

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda"):
        image = data[IMAGE]
        data = super().run_inferer(data, convert_to_batch=convert_to_batch, device=device)
        passes = torch.as_tensor(data[PRED]).float().cpu()  # (P, K, H, W, D): one per flip pass, see _FlipPasses
        if self.calibration is not None:  # the spread is taken in the writer, once the answer's contrast is known
            data["flip_pass_labels"] = label_passes(passes)
            data["model_spacing_mm"] = [float(v) for v in image.pixdim[:3]]
        # Carry the image's transform trace onto the probabilities so Invertd can undo the resampling.
        data[PRED] = MetaTensor(passes.mean(dim=0), meta=image.meta, applied_operations=list(image.applied_operations))
        # Asked of the very network that segmented (kept in data, not on the shared task, so concurrent
        # requests cannot mix answers); the localiser is deterministic, so this is the centre it used.
        center, found = data["model_network"].locate(image.as_tensor().to(device))
        data["localisation"] = {"center_vox": list(center), "heart_found": found}
        return data

    def post_transforms(self, data=None):
        return [
            Invertd(keys=PRED, transform=Compose(self._preprocess), orig_keys=IMAGE, nearest_interp=False),
            AsDiscreted(keys=PRED, argmax=True),
            AnatomicalCleanupd(keys=PRED),
        ]

    def writer(self, data: dict[str, Any], extension=None, dtype=None):
        image_path = data["image_path"]
        label = np.asarray(torch.as_tensor(data[PRED])[0].cpu().numpy(), np.uint8)
        geometry = read_geometry(image_path)
        if label.shape != geometry.size:
            raise RuntimeError(f"prediction {label.shape} is not on the input grid {geometry.size}")
        intensities = read_voxels(image_path)
        reading, flip_spread_pp = None, None
        if self.calibration is not None:  # specks and a "no scar" study's scar, as cross-validation chose
            reading = self.calibration.finalise(label, geometry.spacing, intensities)
            label = reading.label
            # SD of scar % LV over the flip passes, exactly as the calibration was fitted (lib/calibration.py).
            flip_spread_pp = self.calibration.spread_pp(
                data["flip_pass_labels"], data["model_spacing_mm"], reading.contrast_sd
            )
        out_path = write_label_file(
            label,
            image_path,
            extension or data.get("result_extension", RESULT_EXTENSIONS[0]),
            compress=wants_compression(data.get("result_compress", True)),
        )
        provenance = data.get("model_provenance") or {}
        figures = scar_quantification(label, geometry.spacing)
        localisation = data.get("localisation", {})
        facts = header_facts(image_path)
        assessed = assess(
            figures,
            heart_found=bool(localisation.get("heart_found", False)),
            inversion_recovery=inversion_recovery(image_path),
            mvo_validation=provenance.get("mvo_validation"),
            calibrated_version=data.get("model_version") == DEFAULT_VERSION if reading is not None else None,
            spacing_recorded=facts.spacing_recorded,
        )
        # The clinical report of this very label (grey zone, transmurality, AHA segments), under the same rules.
        report = build_report(label, geometry, facts, assessed, image=intensities)
        result = {
            **assessed,
            **calibrated_figures(
                self.calibration,
                reading,
                assessed,
                flip_spread_pp,
                unavailable=self.calibration_problem,
            ),
            "report": report,
            "localisation": localisation,
            "model": {"version": data.get("model_version"), "created": provenance.get("created")},
        }
        return out_path, result


class _FlipPasses:
    """Inferer that keeps each flip pass (batch first, so BasicInferTask's un-batching keeps them all)."""

    def __call__(self, inputs: torch.Tensor, network: ScarNet) -> torch.Tensor:
        return network(inputs, keep_passes=True).transpose(0, 1)  # (B, P, K, H, W, D)
