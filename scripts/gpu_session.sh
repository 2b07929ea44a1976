#!/usr/bin/env bash
# One call of a lent GPU machine: cross-validate the default-model recipe and train the all-cases model
# (apps/scar_lge/scripts/train_cv.sh: the 5 fold models and the all-cases one side by side), leaving in
# $OUT what comes back: the six checkpoints, their reports and logs, the GPU's name and its memory.
# Prepared here by scripts/prepare_gpu_session.sh; judged back here, on any machine, by
#   .venv/bin/python benchmarks/eval_default_model.py --cv FOLDER --real ../shared/real
#
#   bash scripts/gpu_session.sh [train_default_model.py arguments, default the shipped recipe]
#
# PYTHON picks the interpreter (default python3, the GPU image's torch); REAL the data (default .realdata).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that comes back}"
python=${PYTHON:-python3}
real=${REAL:-.realdata}
if [ -d .whl ]; then  # the image has torch but not MONAI: install the carried wheels beside it
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The shipped recipe's settings but 40 phantoms, as the last GPU attempt ran it (docs/model-card.md): 80 took
# twice as long per epoch, and a run stopped before its last epoch leaves no checkpoint.
[ $# -gt 0 ] || set -- --epochs 80 --phantoms 40 --workers 2 --batch-size 32 --lr 2e-3
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"; nproc; } >"$OUT/device.txt"
start=$(date +%s)
# Stopped in time to pack what finished: a call's files come back even when it runs out, but at most 8
# files of 16 MiB each, so the run's files are packed into a few archives below.
timeout -k 20 "${BUDGET_S:-480}" env PYTHON="$python" bash apps/scar_lge/scripts/train_cv.sh "$real" "$OUT/cv" "$@"
status=$?
echo "train_cv.sh exit $status after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
cd "$OUT/cv" || exit 1
shopt -s nullglob
packed=0
tar czf "$OUT/reports.tgz" -- *.json *.log || packed=1
models=(*.pt)
for ((i = 0; i < ${#models[@]}; i += 2)); do  # two 7 MB checkpoints an archive, under the 16 MiB per file
    tar cf "$OUT/models-$((i / 2)).tar" -- "${models[@]:i:2}" || packed=1
done
# The loose files would not all come back (8 files at most): kept only if a pack failed.
if [ "$packed" -eq 0 ]; then cd "$OUT" && rm -rf cv; fi
ls -la "$OUT"
exit $status
