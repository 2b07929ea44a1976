#!/usr/bin/env bash
# Install (if needed) and start the MONAI Label server on 127.0.0.1 with apps/scar_lge, the sample
# studies and the shipped default model. Extra arguments go to start_server (e.g. --port 8001).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export MONAI_LABEL_TRACKING_ENABLED=false        # mlflow 3 rejects MONAI Label's file:// store
export MONAI_LABEL_AUTO_UPDATE_SCORING=false     # scores refresh lazily, per published model
export MONAI_LABEL_DATASTORE_AUTO_RELOAD=true
exec .venv/bin/python -m monailabel.main start_server --app apps/scar_lge --studies "${STUDIES:-sample-data}" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
