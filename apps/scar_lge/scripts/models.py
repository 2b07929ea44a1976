"""List the published versions of the scar model, or roll back to an earlier one.

    .venv/bin/python apps/scar_lge/scripts/models.py list
    .venv/bin/python apps/scar_lge/scripts/models.py rollback            # to the version before the current
    .venv/bin/python apps/scar_lge/scripts/models.py rollback --to v2    # or 'default', the shipped model

``--model-dir`` is the server's ``--conf model_dir`` (default: ``$MODEL_DIR``, else the folder
``scripts/serve.sh`` uses: ``$SCAR_LGE_HOME/models``, ``$XDG_DATA_HOME/scar_lge/models`` or
``~/.local/share/scar_lge/models``). A running server uses the rolled-back model from its next request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))

from lib.configs.scar import default_model_dir, shipped_model_path  # noqa: E402
from lib.model import CheckpointError  # noqa: E402
from lib.model_store import ModelStore  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("MODEL_DIR") or default_model_dir(),
        help="the server's --conf model_dir (default: $MODEL_DIR, else the folder scripts/serve.sh uses)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="versions, the current one and the history of changes")
    rollback = commands.add_parser("rollback", help="make an earlier version current")
    rollback.add_argument("--to", default=None, help="version id (v1, v2, ... or 'default'); default: the previous")
    args = parser.parse_args(argv)

    if not Path(args.model_dir).is_dir():
        print(
            f"error: model folder {args.model_dir} does not exist (give the server's --conf model_dir)", file=sys.stderr
        )
        return 2
    store = ModelStore(args.model_dir, shipped_model_path(str(APP_DIR)))
    if args.command == "list":
        summary = store.describe()
        summary["scores"] = {v: store.stats(v).get("candidate", {}).get("score") for v in store.versions()}
        print(json.dumps(summary, indent=2))
        return 0
    try:
        before = store.current().version
        after = store.rollback(args.to)
    except (ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"current model: {before} -> {after.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
