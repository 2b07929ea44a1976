"""Train the default ``scar`` checkpoint on phantoms plus the EMIDEC cases, and measure it.

By default 20 % of the EMIDEC cases (a fixed, stratified, case-level split) never enter training; the
Dice printed and written to ``--metrics`` is measured on them. ``--fold i`` instead holds out fold i of
a stratified ``--folds``-fold case-level split (cross-validation: run every fold, then
``benchmarks/eval_default_model.py --cv DIR`` summarises them); ``--all-cases`` trains on every case.

    python apps/scar_lge/scripts/train_default_model.py --real ../shared/real \
        --out apps/scar_lge/model/scar.pt --metrics docs/default-model-metrics.json
    python apps/scar_lge/scripts/train_default_model.py --real ../shared/real --fold 0 \
        --out /tmp/cv/fold0.pt --metrics /tmp/cv/fold0.json

On several GPUs or nodes, start it with ``torchrun`` (PyTorch DDP): every rank trains on its shard of the
slices with ``--batch-size`` slices per step, and rank 0 alone validates and writes the checkpoint:

    torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HOST:29400 \
        apps/scar_lge/scripts/train_default_model.py --real ../shared/real --out model.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import distributed  # noqa: E402
from lib.datasets import (  # noqa: E402
    emidec_png_cases,
    kfold_cases,
    load_emidec_png_case,
    phantom_studies,
    split_cases,
)
from lib.engine import cpu_has_bf16_matrix_units, load_study, train, validate  # noqa: E402
from lib.losses import describe_loss  # noqa: E402
from lib.metrics import pooled_dice, summarise_cases  # noqa: E402
from lib.model import SPEC, build_network, default_device, save_checkpoint  # noqa: E402

logger = logging.getLogger("train_default_model")

# Seeds of the training phantoms start here, far from the sample-data seeds (0-99), so the sample
# studies a user first sees were not trained on.
PHANTOM_SEED_BASE = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="the shared real-data folder (holds emidec_png/)")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--metrics", help="JSON file for the held-out measurements")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--phantoms", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=default_device())
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        help="bf16 autocast (default: on CUDA only; --bf16 on a CPU with AMX trains a fold about 1.5x faster, "
        "not yet shown to match fp32 accuracy: docs/model-card.md)",
    )
    parser.add_argument(
        "--limit-cases", type=int, default=0, help="use only this many EMIDEC training cases (smoke runs)"
    )
    held_out_choice = parser.add_mutually_exclusive_group()
    held_out_choice.add_argument("--fold", type=int, help="hold out this fold of --folds (0-based): cross-validation")
    held_out_choice.add_argument(
        "--all-cases", action="store_true", help="train on every EMIDEC case (the figures then come from CV)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--cv",
        help="with --all-cases: the folder of this recipe's fold<K>.json; their held-out results become the "
        "checkpoint's validation and MVO validation (an all-cases model has no held-out exam of its own)",
    )
    parser.add_argument(
        "--cv-wait",
        type=float,
        default=0.0,
        help="with --cv: wait up to this many seconds after training for fold reports still being written",
    )
    args = parser.parse_args()
    if args.cv and not args.all_cases:
        parser.error("--cv goes with --all-cases")
    if args.cv and not Path(args.cv).is_dir():
        parser.error(f"--cv: no such folder {args.cv}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if distributed.launched_by_torchrun():
        args.device = distributed.init_from_torchrun(args.device)

    root = Path(args.real) / "emidec_png"
    cases = emidec_png_cases(root)
    if args.fold is not None:
        folds = kfold_cases(list(cases), args.folds)
        if not 0 <= args.fold < args.folds:
            parser.error(f"--fold must be 0-{args.folds - 1}, got {args.fold}")
        held_out = folds[args.fold]
        train_cases = sorted(c for c in cases if c not in held_out)
    elif args.all_cases:
        train_cases, held_out = sorted(cases), []
    else:
        train_cases, held_out = split_cases(list(cases))
    if args.limit_cases:
        train_cases = train_cases[: args.limit_cases]
    start = time.time()
    train_studies = [load_emidec_png_case(root, c, cases[c]) for c in train_cases]
    train_studies += phantom_studies(range(PHANTOM_SEED_BASE, PHANTOM_SEED_BASE + args.phantoms), args.workers)
    held_out_studies = [load_emidec_png_case(root, c, cases[c]) for c in held_out]
    logger.info(
        "loaded %d training and %d held-out studies in %.1f s",
        len(train_studies),
        len(held_out_studies),
        time.time() - start,
    )

    torch.manual_seed(args.seed)
    network = build_network()
    # bf16 autocast on CUDA by default. On a CPU only when asked: fold 0 trained 1.5x faster with it on an AMX
    # CPU but came out a little lower (wall 0.776 vs 0.785, infarct 0.444 vs 0.462), which one seed cannot
    # tell from noise, so the cross-validation of record stays fp32.
    bf16 = str(args.device).startswith("cuda") if args.bf16 is None else args.bf16
    if bf16 and str(args.device) == "cpu" and not cpu_has_bf16_matrix_units():
        logger.warning("--bf16 on a CPU without AMX: bf16 is emulated there and trains slower than fp32")

    def on_epoch(epoch: int, record: dict) -> None:
        if distributed.is_main() and (epoch + 1) % 25 == 0 and epoch + 1 < args.epochs:
            logger.info(
                "epoch %d held-out %s",
                epoch + 1,
                json.dumps(summarise_cases(validate(network, held_out_studies, args.device))),
            )
            network.train()

    history = train(
        network,
        train_studies,
        epochs=args.epochs,
        lr=args.lr,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        seed=args.seed,
        cosine_schedule=True,
        on_epoch=on_epoch,
        bf16=bf16,
    )

    if not distributed.is_main():
        logger.info("rank %d done; rank 0 validates and writes the checkpoint", distributed.rank())
        return
    results = validate(network, held_out_studies, args.device)
    # Read after training, so the all-cases model can train beside its fold models
    # (apps/scar_lge/scripts/train_cv.sh); a missing report is said, not guessed, and the model is kept.
    cv_results, cv_missing = [], None
    if args.cv:
        deadline = time.time() + args.cv_wait
        while True:
            try:
                cv_results = read_cv_results(Path(args.cv), args.folds)
                break
            except ValueError as e:
                if time.time() >= deadline:
                    cv_missing = str(e)
                    break
                time.sleep(5)
    # An all-cases model is vouched for by its recipe's cross-validation, when given.
    validation_results, validation_source = (
        (cv_results, f"{args.folds}-fold cross-validation of this recipe ({args.cv})")
        if cv_results
        else (results, f"none: {cv_missing}" if cv_missing else "held-out EMIDEC")
    )
    summary = summarise_cases(validation_results)
    train_info = {
        "emidec_cases": len(train_cases),
        "split": f"fold {args.fold} of {args.folds}"
        if args.fold is not None
        else ("all cases" if args.all_cases else "fixed 20 % hold-out"),
        "phantoms": args.phantoms,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "ranks": distributed.world_size(),  # DDP ranks, each with batch_size slices per step
        "seed": args.seed,
        "device": str(args.device),
        "bf16_autocast": bf16,
        # Which augmentation trained it: the batched one since 2026-12-04 (both axes scale), or none recorded.
        "augmentation": "lib.transforms.slice_augment.AugmentBatch defaults, on the training device",
        "seconds": round(time.time() - start, 1),
        "last_epoch": history[-1],
    }
    # Saved before the optional checks below, so nothing after training can lose the checkpoint.
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pooled = pooled_dice(validation_results)
    provenance = {
        "version": "default",
        "base_version": None,
        "created": time.strftime("%Y-%m-%d"),
        "data": f"{len(train_cases)} EMIDEC LGE exams + {args.phantoms} LGE phantoms; "
        f"{len(held_out_studies)} EMIDEC exams held out (docs/model-card.md)",
        "train": train_info,
        "loss": describe_loss(),
        "validation": {"source": validation_source, "per_case_mean": summary, "pooled_dice": pooled},
        "mvo_validation": {
            "pooled_dice": pooled["mvo"] or 0.0,
            "studies_with_mvo": sum(1 for c in validation_results if c["truth_has_mvo"]),
            "source": validation_source,
        },
    }
    save_checkpoint(network, args.out, provenance)
    nifti = {}
    for name in ("samplePositive", "sampleNegative"):
        folder = Path(args.real) / "emidec_nifti" / name
        if folder.is_dir():
            try:
                study = load_study(
                    str(folder / "Images" / f"{name}.nii.gz"), str(folder / "Contours" / f"{name}.nii.gz"), name
                )
            except RuntimeError as e:  # a machine without a NIfTI reader still keeps the checkpoint
                logger.warning("skipped %s: %s", name, e)
                continue
            nifti[name] = validate(network, [study], args.device)[0]
    report = {
        "held_out_emidec": summary,
        "held_out_cases": held_out,
        "held_out_per_case": results,
        "emidec_nifti_sample_exams": nifti,
        "pooled_dice": pooled_dice(results),
        "train": train_info,
        "spec": asdict(SPEC),
    }
    if args.metrics:
        # Atomic: an all-cases run beside this one reads the fold reports as soon as they appear.
        metrics = Path(args.metrics)
        metrics.with_suffix(".tmp").write_text(json.dumps(report, indent=2))
        metrics.with_suffix(".tmp").replace(metrics)
    print(json.dumps({"held_out_emidec": summary, "nifti": nifti}, indent=2))
    if cv_missing:
        sys.exit(f"checkpoint {args.out} saved WITHOUT its cross-validation: {cv_missing}")


def read_cv_results(folder: Path, folds: int) -> list[dict]:
    """Every held-out case of a recipe's ``folds`` fold reports (fold<K>.json), or ValueError saying what is missing."""
    files = sorted(folder.glob("fold*.json"))
    if len(files) != folds:
        raise ValueError(f"--cv: expected {folds} fold*.json in {folder}, found {len(files)}")
    return [c for f in files for c in json.loads(f.read_text())["held_out_per_case"]]


if __name__ == "__main__":
    try:
        main()
        distributed.barrier()  # on success only: no rank tears the group down while rank 0 still writes
    finally:
        # A rank that failed leaves at once (no barrier it would wait at): torchrun then stops the others.
        if distributed.active():
            torch.distributed.destroy_process_group()
