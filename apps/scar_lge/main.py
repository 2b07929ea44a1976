"""MONAI Label app for myocardial scar on LGE cardiac MRI. Connects tasks; no ML code here."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.configs.scar import ScarConfig, default_dicomweb_mirror
from lib.constants import APP_VERSION, FOREGROUND_LABELS, MODEL_NAME
from lib.datastore import ScarDatastore
from lib.dicom_zip import is_zip_upload, unpack_dicom_zip
from lib.dicomweb_datastore import ScarDICOMwebDatastore
from lib.errors import InputError, as_http
from lib.lifecycle import ParentWatch, in_background_run, show_progress_plainly
from lib.model import CheckpointError
from lib.names import discard_upload, is_name, is_upload
from lib.publish_gate import is_validation_study
from lib.sessions import ScarSessions

logger = logging.getLogger(__name__)


def _no_model(e: CheckpointError) -> HTTPException:
    return HTTPException(status_code=503, detail=f"no usable model: {e.reason} (looked at {e.path})")


class ScarLGEApp(MONAILabelApp):
    """LV myocardium, scar and MVO segmentation with correction, fine-tuning and active learning."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        if in_background_run():
            # A train or scoring process: ends with its server (also a killed one), and GET /train/
            # shows its output, so progress lines only, not library chatter.
            self._parent_watch = ParentWatch()
            show_progress_plainly()
        self.config = ScarConfig()
        self.config.init(MODEL_NAME, os.path.join(app_dir, "model"), conf or {}, None, app_dir=app_dir)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf or {},
            name="scar_lge",
            description="Myocardial scar on late gadolinium enhancement MRI",
            version=APP_VERSION,
            labels=list(FOREGROUND_LABELS),  # OHIF's panel makes one segment per name: no 'background'
        )

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            # A DICOMweb store (Orthanc): MR series are the studies, DICOM SEG the corrected labels.
            mirror = self.conf.get("dicomweb_mirror") or default_dicomweb_mirror(self.studies.rstrip("/"))
            return ScarDICOMwebDatastore(self.studies, mirror=mirror)
        if not os.path.isdir(self.studies):
            raise ValueError(f"studies folder not found: {self.studies} (give a folder or a DICOMweb URL)")
        return ScarDatastore(self.studies, auto_reload=True)

    def init_infers(self):
        return self.config.infer(datastore=self.datastore)

    def init_trainers(self):
        return {MODEL_NAME: self.config.trainer()}

    def init_strategies(self):
        return self.config.strategy()

    def init_scoring_methods(self):
        return self.config.scoring_method()

    def on_init_complete(self):
        super().on_init_complete()
        # Server process only (train and scoring subprocesses never call this): notice a publish or new
        # studies and start the background uncertainty scoring, so no active-learning request computes it.
        self.config.active_learning.background.start_loop(self.datastore)

    def _load_sessions(self, load=False):
        session = super()._load_sessions(load)
        return ScarSessions(session.store_path, session.expiry) if session is not None else None

    def info(self):
        info = super().info()
        fraction = self.config.settings.val_split
        info["validation"] = {
            "rule": f"a study validates when a hash of its id falls below {fraction}; it is decided per study, "
            "never changes as studies are added, and validation studies are never trained on",
        }
        try:
            labelled = self.datastore().get_labeled_images(DefaultLabelTag.FINAL.value)
            info["validation"]["studies"] = sorted(i for i in labelled if is_validation_study(i, fraction))
            info["datastore"] = {**info.get("datastore", {}), "reachable": True}
        except HTTPException as e:  # a DICOMweb store that is down: /info/ still answers, and says so
            info["validation"]["studies"] = None
            info["datastore"] = {**info.get("datastore", {}), "reachable": False, "reason": e.detail}
        info["model_versions"] = self.config.store.describe()
        return info

    # MONAI Label answers the user errors below with a bare 500, or not at all; these answer 4xx/503.

    def _known_model(self, model, *, to_train: bool = False) -> str:
        known = self._trainers if to_train else {**self._infers, **self._trainers}
        if not is_name(model) or model not in known:
            what = "model to train" if to_train else "model"
            raise HTTPException(status_code=404, detail=f"unknown {what} {model!r}; available: {sorted(known)}")
        return model

    def _image_path(self, image) -> str:
        """The file to segment: a datastore id's study, or a file the server saved an upload to; nothing else."""
        if not isinstance(image, str) or not image:
            raise HTTPException(status_code=422, detail="give an image id (?image=...) or upload a file (file=@...)")
        if is_name(image):
            path = self.datastore().get_image_uri(image)
            if not path:
                raise HTTPException(status_code=404, detail=f"unknown image id '{image}'")
            return path
        sessions = self.sessions()
        if not is_upload(image, sessions.store_path if sessions is not None else None):
            raise HTTPException(
                status_code=422, detail="image must be a datastore id or an uploaded file, not a server path"
            )
        return os.path.realpath(image)

    def infer(self, request, datastore=None):
        self._known_model(request.get("model"))
        image = request.get("image")
        # Saving a prediction as a label is allowed as 'original' only: corrections ('final') come from
        # annotators through PUT /datastore/label, never from a model.
        save = bool(request.get("save_label", False))
        tag = request.get("label_tag") or DefaultLabelTag.ORIGINAL.value
        if save and tag != DefaultLabelTag.ORIGINAL.value:
            raise HTTPException(
                status_code=422, detail=f"a prediction is saved as an 'original' label only, not {tag!r}"
            )
        # A resolved path: MONAI Label then neither looks the id up in its working folder nor saves. The id
        # (None for an upload or session) goes along for tasks that read the study's labels.
        unpacked = None
        try:
            image_id = image if is_name(image) else None
            path = self._image_path(image)
            if image_id is None and is_zip_upload(path):  # a DICOM series uploaded as one ZIP file
                unpacked = tempfile.mkdtemp(prefix="scar_lge-infer-")
                path = unpack_dicom_zip(path, os.path.join(unpacked, "series"))
            request = {**request, "image": path, "image_id": image_id, "save_label": False}
            result = super().infer(request, datastore)
        except CheckpointError as e:
            discard_upload(image)
            raise _no_model(e) from e
        except InputError as e:
            discard_upload(image)
            raise as_http(e, "cannot segment this image") from e
        except BaseException:
            discard_upload(image)
            raise
        finally:
            if unpacked:
                shutil.rmtree(unpacked, ignore_errors=True)
                discard_upload(image)
        if save and is_name(image) and result.get("file"):
            store = datastore or self.datastore()
            result["label"] = store.save_label(image, result["file"], tag, {"model": request["model"]})
        return result

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        if not is_name(strategy) or strategy not in self._strategies:
            raise HTTPException(
                status_code=404, detail=f"unknown strategy {strategy!r}; available: {sorted(self._strategies)}"
            )
        return super().next_sample(request)

    def scoring(self, request, datastore=None):
        method = request.get("method")
        if not is_name(method) or method not in self._scoring_methods:
            raise HTTPException(
                status_code=404, detail=f"unknown scoring method {method!r}; available: {sorted(self._scoring_methods)}"
            )
        return super().scoring(request, datastore)

    def train(self, request):
        self._known_model(request.get("model"), to_train=True)
        return super().train(request)

    def bundle_path(self, model):
        # POST /train/{model} and /scoring/{method} start a background process without asking the app;
        # this is the one hook they call first, so an unknown model is refused here. The app folder
        # (already on the run's PYTHONPATH) is returned so that a caller's own "bundle_path", which
        # MONAI Label would put on that PYTHONPATH, is always overwritten.
        if model:
            self._known_model(model)
        return self.app_dir

    def model_file(self, model, validate=True):
        self._known_model(model)
        if not validate:  # PUT /model/{model} would copy an upload over the current checkpoint
            raise HTTPException(
                status_code=405,
                detail="models are published by training (POST /train/scar) or rolled back with "
                "apps/scar_lge/scripts/models.py; uploading over a checkpoint is not allowed",
            )
        if model not in self._trainers:  # a semi-automatic task: a rule, no weights of its own
            return None
        current = self.config.store.current()
        return self.config.store.served_copy(current) if os.path.exists(current.path) else None

    def check_train_request(self, model: str, params: dict) -> None:
        """Refuse a train request with a bad option when it arrives (HTTP 422), before a process starts."""
        self._known_model(model, to_train=True)
        try:
            self._trainers[model].options(params, from_client=True)
        except InputError as e:
            raise as_http(e, "training not started") from e

    def require_model(self, model: str = MODEL_NAME) -> None:
        """HTTP 503 with the reason and the path looked at, when the model has no usable checkpoint."""
        try:
            self._infers[self._known_model(model)].require_model()
        except CheckpointError as e:
            raise _no_model(e) from e
