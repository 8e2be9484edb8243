#!/usr/bin/env bash
# Enrollment and open-set study on c3pi-1k without a second training run.
# A model trained on all 1,000 pills loses the head rows of 100 of them
# (scripts/holdout_classes.py); those 100 are then (a) unknown pills for the open-set
# AUROC and (b) enrolled from their one reference photo each. The network below the head
# has seen all 1,000 pills, so both numbers are optimistic for truly new pills.
#
#   bash benchmarks/enroll_holdout.sh MODEL OUT
set -euo pipefail
MODEL=${1:-models/rxvision-c3pi-1k}
OUT=${2:-runs/holdout}
DATA=../shared/data/c3pi-1k/manifest.csv
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
$PY - "$DATA" "$OUT" <<'PYEOF'
import csv, random, sys
data, out = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(data)))
random.Random(11).shuffle(rows)
new = {r["label"] for r in rows[:100]}
import os
base = os.path.dirname(os.path.abspath(data))
def write(path, keep):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in sorted(rows, key=lambda r: r["label"]):
            if keep(r["label"]):
                w.writerow({**r, "image": os.path.join(base, r["image"])})
write(f"{out}/new_refs.csv", lambda lab: lab in new)
PYEOF
# Held-out phone-style views of all pills (seed 2024: never used in training), split.
[ -f "$OUT/views/manifest.csv" ] || $PY -m rxvision data synth "$DATA" --out "$OUT/views" --views 2 --seed 2024
$PY - "$OUT" <<'PYEOF'
import csv, sys
out = sys.argv[1]
new = {r["label"] for r in csv.DictReader(open(f"{out}/new_refs.csv"))}
rows = list(csv.DictReader(open(f"{out}/views/manifest.csv")))
for name, keep in (("views_new", lambda l: l in new), ("views_known", lambda l: l not in new)):
    with open(f"{out}/views/{name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if keep(r["label"]))
PYEOF
$PY scripts/holdout_classes.py "$MODEL" --remove "$OUT/new_refs.csv" --out "$OUT/base900"
$PY -m rxvision evaluate --model "$OUT/base900" --data "$OUT/views/views_known.csv" \
    --unknown "$OUT/views/views_new.csv" --group-by mode --json "$OUT/base900.json" --no-progress
$PY -m rxvision enroll --model "$OUT/base900" --data "$OUT/new_refs.csv" --out "$OUT/enrolled"
$PY -m rxvision evaluate --model "$OUT/enrolled" --data "$OUT/views/views_new.csv" \
    --group-by mode --json "$OUT/enrolled_new.json" --no-progress
$PY -m rxvision evaluate --model "$OUT/enrolled" --data "$OUT/views/views_known.csv" \
    --group-by mode --json "$OUT/enrolled_known.json" --no-progress
