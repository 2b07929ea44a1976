"""Re-measure the shipped checkpoint on data it was not trained on, on this machine.

    .venv/bin/python benchmarks/eval_default_model.py --real ../shared/real [--json out.json]

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

from lib.constants import TOTAL_SCAR  # noqa: E402
from lib.datasets import emidec_png_cases, load_emidec_png_case, phantom_studies, split_cases  # noqa: E402
from lib.engine import predict_label, validate  # noqa: E402
from lib.metrics import summarise_cases  # noqa: E402
from lib.model import build_network, default_device, load_checkpoint  # noqa: E402

PHANTOM_SEEDS = range(30, 42)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="the shared real-data folder (holds emidec_png/)")
    parser.add_argument("--model", default=str(ROOT / "apps" / "scar_lge" / "model" / "scar.pt"))
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    device = default_device()

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
