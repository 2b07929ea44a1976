"""MONAI Label app for myocardial scar on LGE cardiac MRI. Connects tasks; no ML code here."""

from __future__ import annotations

import logging
import os

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp

from lib.configs.scar import ScarConfig
from lib.constants import LABELS, MODEL_NAME
from lib.datastore import ScarDatastore
from lib.label_io import InputError

logger = logging.getLogger(__name__)


class ScarLGEApp(MONAILabelApp):
    """LV myocardium, scar and MVO segmentation with correction, fine-tuning and active learning."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.config = ScarConfig()
        self.config.init(MODEL_NAME, os.path.join(app_dir, "model"), conf or {}, None, app_dir=app_dir)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf or {},
            name="scar_lge",
            description="Myocardial scar on late gadolinium enhancement MRI",
            version="0.1.0",
            labels=list(LABELS),
        )

    def init_datastore(self):
        if not os.path.isdir(self.studies):
            raise ValueError(f"studies folder not found: {self.studies} (remote datastores are not wired yet)")
        return ScarDatastore(self.studies, auto_reload=True)

    def init_infers(self):
        return self.config.infer()

    def init_trainers(self):
        return {MODEL_NAME: self.config.trainer()}

    def init_strategies(self):
        return self.config.strategy()

    def init_scoring_methods(self):
        return self.config.scoring_method()

    # MONAI Label answers user errors below with a bare 500; these overrides answer 4xx with a reason.

    def infer(self, request, datastore=None):
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model '{model}'; available: {sorted(self._infers)}")
        image = request.get("image")
        if isinstance(image, str) and not os.path.exists(image) and not self.datastore().get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"unknown image id '{image}'")
        try:
            return super().infer(request, datastore)
        except InputError as e:
            raise HTTPException(status_code=e.status_code, detail=f"cannot segment this image: {e}") from e

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise HTTPException(
                status_code=404, detail=f"unknown strategy '{strategy}'; available: {sorted(self._strategies)}"
            )
        return super().next_sample(request)

    def bundle_path(self, model):
        # POST /train/{model} starts a background process without asking the app whether the model
        # exists; this is the one hook it calls first, so an unknown model is refused here.
        if model and model not in self._trainers and model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model '{model}'; available: {sorted(self._trainers)}")
        return super().bundle_path(model)
