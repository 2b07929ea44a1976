"""Scale: listing, uncertainty scoring and one training epoch on N generated phantom studies; time and memory.

    .venv/bin/python benchmarks/bench_scale.py [--studies 200] [--labelled 100] [--repeats 3] [--workdir DIR]
        [--json F]

Generates ``--studies`` LGE phantoms (seeds 20000 on, never trained on) as NIfTI files, the first
``--labelled`` with a final label, then runs each phase in a process of its own, so that each peak memory
is that phase's alone:

- ``list``: open the studies folder as the app's datastore and list studies and labelled studies;
- ``score``: Monte-Carlo-dropout uncertainty scoring of every unlabelled study, as the app's background
  scoring does (one study in memory at a time), with the shipped model;
- ``train``: one epoch of the train task's training on the labelled studies, streamed from disk
  (``lib.engine.StreamingSlices``, at most 8 studies in memory).

Each phase runs ``--repeats`` times; prints, per phase, the median run's seconds, studies (and slices) per
second and peak resident memory (and peak GPU memory on CUDA), every run's seconds, the highest peak
memory, and the device. Run it at two sizes to see memory stay flat as studies grow.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "apps" / "scar_lge"
sys.path.insert(0, str(APP_DIR))

from bench_server import device_name  # noqa: E402

SEED_BASE = 20_000  # far from sample data (0-99) and the default model's training phantoms (10 000 on)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kB


def generate(studies: Path, n: int, labelled: int) -> float:
    import nibabel as nib

    from lib.phantoms import make_phantom

    start = time.perf_counter()
    (studies / "labels" / "final").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = make_phantom(SEED_BASE + i)
        nib.save(nib.Nifti1Image(p.image, p.affine), str(studies / f"scale_{i:04d}.nii.gz"))
        if i < labelled:
            nib.save(nib.Nifti1Image(p.label, p.affine), str(studies / "labels" / "final" / f"scale_{i:04d}.nii.gz"))
    return time.perf_counter() - start


def phase_list(studies: Path, device: str) -> dict:
    from lib.datastore import ScarDatastore

    start = time.perf_counter()
    datastore = ScarDatastore(str(studies), auto_reload=False)
    images, labelled = datastore.list_images(), datastore.get_labeled_images("final")
    seconds = time.perf_counter() - start
    return {"studies": len(images), "labelled": len(labelled), "seconds": round(seconds, 2)}


def phase_score(studies: Path, device: str) -> dict:
    import torch

    from lib.activelearning.scoring import ScarUncertaintyScoring
    from lib.activelearning.studies import StudyPool
    from lib.activelearning.uncertainty import MyocardialUncertainty
    from lib.configs.scar import ScarSettings, shipped_model_path
    from lib.datastore import ScarDatastore
    from lib.model_store import ModelStore

    model_dir = Path(tempfile.mkdtemp(prefix="scale_models_"))
    store = ModelStore(str(model_dir), shipped_model_path(str(APP_DIR)))
    # The app's scorer and pool (lib/configs/scar.py wires the same), on the device asked for.
    scorer = MyocardialUncertainty(store, samples=ScarSettings.mc_samples, device=device)
    scoring = ScarUncertaintyScoring(scorer, StudyPool(), str(model_dir / "scores"))
    datastore = ScarDatastore(str(studies), auto_reload=False)
    start = time.perf_counter()
    result = scoring({}, datastore)
    seconds = time.perf_counter() - start
    shutil.rmtree(model_dir, ignore_errors=True)
    out = {
        "studies": len(result["scored"]),
        "failed": len(result["failed"]),
        "seconds": round(seconds, 2),
        "studies_per_s": round(len(result["scored"]) / seconds, 2),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def phase_train(studies: Path, device: str) -> dict:
    import torch

    from lib.configs.scar import ScarSettings, shipped_model_path
    from lib.datastore import ScarDatastore
    from lib.engine import StreamingSlices, StudyFile, train
    from lib.model import build_network, load_checkpoint
    from lib.train_options import TrainOptions

    datastore = ScarDatastore(str(studies), auto_reload=False)
    files = []
    for i in datastore.get_labeled_images("final"):
        image, label = datastore.get_image_uri(i), datastore.get_label_uri(i, "final")
        files.append(StudyFile.counted(i, image, label))
    network = build_network()
    load_checkpoint(network, shipped_model_path(str(APP_DIR)))
    stream = StreamingSlices(files)
    start = time.perf_counter()
    # The train task's defaults: --conf lr and a train request's batch_size.
    history = train(network, stream, epochs=1, lr=ScarSettings.lr, device=device, batch_size=TrainOptions.batch_size)
    seconds = time.perf_counter() - start
    slices = sum(f.slices for f in files)
    out = {
        "studies": len(files),
        "slices": slices,
        "seconds": round(seconds, 2),
        "slices_per_s": round(slices / seconds, 1),
        "segmenter_loss": round(history[-1]["segmenter"], 4),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


PHASES = {"list": phase_list, "score": phase_score, "train": phase_train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--labelled", type=int, default=100)
    parser.add_argument("--workdir", help="keep the generated studies here (default: a temporary folder)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each phase, each in a fresh process (odd: the median run)"
    )
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)  # a child process's phase
    args = parser.parse_args()
    if args.repeats < 1 or args.repeats % 2 == 0:
        parser.error(f"--repeats must be odd and at least 1 (the median run is reported); got {args.repeats}")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.phase:
        figures = PHASES[args.phase](Path(args.workdir), device)
        print(json.dumps({**figures, "peak_rss_mb": _peak_rss_mb()}))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="scar_scale_"))
    studies = workdir / "studies"
    if not studies.is_dir() or len(list(studies.glob("scale_*.nii.gz"))) != args.studies:
        shutil.rmtree(studies, ignore_errors=True)
        studies.mkdir(parents=True)
        print(f"generating {args.studies} phantom studies ...", flush=True)
        generated_s = generate(studies, args.studies, args.labelled)
    else:
        generated_s = None
    report = {
        "device": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "studies": args.studies,
        "labelled": args.labelled,
        "generate_seconds": None if generated_s is None else round(generated_s, 1),
    }
    for phase in ("list", "score", "train"):
        command = [sys.executable, __file__, "--phase", phase, "--workdir", str(studies), "--device", device]
        runs = []
        for _ in range(args.repeats):  # scores are cached per model folder; each run makes a fresh one
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
            if done.returncode != 0:
                raise RuntimeError(f"phase {phase} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        runs.sort(key=lambda run: run["seconds"])
        report[phase] = {
            **runs[len(runs) // 2],  # the median run's figures
            "seconds_of_each_run": [run["seconds"] for run in runs],
            "peak_rss_mb_max": max(run["peak_rss_mb"] for run in runs),
        }
        print(f"{phase:<6} {json.dumps(report[phase])}  [{report['device']}]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
