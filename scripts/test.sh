#!/usr/bin/env bash
# Install (if needed) and run the whole test suite: unit tests, then the real server in integration tests
# (with a private Orthanc and headless chromium, which the tests start and stop themselves).
# Real-data tests read ../shared/real (or $SCAR_LGE_REAL_DATA) and skip only when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install_system_packages.sh  # Orthanc and chromium for the DICOMweb and browser tests, if missing
export MONAI_LABEL_TRACKING_ENABLED=false MONAI_LABEL_AUTO_UPDATE_SCORING=false
exec .venv/bin/python -m pytest tests -p no:cacheprovider -ra "$@"
