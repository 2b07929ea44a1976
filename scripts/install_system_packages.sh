#!/usr/bin/env bash
# Debian packages the DICOMweb and browser tests use, installed only when missing: Orthanc with its
# DICOMweb plugin (the store; never started as the system service, lib/orthanc.py starts a private one)
# and chromium (driven headless by Playwright). Needs root or sudo; a no-op when all are there.
set -euo pipefail
need=()
[ -x /usr/sbin/Orthanc ] || command -v Orthanc >/dev/null || need+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "missing Debian packages: ${need[*]}; install them as root" >&2; exit 1; }
  sudo=sudo
fi
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
