"""Train task: fine-tune the published model on the datastore's final labels, publish only if not worse."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from ..engine import load_study, train, validate
from ..metrics import publish_score
from ..model import build_network, default_device, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)


def split_validation(image_ids: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Stable train/validation split by a hash of the image id: adding studies never reshuffles old ones.

    With a single labelled study there is nothing to hold out; it is both trained and validated on.
    """
    if len(image_ids) < 2:
        return list(image_ids), list(image_ids)
    ranked = sorted(image_ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    n_val = min(max(1, round(fraction * len(ranked))), len(ranked) - 1)
    return sorted(ranked[n_val:]), sorted(ranked[:n_val])


class ScarTrainer(TrainTask):
    """Fine-tune ``scar`` from the published checkpoint on every study with a ``final`` label.

    Both the current and the candidate model are scored on the same validation studies (mean Dice of
    LV wall and total scar); the candidate replaces the published file, atomically, only when its
    score is not lower. A crash, a bad label or a worse model leaves the published model as it was.
    """

    def __init__(
        self,
        published_path: str,
        *,
        epochs: int,
        lr: float,
        val_split: float,
        batch_size: int = 16,
        description: str = "Fine-tune the scar model on corrected labels (Dice + KL)",
    ):
        super().__init__(description)
        self.published_path = published_path
        self.stats_path = os.path.join(os.path.dirname(published_path), "train_stats.json")
        self.defaults = {"max_epochs": epochs, "lr": lr, "val_split": val_split, "batch_size": batch_size}

    def config(self) -> dict[str, Any]:
        return dict(self.defaults)

    def stats(self) -> dict[str, Any]:
        if os.path.exists(self.stats_path):
            with open(self.stats_path) as f:
                return json.load(f)
        return {}

    def _option(self, request: dict, key: str, cast):
        value = request.get(key, self.defaults[key])
        try:
            return cast(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"train option {key}={value!r} is not a valid {cast.__name__}") from e

    def __call__(self, request: dict, datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        epochs = self._option(request, "max_epochs", int)
        lr = self._option(request, "lr", float)
        val_split = self._option(request, "val_split", float)
        batch_size = self._option(request, "batch_size", int)
        if epochs < 1 or lr <= 0 or not 0 < val_split < 1 or batch_size < 1:
            raise ValueError(f"need max_epochs >= 1, lr > 0, 0 < val_split < 1, batch_size >= 1; got {request}")
        device = request.get("device") or default_device()
        device = "cpu" if str(device).startswith("cuda") and not torch.cuda.is_available() else str(device)

        labelled = {
            i: (datastore.get_image_uri(i), datastore.get_label_uri(i, DefaultLabelTag.FINAL.value))
            for i in datastore.get_labeled_images(DefaultLabelTag.FINAL.value)
        }
        if not labelled:
            raise ValueError("no study has a final label yet: save a corrected label before training")
        train_ids, val_ids = split_validation(list(labelled), val_split)
        studies = {i: load_study(*labelled[i], name=i) for i in set(train_ids) | set(val_ids)}

        network = build_network()
        resumed = load_checkpoint(network, self.published_path)
        network.to(device)
        val = [studies[i] for i in val_ids]
        baseline = publish_score(validate(network, val, device)) if resumed else float("-inf")
        history = train(
            network,
            [studies[i] for i in train_ids],
            epochs=epochs,
            lr=lr,
            device=device,
            batch_size=batch_size,
        )
        per_case = validate(network, val, device)
        candidate = publish_score(per_case)
        published = candidate >= baseline
        if published:
            meta = {"fine_tuned_on": train_ids, "validation": val_ids, "score": candidate}
            save_checkpoint(network, self.published_path, meta)
        stats = {
            "published": published,
            "reason": "validation score not lower than the current model's"
            if published
            else "validation score lower than the current model's: kept the published model",
            "baseline_score": None if baseline == float("-inf") else round(baseline, 4),
            "candidate_score": round(candidate, 4),
            "validation_dice": per_case,
            "train_images": train_ids,
            "validation_images": val_ids,
            "epochs": epochs,
            "lr": lr,
            "device": device,
            "history": history,
            "total_time_s": round(time.time() - start, 2),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with open(f"{self.stats_path}.tmp", "w") as f:
            json.dump(stats, f, indent=2)
        os.replace(f"{self.stats_path}.tmp", self.stats_path)
        logger.info(
            "train finished: published=%s baseline=%s candidate=%.4f", published, stats["baseline_score"], candidate
        )
        return stats
