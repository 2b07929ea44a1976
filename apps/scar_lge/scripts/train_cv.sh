#!/usr/bin/env bash
# Cross-validate the default-model recipe and train the model to ship, side by side on one machine:
# the 5 fold models (each holds out one fold of the 65 EMIDEC exams) and the all-cases model, which
# records the folds' held-out results as its validation. Side by side because one small ScarNet leaves
# a GPU mostly idle (augmentation runs on the GPU, but the loader workers still crop and normalise each
# slice on the CPU), so each job takes a share of the cores.
#
#   bash apps/scar_lge/scripts/train_cv.sh ../shared/real /tmp/cv --epochs 80 --phantoms 40 --workers 2
#
# Then, on any machine: benchmarks/eval_default_model.py --cv /tmp/cv --real ../shared/real
# Extra arguments go to every train_default_model.py run. PYTHON picks the interpreter (default .venv).
set -uo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 REAL_DATA_DIR OUT_DIR [train_default_model.py arguments...]" >&2
    exit 2
fi
real=$1
out=$2
shift 2
python=${PYTHON:-.venv/bin/python}
script="$(dirname "$0")/train_default_model.py"
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the jobs share the cores; none may take them all

pids=()
for k in 0 1 2 3 4; do
    "$python" "$script" --real "$real" --fold "$k" --out "$out/fold$k.pt" --metrics "$out/fold$k.json" "$@" \
        >"$out/fold$k.log" 2>&1 &
    pids+=($!)
done
# It trains on 13 more exams than a fold model, so it normally ends last; --cv-wait covers the rest.
"$python" "$script" --real "$real" --all-cases --cv "$out" --cv-wait 900 --out "$out/all-cases.pt" \
    --metrics "$out/all-cases-train.json" "$@" >"$out/all-cases.log" 2>&1 &
pids+=($!)

failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
if [ "$failed" -eq 0 ]; then
    echo "all 6 runs finished in $out"
else
    echo "$failed of 6 runs failed; see $out/*.log" >&2
    exit 1
fi
