"""MONAI Label app for myocardial scar on LGE cardiac MRI. Connects tasks; no ML code here."""

from __future__ import annotations

import logging
import os
import re
import tempfile

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.utils.sessions import Sessions

from lib.configs.scar import ScarConfig
from lib.constants import LABELS, MODEL_NAME
from lib.datastore import ScarDatastore
from lib.label_io import InputError
from lib.lifecycle import in_background_run
from lib.model import CheckpointError
from lib.names import check_name, is_name
from lib.publish_gate import is_validation_study
from lib.trainers.scar import show_progress_plainly

logger = logging.getLogger(__name__)

# How the infer endpoint names an uploaded file: tempfile.NamedTemporaryFile(suffix=<the upload's
# suffixes>) in the temp folder. Nothing else tells an upload from a path typed by the caller, so
# this shape (and an upload session's image) are the only server paths infer accepts; every other
# image must be a datastore id.
_UPLOAD_NAME = re.compile(r"tmp[a-z0-9_]{8}(\.[A-Za-z0-9_-]+)*")


def _http(e: InputError, what: str) -> HTTPException:
    return HTTPException(status_code=e.status_code, detail=f"{what}: {e}")


class ScarSessions(Sessions):
    """MONAI Label's upload sessions, with session ids checked before they become folder names.

    Stock ``get_session('..')`` treats the parent folder as a dangling session and deletes it.
    """

    def get_session(self, session_id: str, update_ts: bool = True, fetch_cache: bool = True):
        try:
            check_name("session id", session_id)
        except InputError as e:
            raise _http(e, "refused") from e
        return super().get_session(session_id, update_ts=update_ts, fetch_cache=fetch_cache)

    def remove_session(self, session_id: str):
        if not is_name(session_id):
            raise HTTPException(status_code=422, detail=f"refused: session id {session_id!r} is not a safe name")
        return super().remove_session(session_id)

    def add_session(self, data_file: str, expiry: int = 0, uncompress: bool = False, session_id=None):
        if uncompress:  # an archive's member names could point anywhere
            raise HTTPException(status_code=422, detail="compressed sessions are not accepted; upload the files")
        return super().add_session(data_file, expiry, False, session_id)


class ScarLGEApp(MONAILabelApp):
    """LV myocardium, scar and MVO segmentation with correction, fine-tuning and active learning."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        if in_background_run():  # GET /train/ shows this process's output: progress, not library chatter
            show_progress_plainly()
        self.config = ScarConfig()
        self.config.init(MODEL_NAME, os.path.join(app_dir, "model"), conf or {}, None, app_dir=app_dir)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf or {},
            name="scar_lge",
            description="Myocardial scar on late gadolinium enhancement MRI",
            version="0.2.0",
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
        labelled = self.datastore().get_labeled_images("final")
        info["validation"] = {
            "rule": f"a study validates when a hash of its id falls below {fraction}; it is decided per study, "
            "never changes as studies are added, and validation studies are never trained on",
            "studies": sorted(i for i in labelled if is_validation_study(i, fraction)),
        }
        info["model_versions"] = self.config.store.describe()
        return info

    # MONAI Label answers the user errors below with a bare 500, or not at all; these answer 4xx/503.

    def _known_model(self, model) -> str:
        if not is_name(model) or (model not in self._infers and model not in self._trainers):
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; available: {sorted(self._infers)}")
        return model

    def _image_for_infer(self, image) -> str:
        """A datastore id, or the temp file the infer endpoint saved an upload to; nothing else."""
        if not isinstance(image, str) or not image:
            raise HTTPException(status_code=422, detail="give an image id (?image=...) or upload a file (file=@...)")
        if is_name(image):
            if not self.datastore().get_image_uri(image):
                raise HTTPException(status_code=404, detail=f"unknown image id '{image}'")
            return image
        real = os.path.realpath(image)
        upload = os.path.dirname(real) == os.path.realpath(tempfile.gettempdir()) and _UPLOAD_NAME.fullmatch(
            os.path.basename(real)
        )
        sessions = self.sessions()
        if sessions is not None and not upload:  # an upload session keeps its image in its own store
            store = os.path.realpath(sessions.store_path)
            upload = os.path.commonpath([store, real]) == store and real != store
        if not upload or not os.path.exists(real):
            raise HTTPException(
                status_code=422, detail="image must be a datastore id or an uploaded file, not a server path"
            )
        return real

    def infer(self, request, datastore=None):
        self._known_model(request.get("model"))
        request = {**request, "image": self._image_for_infer(request.get("image"))}
        try:
            return super().infer(request, datastore)
        except CheckpointError as e:
            raise HTTPException(status_code=503, detail=f"no usable model: {e.reason} (looked at {e.path})") from e
        except InputError as e:
            raise _http(e, "cannot segment this image") from e

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
        self._known_model(request.get("model"))
        return super().train(request)

    def bundle_path(self, model):
        # POST /train/{model} and /scoring/{method} start a background process without asking the app;
        # this is the one hook they call first, so an unknown model is refused here.
        if model:
            self._known_model(model)
        return super().bundle_path(model)

    def model_file(self, model, validate=True):
        self._known_model(model)
        if not validate:  # PUT /model/{model} would copy an upload over the current checkpoint
            raise HTTPException(
                status_code=405,
                detail="models are published by training (POST /train/scar) or rolled back with "
                "apps/scar_lge/scripts/models.py; uploading over a checkpoint is not allowed",
            )
        current = self.config.store.current()
        return self.config.store.served_copy(current) if os.path.exists(current.path) else None

    def check_train_request(self, model: str, params: dict) -> None:
        """Refuse a train request with a bad option when it arrives (HTTP 422), before a process starts."""
        self._known_model(model)
        try:
            self._trainers[model].options(params)
        except InputError as e:
            raise _http(e, "training not started") from e

    def require_model(self, model: str = MODEL_NAME) -> None:
        """HTTP 503 with the reason and the path looked at, when the model has no usable checkpoint."""
        try:
            self._infers[self._known_model(model)].require_model()
        except CheckpointError as e:
            raise HTTPException(status_code=503, detail=f"no usable model: {e.reason} (looked at {e.path})") from e
