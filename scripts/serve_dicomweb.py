"""One command to the annotator's screen: a private Orthanc with the sample studies, and the app on it.

    bash scripts/serve.sh --dicomweb [--orthanc-dir DIR] [--orthanc-port 8042] [start_server arguments...]

Starts Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) on 127.0.0.1 with its configuration and
database in DIR (default: a temporary folder, deleted at the end), stores the sample studies in it as
DICOM MR series (STOW-RS), then starts the app with ``--studies http://127.0.0.1:PORT/dicom-web``
through ``scripts/serve.sh``. Ctrl-C (or SIGTERM) stops the app and Orthanc, and everything they started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "scar_lge"))

from lib.orthanc import OrthancError, start_orthanc, store_studies  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orthanc-dir", help="Orthanc's configuration and database (default: a temporary folder)")
    parser.add_argument("--orthanc-port", type=int, default=8042)
    parser.add_argument(
        "--samples", default=str(ROOT / "sample-data"), help="studies to store (NIfTI files, *.dicom folders)"
    )
    args, server_args = parser.parse_known_args()

    temporary = None if args.orthanc_dir else tempfile.TemporaryDirectory(prefix="scar_lge-orthanc-")
    folder = Path(args.orthanc_dir or temporary.name)
    try:
        orthanc = start_orthanc(folder, args.orthanc_port)
    except OrthancError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    server = None
    try:
        samples = sorted(p for p in Path(args.samples).iterdir() if p.name.endswith((".nii.gz", ".nii", ".dicom")))
        stored = store_studies(orthanc.dicomweb, samples, folder / "sample-dicom")
        print(f"Orthanc {orthanc.url} (database {folder}) holds {len(stored)} sample MR series")
        env = {**os.environ, "STUDIES": orthanc.dicomweb}
        mirror = ["--conf", "dicomweb_mirror", str(folder / "mirror")] if temporary else []
        server = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "serve.sh"), *mirror, *server_args], env=env, start_new_session=True
        )
        port = (
            server_args[server_args.index("--port") + 1] if "--port" in server_args else os.environ.get("PORT", "8000")
        )
        print(f"OHIF: http://127.0.0.1:{port}/ohif/ (stop with Ctrl-C)")

        def stop(signum, frame):  # noqa: ARG001 - signal handler signature
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the app and its train/scoring processes
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        orthanc.stop()
        if temporary:
            temporary.cleanup()


if __name__ == "__main__":
    sys.exit(main())
