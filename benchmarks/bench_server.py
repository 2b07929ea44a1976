"""Server benchmark: infer latency on a 10-slice 256x256 study, peak memory, fine-tuning time per epoch.

    .venv/bin/python benchmarks/bench_server.py [--repeats 10] [--epochs 3] [--json out.json]

Starts a real server on 127.0.0.1 (default model, a copy of sample-data plus one generated 10-slice
256x256 study), warms it up, then times POST /infer/scar (full path: load, localise, segment, invert,
clean up, write the label file) and one fine-tuning run on the 10 labelled sample studies. Prints
medians over the repeats, peak resident memory of the server and of the training process, and the
device measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import psutil
import requests
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "scar_lge"))
sys.path.insert(0, str(ROOT / "scripts"))

from local_server import SAMPLE_DATA, Server, run_training  # noqa: E402

from lib.phantoms import make_phantom  # noqa: E402


def device_name(device: str) -> str:
    """The GPU's name, or the CPU and its core count: printed with every figure."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {psutil.cpu_count()} cores)"


class PeakMemory:
    """Samples the resident memory of the server and, separately, of its training process, every 50 ms.

    The server also starts background uncertainty-scoring processes; they are not counted as training.
    """

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.server_peak = self.children_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.server_peak = max(self.server_peak, self.process.memory_info().rss)
                children = [c for c in self.process.children(recursive=True) if "-m train" in " ".join(c.cmdline())]
                self.children_peak = max(self.children_peak, sum(c.memory_info().rss for c in children))
            except psutil.Error:
                pass
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="scar_bench_"))
    studies = tmp / "studies"
    shutil.copytree(SAMPLE_DATA, studies)
    (tmp / "model").mkdir()
    server = Server(tmp, studies, tmp / "model")
    try:
        server.wait_ready()
        p = make_phantom(2026, scar=True, shape=(256, 256), n_slices=10, spacing_mm=1.4, slice_spacing_mm=10.0)
        nib.save(nib.Nifti1Image(p.image, p.affine), str(studies / "bench_256x256x10.nii.gz"))
        deadline = time.time() + 30
        while (
            "bench_256x256x10"
            not in requests.get(f"{server.url}/datastore/", params={"output": "all"}).json()["objects"]
            and time.time() < deadline
        ):
            time.sleep(0.5)
        # Let the start-up uncertainty scoring (active learning, a background process) finish first, so
        # it does not share the cores with what is timed here; bench_load.py measures everything at once.
        deadline = time.time() + 300
        while time.time() < deadline:
            r = requests.get(f"{server.url}/scoring/", params={"all": "true"}, timeout=30)
            if r.status_code == 200 and r.json() and all(t["status"] not in ("SUBMITTED", "RUNNING") for t in r.json()):
                break
            time.sleep(2)
        memory = PeakMemory(server.process.pid)

        def infer() -> float:
            start = time.perf_counter()
            r = requests.post(
                f"{server.url}/infer/scar", params={"image": "bench_256x256x10", "output": "image"}, timeout=120
            )
            r.raise_for_status()
            return time.perf_counter() - start

        for _ in range(2):
            infer()  # warm-up: model load, first-call allocations
        latencies = [infer() for _ in range(args.repeats)]
        infer_peak = memory.server_peak

        start = time.perf_counter()
        task = run_training(server.url, {"max_epochs": args.epochs, "lr": 1e-4}, timeout_s=1800)[0]
        train_wall = time.perf_counter() - start
        memory.stop()
        stats = requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"]["scar"]
        if task["status"] != "DONE":
            raise RuntimeError(f"training failed: {task}")
        epoch_s = [h["seconds"] for h in stats["history"]]
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    figures = {
        "device": device_name("cuda" if torch.cuda.is_available() else "cpu"),
        "torch_threads": torch.get_num_threads(),
        "infer_study": "256x256x10, 1.4 mm in-plane, 10 mm slices",
        "infer_repeats": args.repeats,
        "infer_median_s": round(statistics.median(latencies), 3),
        "infer_min_s": round(min(latencies), 3),
        "infer_max_s": round(max(latencies), 3),
        "server_peak_rss_mb": round(max(infer_peak, memory.server_peak) / 2**20),
        "train_process_peak_rss_mb": round(memory.children_peak / 2**20),
        "train_studies": len(stats["train_images"]),
        "validation_studies": len(stats["validation_images"]),
        "train_epoch_median_s": round(statistics.median(epoch_s), 2),
        "train_epochs": epoch_s,
        "train_run_wall_s": round(train_wall, 1),
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
