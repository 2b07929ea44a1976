"""How unsure the model is about a study, inside the myocardium: Monte-Carlo dropout disagreement."""

from __future__ import annotations

import logging
import math

import torch
from monai.transforms import Compose
from scipy import ndimage
from torch import nn

from ..constants import IMAGE, LV_WALL, NUM_CLASSES
from ..engine import cpu_has_bf16_matrix_units
from ..model import default_device, enable_mc_dropout
from ..model_store import CurrentNetwork, ModelStore, ModelVersion
from ..transforms.pipelines import preprocess

logger = logging.getLogger(__name__)

# Dropout passes per study. Against a 32-sample ranking of the 65 EMIDEC exams (benchmarks/mc_samples.py,
# 3 seeds each), 6 samples rank almost as 8 do (Spearman 0.964 vs 0.980) and put as many of its 10 most
# uncertain exams in their own top 10 (8.0 of 10 for both), in four fifths of the time (0.44 vs 0.56 s
# per exam): what brings 100 studies under a minute on one CPU thread.
MC_SAMPLES = 6


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
    says nothing about which study an annotator should correct.

    Args:
        store: the model versions; :meth:`model` loads the current one.
        samples: dropout passes per study.
        device: where to run; CUDA when available by default.

    Raises:
        ValueError: fewer than 2 samples.
    """

    def __init__(self, store: ModelStore, *, samples: int = MC_SAMPLES, device: str | None = None):
        if samples < 2:
            raise ValueError(f"Monte-Carlo dropout needs at least 2 samples, got {samples}.")
        self.store = store
        self.samples = samples
        self.device = device or default_device()
        self._current = CurrentNetwork(store, self.device)
        self._preprocess = Compose(preprocess([IMAGE]))

    def model(self) -> tuple[ModelVersion, nn.Module]:
        """The current model version and its network, reloaded only when the checkpoint changed.

        Raises:
            CheckpointError: the current checkpoint is missing, unreadable or made for other labels,
                grid or architecture; never falls back to random weights.
        """
        version, network, _ = self._current.get()
        return version, network

    def score(self, network: nn.Module, image_path: str) -> float:
        """Mean mutual information (nats) over the predicted LV wall, dilated 2 voxels to take its borders in.

        Args:
            network: from :meth:`model`; its dropout layers are switched on for the passes.
            image_path: a study file or DICOM series folder.
        """
        image = self._preprocess({IMAGE: image_path})[IMAGE].as_tensor().to(self.device)  # (1, H, W, D)
        network.eval()
        # bf16 on GPUs, and on CPUs with AMX tiles, where it scored a study 1.35x faster (0.97 -> 0.72 s, one
        # thread): a score only ranks studies, and bf16 moved scores less than the dropout draws do.
        fast = image.is_cuda or (image.device.type == "cpu" and cpu_has_bf16_matrix_units())
        with torch.no_grad(), torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=fast):
            # The localiser has no dropout: one pass finds the crop every sample would find, and the samples
            # are taken on the crop alone (outside it every sample says background). The score is the
            # same as over the whole image unless the dilated wall reaches the crop's edge, where the
            # whole-image score also averaged in the zeros beyond it; a whole forward per sample spent
            # a quarter of the time re-locating and pasting.
            _, _, crops = network.heart_crops(image)
            enable_mc_dropout(network)
            # Dropout alone makes the samples differ; flip averaging would only multiply the cost by 4.
            samples = [network.segment_passes(crops, flip_tta=False)[0] for _ in range(self.samples)]
        network.eval()
        probs = torch.stack(samples).permute(0, 2, 3, 4, 1).cpu()  # (T, K, h, w, D)
        wall_prob = probs[:, list(LV_WALL)].sum(dim=1)  # (T, h, w, D)
        region = (wall_prob > 0.5).any(dim=0).numpy()
        if not region.any():
            # No sample finds a myocardium: the study needs a human most of all.
            return math.log(NUM_CLASSES)
        region = ndimage.binary_dilation(
            region, iterations=2, structure=ndimage.generate_binary_structure(3, 1)[..., 1:2]
        )
        return float(mutual_information(probs)[torch.from_numpy(region)].mean())
