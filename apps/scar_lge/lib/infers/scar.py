"""Inference task: localise the heart, segment the LV and scar, measure, write on the input grid."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer
from monai.transforms import AsDiscreted, Compose, Invertd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from ..constants import IMAGE, LABELS, PRED
from ..label_io import read_geometry, write_label_like
from ..metrics import scar_quantification
from ..model import CHECKPOINT_KEY, SPEC, ScarNet
from ..transforms.anatomy import AnatomicalCleanupd
from ..transforms.pipelines import preprocess

logger = logging.getLogger(__name__)


class ScarInfer(BasicInferTask):
    """The ``scar`` model: EMIDEC classes plus the scar figures a reader acts on."""

    def __init__(
        self,
        path: str,
        network: ScarNet,
        *,
        description: str = "LV myocardium, scar and MVO on LGE MRI",
        config: dict[str, Any] | None = None,
    ):
        super().__init__(
            path=path,
            network=network,
            type=InferType.SEGMENTATION,
            labels=dict(LABELS),
            dimension=3,
            description=description,
            model_state_dict=CHECKPOINT_KEY,
            config={"result_extension": ".nii.gz", **(config or {})},
        )
        # Built once: Invertd must see the very transform objects that preprocessed the image.
        self._preprocess = preprocess([IMAGE])

    def info(self) -> dict[str, Any]:
        info = super().info()
        # The OHIF panel needs a list; its order is the label value (background 0 ... mvo 4).
        info["labels"] = list(LABELS)
        info["label_values"] = dict(LABELS)
        info["spacing_mm"] = SPEC.spacing_mm
        return info

    def __call__(self, request, callbacks=None):
        # Refuse a 2D, 4D, colour or unreadable image with a reason before the pipeline trips on it.
        if isinstance(request.get("image"), str):
            read_geometry(request["image"])
        return super().__call__(request, callbacks)

    def pre_transforms(self, data=None):
        return self._preprocess

    def inferer(self, data=None):
        return SimpleInferer()

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda"):
        image = data[IMAGE]
        data = super().run_inferer(data, convert_to_batch=convert_to_batch, device=device)
        # Carry the image's transform trace onto the probabilities so Invertd can undo the resampling.
        data[PRED] = MetaTensor(
            data[PRED].float().cpu(), meta=image.meta, applied_operations=list(image.applied_operations)
        )
        # Asked again rather than kept on the network, so concurrent requests cannot mix answers; the
        # localiser is small and deterministic, so this is the centre the forward pass used.
        center, found = self._get_network(device, data).locate(image.as_tensor().to(device))
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
        ext = extension or data.get("result_extension", ".nii.gz")
        out_path = tempfile.NamedTemporaryFile(suffix=ext, delete=False).name
        write_label_like(label, image_path, out_path)
        checkpoint = self.get_path()
        result = {
            **scar_quantification(label, geometry.spacing),
            "localisation": data.get("localisation", {}),
            "model": {
                "checkpoint": os.path.basename(checkpoint) if checkpoint else None,
                "checkpoint_mtime": os.path.getmtime(checkpoint) if checkpoint else None,
            },
        }
        return out_path, result
