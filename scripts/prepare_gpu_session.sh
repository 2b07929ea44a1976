#!/usr/bin/env bash
# Prepare, on this machine, what one call of a lent GPU machine needs for scripts/gpu_session.sh. The GPU
# machine's stock image has torch, numpy, scipy and Pillow (Python 3.12) but not MONAI, and reaches no
# package index and not ../shared, so both travel with the working tree, in folders git ignores
# (.gitignore: /.whl/, /.realdata/):
#   .whl/       the MONAI wheel training needs, and nibabel's for the two NIfTI sample exams it also judges
#   .realdata/  a copy of the EMIDEC exams (emidec_png, emidec_nifti), never committed (their licence)
#
#   bash scripts/prepare_gpu_session.sh ../shared/real
#
# Then name both in the call's carry list: carry [".whl", ".realdata"] (about 23 MB of the 64 MiB allowed).
set -euo pipefail
if [ $# -ne 1 ] || [ ! -d "$1/emidec_png" ]; then
    echo "usage: $0 REAL_DATA_DIR (the folder holding emidec_png/)" >&2
    exit 2
fi
real=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
monai=$(.venv/bin/python -c "import monai; print(monai.__version__)")
nibabel=$(.venv/bin/python -c "import nibabel; print(nibabel.__version__)")
# Into a new folder first: a failed download leaves the last good preparation as it was.
fresh=$(mktemp -d .prepare.XXXXXX)
trap 'rm -rf "$fresh"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$fresh/whl" "monai==$monai" "nibabel==$nibabel"
mkdir -p "$fresh/realdata"
cp -r "$real/emidec_png" "$fresh/realdata/"
if [ -d "$real/emidec_nifti" ]; then cp -r "$real/emidec_nifti" "$fresh/realdata/"; fi
rm -rf .whl .realdata
mv "$fresh/whl" .whl
mv "$fresh/realdata" .realdata
du -sh .whl .realdata
