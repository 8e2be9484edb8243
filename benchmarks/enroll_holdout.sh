#!/usr/bin/env bash
# Enrollment and open-set study on c3pi-1k without a second training run.
# A model trained on all 1,000 pills loses the head rows of 100 of them
# (scripts/holdout_classes.py); those 100 are then (a) unknown pills for the open-set
# AUROC and (b) enrolled from their one reference photo each. The network below the head
# has seen all 1,000 pills, so both numbers are optimistic for truly new pills.
#
#   bash benchmarks/enroll_holdout.sh MODEL OUT
set -euo pipefail
MODEL=${1:-models/rxvision-c3pi-4k}
OUT=${2:-runs/holdout}
DATA=../shared/data/c3pi-1k/manifest.csv
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
$PY scripts/holdout_split.py refs "$DATA" "$OUT"
# Held-out phone-style views of all pills (seed 2024: never used in training), split.
[ -f "$OUT/views/manifest.csv" ] || $PY -m rxvision data synth "$DATA" --out "$OUT/views" --views 2 --seed 2024
$PY scripts/holdout_split.py views "$OUT"
$PY scripts/holdout_classes.py "$MODEL" --remove "$OUT/new_refs.csv" --out "$OUT/base900"
$PY -m rxvision evaluate --model "$OUT/base900" --data "$OUT/views/views_known.csv" \
    --unknown "$OUT/views/views_new.csv" --group-by mode --json "$OUT/base900.json" --no-progress
$PY -m rxvision enroll --model "$OUT/base900" --data "$OUT/new_refs.csv" --out "$OUT/enrolled"
$PY -m rxvision evaluate --model "$OUT/enrolled" --data "$OUT/views/views_new.csv" \
    --group-by mode --json "$OUT/enrolled_new.json" --no-progress
$PY -m rxvision evaluate --model "$OUT/enrolled" --data "$OUT/views/views_known.csv" \
    --group-by mode --json "$OUT/enrolled_known.json" --no-progress
