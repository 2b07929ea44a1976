"""Train task: fine-tune the current model on the datastore's final labels; publish only through the gate."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.async_tasks.utils import processes, tasks

from .. import distributed
from ..engine import LazyStudies, StreamingSlices, StudyFile, train, validate
from ..errors import InputError
from ..lifecycle import ParentWatch, in_background_run, progress
from ..losses import describe_loss
from ..model import CheckpointError, build_network, default_device, load_checkpoint
from ..model_store import ModelStore, now_iso, write_json_atomic
from ..publish_gate import decide, score_model, split_validation
from ..train_options import TrainOptions, parse_train_options

logger = logging.getLogger(__name__)


class RunCancelled(RuntimeError):
    """The server that started this run is gone: stop without publishing."""


class ScarTrainer(TrainTask):
    """Fine-tune ``scar`` from the current model on every study with a ``final`` label.

    Validation studies are chosen per study by a hash of its id (:mod:`lib.publish_gate`) and never
    trained on. The current and the candidate model are scored on them with pooled Dice; the
    candidate becomes a new numbered version only through :func:`lib.publish_gate.decide`. A crash,
    a cancelled run, a bad label or a worse model leaves the current model as it was.
    ``train_stats`` is rewritten as the run goes, with the fields MONAI Label's Slicer plugin and OHIF
    extension read (``epoch``, ``total_epochs``, ``best_metric``, ``total_time``).
    """

    def __init__(
        self,
        store: ModelStore,
        *,
        epochs: int,
        lr: float,
        val_split: float,
        batch_size: int = 16,
        multi_gpu: bool = True,
        cpu_ranks: int = 1,
        description: str = "Fine-tune the scar model on corrected labels (Dice + CE)",
    ):
        super().__init__(description)
        self.store = store
        self.stats_path = os.path.join(store.model_dir, "train_stats.json")
        self.val_split = val_split  # the server's: a study's role never changes between runs
        self.defaults = {"max_epochs": epochs, "lr": lr, "batch_size": batch_size}
        self.multi_gpu = multi_gpu
        self.cpu_ranks = cpu_ranks

    def ranks(self, device: str) -> int:
        """How many DDP ranks train: every visible GPU with ``multi_gpu`` (MONAI Label's flag, on by default),
        ``cpu_ranks`` gloo processes on a CPU, else 1."""
        if device == "cuda":
            return max(1, torch.cuda.device_count()) if self.multi_gpu else 1
        return self.cpu_ranks

    def config(self) -> dict[str, Any]:
        return {**self.defaults, "publish": "auto"}

    def options(self, request: dict[str, Any], *, from_client: bool = False) -> TrainOptions:
        """The request's options, checked (InputError names the option, value and what is allowed)."""
        return parse_train_options(request, self.defaults, from_client=from_client)

    def stats(self) -> dict[str, Any]:
        if not os.path.exists(self.stats_path):
            return {}
        try:
            with open(self.stats_path) as f:
                stats = json.load(f)
        except ValueError:  # written atomically; a parse error means a foreign file
            return {"error": f"unreadable {self.stats_path}"}
        if in_background_run():
            return stats
        running = processes("train")
        if stats.get("status") == "running" and not running:
            # The run's process is gone (server restarted, run killed): it will never finish.
            stats = {**stats, "status": "interrupted", "total_time": stats.get("total_time") or 0.0}
        elif running and stats.get("status") != "running":
            # A new run's process is starting and has not written its stats yet: the file is the last
            # run's, whose total_time would tell a client (Slicer) that this one is already over.
            request = next((t["request"] for t in tasks("train") if t["id"] in running), {})
            stats = {
                "status": "starting",
                "epoch": 0,
                "total_epochs": request.get("max_epochs", self.defaults["max_epochs"]),
                "best_metric": 0.0,
                "total_time": None,
                "previous_run": {k: stats.get(k) for k in ("status", "version", "reason", "finished")},
            }
        return stats

    def _write_stats(self, stats: dict[str, Any]) -> None:
        if distributed.is_main():
            write_json_atomic(self.stats_path, stats)

    def _read_stats(self) -> dict[str, Any]:
        with open(self.stats_path) as f:
            return json.load(f)

    def __call__(self, request: dict, datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        watch = ParentWatch()
        opts = self.options(request)
        device = opts.device or default_device()
        device = "cpu" if device == "cuda" and not torch.cuda.is_available() else device

        labelled = {
            i: (datastore.get_image_uri(i), datastore.get_label_uri(i, DefaultLabelTag.FINAL.value))
            for i in datastore.get_labeled_images(DefaultLabelTag.FINAL.value)
        }
        if not labelled:
            raise InputError("no study has a final label yet: save a corrected label before training")
        train_ids, val_ids = split_validation(list(labelled), self.val_split)
        if not train_ids:
            raise InputError(
                f"all {len(val_ids)} labelled studies are validation studies, which are never trained on; "
                "label more studies"
            )

        current = self.store.current()
        network = build_network()
        try:
            load_checkpoint(network, current.path)
            base = current.version
        except CheckpointError as e:
            if os.path.exists(current.path):
                raise  # a model exists but is unusable: never silently start over
            base = None
            progress.info("no current model (%s): training from scratch", e.reason)
        ranks = self.ranks(device)
        if ranks == 1:
            network.to(device)  # with several ranks, each loads its own copy on its own device

        stats: dict[str, Any] = {
            "status": "running",
            "started_from": base or "scratch (no checkpoint)",
            "epoch": 0,
            "total_epochs": opts.max_epochs,
            "best_metric": 0.0,
            "total_time": None,  # Slicer reads a set total_time as "finished"
            "options": opts.to_json(),
            "train_images": train_ids,
            "validation_images": val_ids,
            "validation_rule": f"a study validates when a hash of its id falls below {self.val_split}; "
            "validation studies are never trained on",
            "device": device,
            "ranks": ranks,  # DDP ranks, each with batch_size slices per step
            "history": [],
            "started": now_iso(),
        }
        self._write_stats(stats)
        try:
            if stats["ranks"] > 1:
                # Every rank loads the studies and trains on its shard; rank 0 validates, judges, publishes and
                # writes train_stats, which this process then reads back.
                arguments = (self, base, current.path, labelled, train_ids, val_ids, opts, stats)
                distributed.spawn_ranks(stats["ranks"], device, _fine_tune_rank, *arguments)
                stats = self._read_stats()
            else:
                self._fine_tune(network, base, labelled, train_ids, val_ids, opts, device, stats, watch)
        except BaseException as e:
            if ranks > 1:
                stats = self._read_stats()  # rank 0's record (history, scores), not this process's copy
                if stats.get("status") == "finished":
                    # Rank 0 had judged (and maybe published) when another rank failed on its way out.
                    stats["error_after_finish"] = f"{type(e).__name__}: {e}"
                    self._write_stats(stats)
                    return {k: stats.get(k) for k in ("status", "published", "version", "reason", "total_time")}
            stats.update(status="failed", error=f"{type(e).__name__}: {e}", total_time=round(time.time() - start, 2))
            self._write_stats(stats)
            raise
        stats["total_time"] = round(time.time() - start, 2)
        self._write_stats(stats)
        progress.info("%s", stats["reason"])
        # MONAI Label prints the result as the run's last output line (GET /train/): the outcome only;
        # the whole record is train_stats.
        return {k: stats.get(k) for k in ("status", "published", "version", "reason", "total_time")}

    def _fine_tune(self, network, base, labelled, train_ids, val_ids, opts, device, stats, watch):
        """Load, score the current model, train, score the candidate, and publish through the gate; fills ``stats``."""
        main = distributed.is_main()  # rank 0 (or the only process) validates, judges and publishes
        # Studies stream from disk, a few at a time (lib/engine.py): memory does not grow with their number.
        files = {i: StudyFile.counted(i, *labelled[i]) for i in train_ids}
        val = LazyStudies([StudyFile(i, *labelled[i], slices=0) for i in val_ids] if main else [])
        current_cases = validate(network, val, device) if base and val else None
        if current_cases is not None:
            stats["current_model"] = score_model(current_cases).to_json()
            progress.info("current model %s: validation score %.4f", base, stats["current_model"]["score"])
        loop_start = time.time()

        def on_epoch(epoch: int, record: dict) -> None:
            if not main:
                return
            epoch_score = score_model(validate(network, val, device)).score if val else None
            network.train()
            left = (time.time() - loop_start) / (epoch + 1) * (opts.max_epochs - epoch - 1)
            record = {**record, "validation_score": None if epoch_score is None else round(epoch_score, 4)}
            stats["history"].append(record)
            stats["epoch"] = epoch + 1
            stats["best_metric"] = max(stats["best_metric"], epoch_score or 0.0)
            stats["seconds_left"] = round(left, 1)
            self._write_stats(stats)
            score_text = "n/a" if epoch_score is None else f"{epoch_score:.4f}"
            progress.info(
                "epoch %d of %d: segmenter loss %.4f, localiser loss %.4f, validation score %s, about %.0f s left",
                epoch + 1,
                opts.max_epochs,
                record["segmenter"],
                record["localiser"],
                score_text,
                left,
            )

        def should_stop() -> bool:
            if watch.parent_gone():
                raise RunCancelled("the server that started this run has stopped")
            return False

        train(
            network,
            StreamingSlices([files[i] for i in train_ids]),
            epochs=opts.max_epochs,
            lr=opts.lr,
            device=device,
            batch_size=opts.batch_size,
            on_epoch=on_epoch,
            should_stop=should_stop,
        )
        if not main:
            return
        candidate_cases = validate(network, val, device) if val else []
        decision = decide(candidate_cases, current_cases, opts.publish)
        stats.update(
            status="finished",
            **decision.to_json(),
            validation_per_study=[{k: v for k, v in c.items() if k != "overlap"} for c in candidate_cases],
            finished=now_iso(),
        )
        if decision.publish:
            provenance = {
                "base_version": base,
                "created": now_iso(),
                "train_images": train_ids,
                "validation_images": val_ids,
                "scores": decision.to_json(),
                "loss": describe_loss(),
                "options": opts.to_json(),
                "mvo_validation": _mvo_validation(candidate_cases),
            }
            stats["best_metric"] = decision.candidate.score
            stats["version"] = self.store.publish(network, provenance, stats).version
        else:
            stats["version"] = base
            stats["best_metric"] = decision.current.score if decision.current else decision.candidate.score


def _fine_tune_rank(
    device: str, trainer: ScarTrainer, base, checkpoint: str, labelled, train_ids, val_ids, opts, stats
) -> None:
    """One DDP rank of a run (:func:`lib.distributed.spawn_ranks`): the current model on this rank's device, then
    :meth:`ScarTrainer._fine_tune` on its shard. Its own :class:`ParentWatch`: the kernel stops this rank when
    the run's process dies, which the server's end does (so a cancelled run's rank 0 never publishes)."""
    network = build_network()
    if base:
        load_checkpoint(network, checkpoint)
    network.to(device)
    start = time.time()
    trainer._fine_tune(network, base, labelled, train_ids, val_ids, opts, device, stats, ParentWatch())
    stats["rank0_seconds"] = round(time.time() - start, 2)
    trainer._write_stats(stats)  # rank 0 only: the outcome the run's process reads back


def _mvo_validation(cases: list[dict]) -> dict:
    """MVO evidence of a new version: its own validation set's alone. The gate does not score MVO, so a
    base model's MVO validation says nothing about the fine-tuned one."""
    studies = sum(1 for c in cases if c["truth_has_mvo"])
    pooled = score_model(cases).pooled_dice["mvo"] if cases else None
    return {"pooled_dice": pooled or 0.0, "studies_with_mvo": studies, "source": "fine-tuning validation set"}
