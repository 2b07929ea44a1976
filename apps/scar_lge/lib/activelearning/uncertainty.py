"""Active learning: which unlabelled study is the model least sure about, inside the myocardium."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
from monai.transforms import Compose
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from scipy import ndimage

from ..constants import IMAGE, LV_WALL, NUM_CLASSES
from ..label_io import InputError
from ..model import build_network, default_device, enable_mc_dropout, load_checkpoint
from ..transforms.pipelines import preprocess

logger = logging.getLogger(__name__)

INFO_KEY = "scar_uncertainty"


def mutual_information(samples: torch.Tensor) -> torch.Tensor:
    r"""Per-voxel disagreement between Monte-Carlo dropout samples (BALD, Houlsby et al. 2011).

    .. math:: I = H\Big(\frac{1}{T}\sum_t p_t\Big) - \frac{1}{T}\sum_t H(p_t), \quad H(p) = -\sum_c p_c \log p_c

    Zero when every sample gives the same distribution, up to log C when they disagree completely.
    Unlike plain entropy, it ignores voxels where the model is consistently torn (a true boundary)
    and counts those where its answer depends on which weights were dropped.

    Shape: samples (T, C, *spatial) probabilities -> (*spatial).
    """
    entropy = lambda p: -(p * p.clamp_min(1e-8).log()).sum(dim=1)  # noqa: E731
    return entropy(samples.mean(dim=0, keepdim=True))[0] - entropy(samples).mean(dim=0)


class MyocardialUncertainty:
    """Mean Monte-Carlo-dropout disagreement over the (predicted) LV wall of a study.

    Scored only in and around the wall, where scar is decided: disagreement about lungs or chest wall
    says nothing about which study an annotator should correct. Scores are cached in the datastore's
    image info with the checkpoint's timestamp and recomputed when a new model is published.
    """

    def __init__(self, model_path: str, samples: int = 8, device: str | None = None):
        if samples < 2:
            raise ValueError(f"Monte-Carlo dropout needs at least 2 samples, got {samples}.")
        self.model_path = model_path
        self.samples = samples
        self.device = device or default_device()
        self._network: tuple[Any, float] | None = None
        self._preprocess = Compose(preprocess([IMAGE]))

    def _model_stamp(self) -> float:
        return os.path.getmtime(self.model_path) if os.path.exists(self.model_path) else 0.0

    def _load(self):
        stamp = self._model_stamp()
        if self._network is None or self._network[1] != stamp:
            network = build_network()
            load_checkpoint(network, self.model_path)
            self._network = (network.to(self.device), stamp)
        return self._network[0]

    def score(self, image_path: str) -> float:
        """Mean mutual information (nats) over the predicted LV wall, dilated 2 voxels to take its borders in."""
        network = self._load()
        image = self._preprocess({IMAGE: image_path})[IMAGE].as_tensor()[None].to(self.device)
        enable_mc_dropout(network)
        with torch.no_grad():
            probs = torch.cat([network(image) for _ in range(self.samples)]).float().cpu()  # (T, C, H, W, D)
        network.eval()
        wall_prob = probs[:, list(LV_WALL)].sum(dim=1)  # (T, H, W, D)
        region = (wall_prob > 0.5).any(dim=0).numpy()
        if not region.any():
            # No sample finds a myocardium: the study needs a human most of all.
            return math.log(NUM_CLASSES)
        region = ndimage.binary_dilation(
            region, iterations=2, structure=ndimage.generate_binary_structure(3, 1)[..., 1:2]
        )
        return float(mutual_information(probs)[torch.from_numpy(region)].mean())

    def cached_score(self, image_id: str, datastore: Datastore) -> float:
        """Score of one study, reusing the cached value while the published model is unchanged."""
        stamp = self._model_stamp()
        cached = datastore.get_image_info(image_id).get(INFO_KEY, {})
        if cached.get("model_mtime") == stamp and "score" in cached:
            return float(cached["score"])
        value = self.score(datastore.get_image_uri(image_id))
        datastore.update_image_info(image_id, {INFO_KEY: {"score": value, "model_mtime": stamp}})
        logger.info("uncertainty of %s: %.5f", image_id, value)
        return value


class ScarUncertaintyStrategy(Strategy):
    """Next study to annotate: the unlabelled one with the highest myocardial MC-dropout disagreement."""

    def __init__(self, scorer: MyocardialUncertainty):
        super().__init__("Unlabelled study the model is least sure about inside the myocardium (MC dropout)")
        self.scorer = scorer

    def __call__(self, request: dict, datastore: Datastore) -> dict | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        scores = {}
        for image_id in images:
            try:
                scores[image_id] = self.scorer.cached_score(image_id, datastore)
            except InputError as e:  # one unreadable study must not block the queue
                logger.warning("cannot score %s: %s", image_id, e)
        if not scores:
            return None
        best = max(sorted(scores), key=scores.__getitem__)
        return {"id": best, "score": scores[best], "scores": scores}


class ScarUncertaintyScoring(ScoringMethod):
    """Compute (or refresh) the cached uncertainty of every unlabelled study."""

    def __init__(self, scorer: MyocardialUncertainty):
        super().__init__("Monte-Carlo dropout disagreement inside the myocardium, per unlabelled study")
        self.scorer = scorer

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        return {i: self.scorer.cached_score(i, datastore) for i in datastore.get_unlabeled_images()}
