"""How many Monte-Carlo dropout samples active learning needs: rank agreement with a long reference.

    .venv/bin/python benchmarks/mc_samples.py --real ../shared/real [--json out.json]

Scores every EMIDEC exam (written as NIfTI at the nominal 1.5 mm) with the app's scorer
(``lib/activelearning/uncertainty.py``, shipped model, one CPU thread as background scoring runs) using a
``--reference`` number of samples, then with each candidate number under ``--seeds`` different dropout
seeds, and prints per candidate: Spearman rank correlation with the reference (mean and minimum over
seeds), how many of the reference's 10 most uncertain exams it also puts in its top 10, and seconds per
exam. A strategy hands out the top of this ranking, so agreement at the top is what an annotator feels.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "scar_lge"))

from lib.activelearning.uncertainty import MyocardialUncertainty  # noqa: E402
from lib.configs.scar import shipped_model_path  # noqa: E402
from lib.datasets import EMIDEC_PNG_NOMINAL_SPACING_MM, emidec_png_cases, read_emidec_png_case  # noqa: E402
from lib.model_store import ModelStore  # noqa: E402

TOP = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="the shared real-data folder (holds emidec_png/)")
    parser.add_argument("--reference", type=int, default=32, help="samples of the reference ranking")
    parser.add_argument("--candidates", type=int, nargs="+", default=[8, 6, 4])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as background scoring runs on a 2-core machine (lib/activelearning/scoring.py)
    root = Path(args.real) / "emidec_png"
    cases = emidec_png_cases(root)
    if not cases:
        parser.error(f"no EMIDEC exams under {root}")
    work = Path(tempfile.mkdtemp(prefix="mc_samples_"))
    paths = []
    for case, slices in cases.items():
        image, _ = read_emidec_png_case(root, case, slices)
        paths.append(str(work / f"{case}.nii.gz"))
        nib.save(nib.Nifti1Image(image, np.diag([*EMIDEC_PNG_NOMINAL_SPACING_MM, 1.0])), paths[-1])
    store = ModelStore(str(work / "models"), shipped_model_path(str(ROOT / "apps" / "scar_lge")))

    def scores(samples: int, seed: int) -> tuple[list[float], float]:
        scorer = MyocardialUncertainty(store, samples=samples, device="cpu")
        _, network = scorer.model()
        torch.manual_seed(seed)
        start = time.perf_counter()
        values = [scorer.score(network, p) for p in paths]
        return values, (time.perf_counter() - start) / len(paths)

    def top(values: list[float]) -> set[int]:
        return set(np.argsort(values)[-TOP:].tolist())

    reference, _ = scores(args.reference, seed=0)
    report = {
        "device": f"CPU ({platform.processor() or platform.machine()}), 1 thread",
        "exams": len(paths),
        "reference_samples": args.reference,
        "candidates": {},
    }
    for samples in args.candidates:
        rho, overlap, seconds = [], [], []
        for seed in range(1, args.seeds + 1):
            values, per_exam = scores(samples, seed=1000 * samples + seed)
            rho.append(float(spearmanr(reference, values)[0]))
            overlap.append(len(top(reference) & top(values)))
            seconds.append(per_exam)
        report["candidates"][samples] = {
            "spearman_mean": round(float(np.mean(rho)), 3),
            "spearman_min": round(min(rho), 3),
            f"top{TOP}_overlap_mean": round(float(np.mean(overlap)), 1),
            "seconds_per_exam_median": round(float(np.median(seconds)), 3),
        }
        print(json.dumps({samples: report["candidates"][samples]}), flush=True)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
