"""Re-measure the shipped checkpoint on data it was not trained on, on this machine; or summarise a
cross-validation.

    .venv/bin/python benchmarks/eval_default_model.py --real ../shared/real [--json out.json]
    .venv/bin/python benchmarks/eval_default_model.py --cv /tmp/cv   # fold*.json of train_default_model --fold

Held-out EMIDEC cases (the fixed 20 % split of lib/datasets.py, never trained on) and 12 phantoms
from seeds the training never used (30-41). Prints case-level Dice (mean, SD), scar-free cases with
false scar, the predicted / true scar volume on phantoms, and the device.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "scar_lge"))

from lib.constants import MYOCARDIUM_DENSITY_G_PER_ML, TOTAL_SCAR  # noqa: E402
from lib.datasets import (  # noqa: E402
    emidec_png_cases,
    kfold_cases,
    load_emidec_png_case,
    phantom_studies,
    split_cases,
)
from lib.engine import predict_label, validate  # noqa: E402
from lib.metrics import summarise_cases  # noqa: E402
from lib.model import build_network, default_device, load_checkpoint  # noqa: E402

PHANTOM_SEEDS = range(30, 42)
FALSE_SCAR_G = 1.0  # the clinically visible amount: a normal heart given more than 1 g of scar


def _mean_sd(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values)), 4), "n": len(values)}


def cv_summary(folds: list[list[dict]]) -> dict:
    """Cross-validation figures from each fold's held-out per-case results (``lib.engine.validate``).

    Per structure: the mean and SD over folds of each fold's case-mean Dice (scar over infarct cases, MVO
    over MVO cases). Over all held-out cases together: normal cases given more than 1 g of scar, and the
    bias and SD of predicted minus expert scar % of LV mass on infarct cases (masses on the model grid,
    1.05 g/mL; EMIDEC PNG spacing is nominal, a ratio is not affected).
    """
    out: dict = {"folds": len(folds), "cases": sum(len(f) for f in folds)}
    per_fold = [summarise_cases(f) for f in folds]
    for name in ("lv_cavity", "lv_wall", "scar", "mvo"):
        values = [s[name]["mean"] for s in per_fold if s[name]["mean"] is not None]
        out[name] = {**_mean_sd(values), "per_fold": values}
    cases = [c for f in folds for c in f]
    normals = [c for c in cases if not c["truth_has_scar"]]
    out["normal_cases_over_1g_false_scar"] = {
        "count": sum(1 for c in normals if c["predicted_scar_ml"] * MYOCARDIUM_DENSITY_G_PER_ML > FALSE_SCAR_G),
        "of": len(normals),
    }
    differences = []
    for c in cases:
        if c["truth_has_scar"]:
            scar, wall = c["overlap"]["scar"], c["overlap"]["lv_wall"]
            predicted = 100 * scar["predicted"] / wall["predicted"] if wall["predicted"] else 0.0
            differences.append(predicted - 100 * scar["reference"] / wall["reference"])
    out["scar_percent_lv_infarct_cases"] = {
        "bias": round(float(np.mean(differences)), 2) if differences else None,
        "sd_of_difference": round(float(np.std(differences, ddof=1)), 2) if len(differences) > 1 else None,
        "n": len(differences),
    }
    return out


def cross_validation(folder: Path, real: str | None, n_folds: int, parser) -> dict:
    """The CV table of fold models (``--real``: re-judged, with and without flip averaging) or their metrics."""
    if real is None:
        files = sorted(folder.glob("fold*.json"))
        if not files:
            parser.error(f"no fold*.json in {folder}")
        folds = [json.loads(f.read_text())["held_out_per_case"] for f in files]
        return {"files": [f.name for f in files], **cv_summary(folds)}
    root = Path(real) / "emidec_png"
    cases = emidec_png_cases(root)
    splits = kfold_cases(list(cases), n_folds)
    checkpoints = sorted(folder.glob("fold*.pt"))
    if not checkpoints:
        parser.error(f"no fold*.pt in {folder}")
    device = default_device()
    judged: dict[str, list[list[dict]]] = {"flip_tta": [], "single_pass": []}
    for checkpoint in checkpoints:
        k = int(checkpoint.stem.removeprefix("fold"))
        network = build_network()
        load_checkpoint(network, str(checkpoint))
        network.to(device).eval()
        studies = [load_emidec_png_case(root, c, cases[c]) for c in splits[k]]
        judged["flip_tta"].append(validate(network, studies, device, flip_tta=True))
        judged["single_pass"].append(validate(network, studies, device, flip_tta=False))
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()})",
        "checkpoints": [c.name for c in checkpoints],
        **{name: cv_summary(folds) for name, folds in judged.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", help="the shared real-data folder (holds emidec_png/)")
    parser.add_argument("--model", default=str(ROOT / "apps" / "scar_lge" / "model" / "scar.pt"))
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--cv",
        help="summarise a cross-validation instead: with --real, re-judge each fold<K>.pt in this folder on its "
        "held-out fold with and without flip averaging; without, summarise the fold<K>.json metrics",
    )
    parser.add_argument("--folds", type=int, default=5, help="the --folds the fold models were trained with")
    args = parser.parse_args()
    if args.cv:
        print(json.dumps(cross_validation(Path(args.cv), args.real, args.folds, parser), indent=2))
        return
    device = default_device()

    if not args.real:
        parser.error("--real is required unless --cv is given")
    network = build_network()
    if not load_checkpoint(network, args.model):
        parser.error(f"no checkpoint at {args.model}")
    network.to(device).eval()

    root = Path(args.real) / "emidec_png"
    cases = emidec_png_cases(root)
    _, held_out = split_cases(list(cases))
    start = time.time()
    emidec = validate(network, [load_emidec_png_case(root, c, cases[c]) for c in held_out], device)
    phantoms = phantom_studies(PHANTOM_SEEDS)
    ratios = []
    for study in phantoms:
        truth = np.isin(study.label[0].numpy(), TOTAL_SCAR).sum()
        if truth:
            pred = np.isin(predict_label(network, study.image, device)[0].numpy(), TOTAL_SCAR).sum()
            ratios.append(float(pred / truth))
    report = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()})",
        "model": args.model,
        "held_out_emidec": summarise_cases(emidec),
        "phantoms_unseen": summarise_cases(validate(network, phantoms, device)),
        "phantom_scar_volume_pred_over_true": {
            "median": round(statistics.median(ratios), 3),
            "mean": round(statistics.mean(ratios), 3),
            "n": len(ratios),
        },
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "held_out_per_case": emidec}, indent=2))


if __name__ == "__main__":
    main()
