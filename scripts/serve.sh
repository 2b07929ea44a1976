#!/usr/bin/env bash
# Install (if needed) and start the MONAI Label server on 127.0.0.1 with apps/scar_lge, the sample
# studies and the shipped default model. Extra arguments go to start_server (e.g. --port 8001).
# --dicomweb first: the studies in a private Orthanc DICOMweb store instead, for OHIF (README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ "${1:-}" = "--dicomweb" ]; then
  # Orthanc with the sample studies as DICOM MR series, and this script again on it (scripts/serve_dicomweb.py).
  shift
  exec .venv/bin/python scripts/serve_dicomweb.py "$@"
fi
export MONAI_LABEL_TRACKING_ENABLED=false        # mlflow 3 rejects MONAI Label's file:// store
export MONAI_LABEL_AUTO_UPDATE_SCORING=false     # scores refresh lazily, per published model
export MONAI_LABEL_DATASTORE_AUTO_RELOAD=true
# The app's own ASGI entry (lib/server.py): MONAI Label's app behind the app's request checks.
export PYTHONPATH="$PWD/apps/scar_lge${PYTHONPATH:+:$PYTHONPATH}"
# Runtime data lives outside the source tree: a working copy of the sample studies (made once) and,
# by default, the published models beside it.
DATA_HOME="${SCAR_LGE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/scar_lge}"
if [ -z "${STUDIES:-}" ]; then
  STUDIES="$DATA_HOME/studies"
  if [ ! -d "$STUDIES" ]; then
    mkdir -p "$DATA_HOME"
    cp -r sample-data "$STUDIES.tmp" && mv "$STUDIES.tmp" "$STUDIES"
    echo "copied the sample studies to $STUDIES"
  fi
fi
exec .venv/bin/python -m monailabel.main start_server --app apps/scar_lge --studies "$STUDIES" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" --uvicorn_app lib.server:app \
  --conf model_dir "${MODEL_DIR:-$DATA_HOME/models}" "$@"
