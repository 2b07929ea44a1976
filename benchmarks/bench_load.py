"""Load benchmark: concurrent infer clients while a training run publishes a new model version.

    .venv/bin/python benchmarks/bench_load.py [--clients 8] [--epochs 3] [--out results.json]

Starts its own server on a free loopback port, on a temporary copy of sample-data with an empty
temporary model folder (so the current model is the shipped default). ``--clients`` threads then send
``POST /infer/scar?image=<id>&output=json`` back to back, cycling over the sample studies, before,
during and after one training run (``POST /train/scar``) that publishes version v1. The run is asked
for ``"publish": "force"`` because this measures serving while a model is published, not model
quality: the publish gate would otherwise be free to keep the default after a short run.

Checks (the script exits 1 if any fails):
    - every infer answers 200 with a JSON object naming the checkpoint version it used
      (``answer["model"]["version"]``); any other status, exception or malformed answer is an error;
    - answers from both "default" and "v1" were seen, i.e. the publish happened under load;
    - training finished DONE and ``GET /info/`` names v1 as current afterwards.

Reports latency percentiles over all infers (one warm-up infer before the load, which loads the
network, is reported apart), the median per phase (answered before the train process started; sent
after it and answered before the publish; sent after the publish; requests spanning two phases are
counted apart), answers per version, the peak resident memory of the server process and of the
training and scoring subprocesses (the process tree is sampled every 0.2 s), and the device. The
``--out`` JSON also lists every request. ``--keep`` keeps the temporary folder with the server log
(it is kept anyway when a check fails).

The server also starts its background uncertainty scoring (active learning) at start-up; it is left
on, as in production, and its memory is reported. The server segments two studies at a time
(lib/offload.py), so an infer's latency includes waiting behind the other clients' requests; a
``GET /info/`` probe every 0.5 s measures how the server answers light requests meanwhile.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import requests
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from local_server import SAMPLE_DATA, Server, run_training  # noqa: E402

IMAGE_IDS = [f"lge_{i:03d}" for i in range(14)] + ["lge_dicom_014"]
INFER_TIMEOUT_S = 600  # requests queue behind each other: two infers run at a time
SAMPLE_EVERY_S = 0.2
PHASES = ("before_training", "training_before_publish", "after_publish", "across_a_boundary")


def _background_method(process: psutil.Process) -> str:
    """The background method ("train", "scoring", ...) a MONAI Label child runs, or "other"."""
    cmd = process.cmdline()
    for i, arg in enumerate(cmd[:-2]):
        if arg == "monailabel.interfaces.utils.app" and cmd[i + 1] == "-m":
            return cmd[i + 2]
    return "other"


class TreeMonitor:
    """Samples the server's process tree every 0.2 s: peak RSS per role, background runs, the publish time.

    Roles: the server process itself, and its children grouped by background method (each child with its
    own descendants, e.g. data-loader workers); each child's first and last sighting is kept. The publish
    time is when ``current.json`` appears in the model folder, the file the server reads to pick the
    checkpoint.
    """

    def __init__(self, pid: int, model_dir: Path):
        self.root = psutil.Process(pid)
        self.pointer = model_dir / "current.json"
        self.peak_mb: dict[str, float] = {"server": 0.0, "tree_total": 0.0}
        self.runs: dict[int, list] = {}  # pid -> [role, first seen, last seen]
        self.published_at: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def first_seen(self, role: str) -> float | None:
        """When a child running ``role`` was first seen, or None."""
        return min((first for r, first, _ in self.runs.values() if r == role), default=None)

    def _sample(self) -> None:
        by_role = {"server": self.root.memory_info().rss}
        children = self.root.children()
        for child in children:
            try:
                role = _background_method(child)
                rss = child.memory_info().rss + sum(d.memory_info().rss for d in child.children(recursive=True))
            except psutil.Error:  # ended between listing and reading
                continue
            by_role[role] = by_role.get(role, 0) + rss
            now = time.perf_counter()
            self.runs.setdefault(child.pid, [role, now, now])[2] = now
        for role, rss in by_role.items():
            self.peak_mb[role] = max(self.peak_mb.get(role, 0.0), rss / 2**20)
        self.peak_mb["tree_total"] = max(self.peak_mb["tree_total"], sum(by_role.values()) / 2**20)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.published_at is None and self.pointer.exists():
                self.published_at = time.perf_counter()
            try:
                self._sample()
            except psutil.Error:
                pass
            self._stop.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Infer:
    """One infer request as a client saw it; times are ``time.perf_counter()`` seconds."""

    client: int
    image: str
    start: float
    seconds: float
    status: int | None
    version: str | None
    error: str | None


def infer_once(url: str, image: str, client: int) -> Infer:
    """One ``POST /infer/scar?output=json``; any non-200, exception or answer without a version is an error."""
    start = time.perf_counter()
    status = version = error = None
    try:
        r = requests.post(f"{url}/infer/scar", params={"image": image, "output": "json"}, timeout=INFER_TIMEOUT_S)
        status = r.status_code
        if status != 200:
            error = f"HTTP {status}: {r.text[:300]}"
        else:
            answer = r.json()
            model = answer.get("model") if isinstance(answer, dict) else None
            version = model.get("version") if isinstance(model, dict) else None
            if not isinstance(version, str) or not version:
                version = None
                error = f"answer names no model version: {r.text[:300]}"
    except (requests.RequestException, ValueError) as e:
        error = f"{type(e).__name__}: {e}"
    return Infer(client, image, start, time.perf_counter() - start, status, version, error)


class Clients:
    """``n`` threads sending infers back to back until stopped, sharing one cycle over the image ids."""

    def __init__(self, url: str, n: int):
        self.url = url
        self.results: list[Infer] = []
        self._ids = itertools.cycle(IMAGE_IDS)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, client: int) -> None:
        while not self._stop.is_set():
            with self._lock:
                image = next(self._ids)
            result = infer_once(self.url, image, client)
            with self._lock:
                self.results.append(result)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, wait: bool = True) -> None:
        """Stop sending; by default waits for the requests in flight, which are counted."""
        self._stop.set()
        for t in self._threads if wait else []:
            t.join(INFER_TIMEOUT_S + 10)


class InfoProbe:
    """One ``GET /info/`` every half second: how long the server takes to answer a light request under load."""

    def __init__(self, url: str):
        self.url = url
        self.seconds: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                ok = requests.get(f"{self.url}/info/", timeout=INFER_TIMEOUT_S).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                self.seconds.append(time.perf_counter() - start)
            else:
                self.errors += 1
            self._stop.wait(0.5)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(INFER_TIMEOUT_S + 10)


def train(url: str, epochs: int, timeout_s: float) -> tuple[dict, float, float, float]:
    """Start a publishing training run and poll until it ends; returns (task, sent, answered, ended) times."""
    return run_training(url, {"max_epochs": epochs, "publish": "force"}, timeout_s, request_timeout_s=INFER_TIMEOUT_S)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_figures(seconds: list[float]) -> dict:
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        **{f"p{q}_s": round(percentile(seconds, q), 3) for q in (50, 90, 99)},
        "max_s": round(max(seconds), 3),
    }


def device() -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    return {
        "cpu": cpu,
        "logical_cores": psutil.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run(args: argparse.Namespace, tmp: Path) -> dict:
    studies, model_dir = tmp / "studies", tmp / "model"
    shutil.copytree(SAMPLE_DATA, studies)
    model_dir.mkdir()
    figures: dict = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/bench_load.py", *sys.argv[1:]]),
        "device": device(),
        "settings": {
            "clients": args.clients,
            "epochs": args.epochs,
            "publish": "force",
            "lead_s": args.lead_s,
            "tail_s": args.tail_s,
            "images": IMAGE_IDS,
        },
        "notes": [
            'training is asked to publish with "force": this measures serving under a publish, not model quality',
            "the server's background uncertainty scoring (active learning) runs from start-up and is left on",
            "the server segments two studies at a time (lib/offload.py); infer latency includes queueing "
            "behind the other clients, while GET /info/ is answered on the server's own loop",
            "phases: answered before the train process started; sent after it and answered before the publish; "
            "sent after the publish; a request spanning two phases is counted apart",
        ],
    }
    server = Server(tmp, studies, model_dir)
    clients = None
    monitor = None
    try:
        figures["server_startup_s"] = round(server.wait_ready(), 1)
        known = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=60).json()["objects"]
        missing = [i for i in IMAGE_IDS if i not in known]
        if missing:
            raise RuntimeError(f"the datastore lacks {missing}; it has {sorted(known)}")
        monitor = TreeMonitor(server.process.pid, model_dir)
        monitor.start()

        warmup = infer_once(server.url, IMAGE_IDS[0], -1)  # loads the network: reported apart
        figures["warmup_infer"] = {
            "seconds": round(warmup.seconds, 3),
            "version": warmup.version,
            "error": warmup.error,
        }

        clients = Clients(server.url, args.clients)
        probe = InfoProbe(server.url)
        load_start = time.perf_counter()
        clients.start()
        probe.start()
        time.sleep(args.lead_s)
        task, train_start, train_answered, train_end = train(server.url, args.epochs, args.train_timeout_s)
        time.sleep(args.tail_s)
        clients.stop()
        probe.stop()
        load_end = time.perf_counter()
        monitor.stop()
        info = requests.get(f"{server.url}/info/", timeout=60).json()
    except BaseException:
        if clients is not None:
            clients.stop(wait=False)
        if monitor is not None:
            monitor.stop()
        server.stop(kill=True)
        print(f"server log tail ({server.log}):\n{server.log_tail()}", file=sys.stderr)
        raise
    server.stop()

    results = sorted(clients.results, key=lambda r: r.start)
    published = monitor.published_at
    # The train request itself queues behind the infers, so the phase starts when its process does.
    train_process = monitor.first_seen("train") or train_start

    def phase(r: Infer) -> str:
        """The phase a request lay in from sending to answer; one spanning two phases is counted apart."""
        end, publish = r.start + r.seconds, published or float("inf")
        if end <= train_process:
            return PHASES[0]
        if r.start >= publish:
            return PHASES[2]
        if r.start >= train_process and end <= publish:
            return PHASES[1]
        return PHASES[3]

    errors = [r for r in results if r.error] + ([warmup] if warmup.error else [])
    versions: dict[str, int] = {}
    for r in results:
        versions[r.version or "(none)"] = versions.get(r.version or "(none)", 0) + 1
    first_v1 = min((r.start + r.seconds for r in results if r.version == "v1"), default=None)
    # A request sent after the pointer changed must not be answered by the old model.
    stale = [r for r in results if published is not None and r.start > published and r.version == "default"]
    ok = [r.seconds for r in results if not r.error]
    stats = (info.get("train_stats") or {}).get("scar") or {}

    figures.update(
        {
            "load_s": round(load_end - load_start, 1),
            "infers": len(results),
            "errors": len(errors),
            "error_samples": [asdict(r) for r in errors[:10]],
            "throughput_infers_per_s": round(len(results) / (load_end - load_start), 3),
            "latency": latency_figures(ok),
            "info_probe": {**latency_figures(probe.seconds), "errors": probe.errors},
            "latency_by_phase": {
                p: latency_figures([r.seconds for r in results if not r.error and phase(r) == p]) for p in PHASES
            },
            "answers_by_version": versions,
            "answers_by_phase_and_version": {
                p: {v: sum(1 for r in results if phase(r) == p and (r.version or "(none)") == v) for v in versions}
                for p in PHASES
            },
            "default_answers_sent_after_publish": len(stale),
            "training": {
                "status": task.get("status"),
                "wall_s": round(train_end - train_start, 1),
                "request_answered_after_s": round(train_answered - train_start, 1),
                "process_started_after_s": round(train_process - train_start, 1),
                "published_after_s": None if published is None else round(published - train_start, 1),
                "first_v1_answer_received_after_s": None if first_v1 is None else round(first_v1 - train_start, 1),
                "epoch_s": [h.get("seconds") for h in stats.get("history", [])],
                "train_studies": len(stats.get("train_images", [])),
                "validation_studies": len(stats.get("validation_images", [])),
            },
            "current_version_after": (info.get("model_versions") or {}).get("current"),
            "peak_rss_mb": {k: round(v) for k, v in sorted(monitor.peak_mb.items())},
            "background_runs": [
                {"role": role, "from_s": round(first - train_start, 1), "to_s": round(last - train_start, 1)}
                for role, first, last in sorted(monitor.runs.values(), key=lambda run: run[1])
            ],
            "memory_samples": monitor.samples,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "requests": [
                {
                    **asdict(r),
                    "start": round(r.start - train_start, 3),
                    "seconds": round(r.seconds, 3),
                    "phase": phase(r),
                }
                for r in results
            ],
        }
    )
    failures = []
    if errors:
        failures.append(f"{len(errors)} infer error(s)")
    if probe.errors:
        failures.append(f"{probe.errors} GET /info/ error(s) under load")
    if "(none)" in versions:
        failures.append(f"{versions['(none)']} answer(s) without a model version")
    if "default" not in versions or "v1" not in versions:
        failures.append(f"expected answers from both 'default' and 'v1', got {sorted(versions)}")
    if task.get("status") != "DONE":
        failures.append(f"training ended {task.get('status')}: {json.dumps(task)[:500]}")
    if figures["current_version_after"] != "v1":
        failures.append(f"GET /info/ names {figures['current_version_after']!r} as current, expected 'v1'")
    figures["failures"] = failures
    return figures


def print_table(f: dict) -> None:
    d = f["device"]
    rows = [
        ("date", f["date"]),
        ("device", f"{d['cpu']}, {d['usable_cores']}/{d['logical_cores']} cores, GPU {d['gpu']}"),
        ("torch", f"{d['torch']}, {d['torch_threads']} threads (this process)"),
        ("load average start/end", f"{d['load_average_at_start']} / {f['load_average_at_end']}"),
        ("clients / epochs", f"{f['settings']['clients']} / {f['settings']['epochs']} (publish: force)"),
        ("server start-up", f"{f['server_startup_s']} s"),
        ("warm-up infer (not counted)", f"{f['warmup_infer']['seconds']} s, version {f['warmup_infer']['version']}"),
        ("load duration", f"{f['load_s']} s"),
        ("infers / errors", f"{f['infers']} / {f['errors']}"),
        ("throughput", f"{f['throughput_infers_per_s']} infers/s"),
    ]
    lat = f["latency"]
    if lat["count"]:
        rows.append(("latency p50/p90/p99/max", f"{lat['p50_s']} / {lat['p90_s']} / {lat['p99_s']} / {lat['max_s']} s"))
    for p, lat in f["latency_by_phase"].items():
        value = f"n={lat['count']}" + (f", p50 {lat['p50_s']} s, max {lat['max_s']} s" if lat["count"] else "")
        rows.append((f"  {p}", value))
    probe = f["info_probe"]
    if probe["count"]:
        figures = f"{probe['p50_s']} / {probe['p99_s']} / {probe['max_s']} s"
        rows.append(("GET /info/ under load p50/p99/max", f"{figures} (n={probe['count']}, errors {probe['errors']})"))
    rows.append(("answers by version", ", ".join(f"{k}: {v}" for k, v in f["answers_by_version"].items())))
    for p, counts in f["answers_by_phase_and_version"].items():
        rows.append((f"  {p}", ", ".join(f"{k}: {v}" for k, v in counts.items())))
    rows.append(("'default' answers sent after publish", f["default_answers_sent_after_publish"]))
    t = f["training"]
    runs = ", ".join(f"{r['role']} {r['from_s']}..{r['to_s']}" for r in f["background_runs"])
    rows += [
        ("training (t=0: train request sent)", f"{t['status']}, seen done at {t['wall_s']} s"),
        ("  studies train / validation", f"{t['train_studies']} / {t['validation_studies']}"),
        ("  request answered / process start", f"{t['request_answered_after_s']} s / {t['process_started_after_s']} s"),
        ("  epoch seconds", t["epoch_s"]),
        (
            "  publish / first v1 answer received",
            f"{t['published_after_s']} s / {t['first_v1_answer_received_after_s']} s",
        ),
        ("  background runs (s)", runs),
        ("current version after (/info/)", f["current_version_after"]),
    ]
    for role, mb in f["peak_rss_mb"].items():
        rows.append((f"peak RSS {role}", f"{mb} MiB"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for note in f["notes"]:
        print(f"note: {note}")
    for e in f["error_samples"]:
        print(f"ERROR: client {e['client']} image {e['image']} after {e['seconds']:.2f} s: {e['error']}")
    for failure in f["failures"]:
        print(f"FAIL: {failure}")
    print("PASS" if not f["failures"] else "FAILED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent infer clients (threads)")
    parser.add_argument("--epochs", type=int, default=3, help="max_epochs of the training run")
    parser.add_argument("--out", help="also write the figures here as JSON")
    parser.add_argument("--lead-s", type=float, default=10.0, help="seconds of load before the train request")
    parser.add_argument("--tail-s", type=float, default=10.0, help="seconds of load after training ends")
    parser.add_argument("--train-timeout-s", type=float, default=1800.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (studies, models, server log)")
    args = parser.parse_args()
    if args.clients < 1 or args.epochs < 1:
        parser.error("--clients and --epochs must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="scar_bench_load_"))
    keep = args.keep
    try:
        figures = run(args, tmp)
        keep = keep or bool(figures["failures"])
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"kept {tmp} (server log: {tmp / 'server.log'})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(figures)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    sys.exit(1 if figures["failures"] else 0)


if __name__ == "__main__":
    main()
