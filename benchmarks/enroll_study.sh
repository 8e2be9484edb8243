#!/usr/bin/env bash
# Enrollment and open-set study on c3pi-1k with a proper split: a model is TRAINED on 900
# pills (the network never sees the other 100), then
#   (a) the 100 are unknown pills for the open-set AUROC, and
#   (b) the 100 are enrolled from their one reference photo each, and both the new and the
#       old pills are evaluated on held-out phone-style views.
# The 100 pills are those of benchmarks/enroll_holdout.sh (seed-11 shuffle), so the two
# studies compare. Extra arguments go to `rxvision train` (e.g. --set training.epochs=8).
#
#   bash benchmarks/enroll_study.sh OUT [--set KEY=VALUE ...]
set -euo pipefail
OUT=${1:?usage: enroll_study.sh OUT [train options]}
shift
DATA=../shared/data/c3pi-1k/manifest.csv
PY=${PYTHON:-.venv/bin/python}
RX="$PY -m rxvision"
mkdir -p "$OUT"
$PY scripts/holdout_split.py refs "$DATA" "$OUT"
# Held-out views (seed 2024) for evaluation; seed-7 views of the known pills for calibration.
[ -f "$OUT/views/manifest.csv" ] || $RX data synth "$DATA" --out "$OUT/views" --views 2 --seed 2024
[ -f "$OUT/cal/manifest.csv" ] || $RX data synth "$OUT/known_refs.csv" --out "$OUT/cal" --views 2 --seed 7
$PY scripts/holdout_split.py views "$OUT"
[ -f "$OUT/base900/card.json" ] || $RX train --config configs/c3pi-1k.yaml --data "$OUT/known_refs.csv" \
    --out "$OUT/base900" --set training.num_classes=900 "$@"
$RX calibrate --model "$OUT/base900" --data "$OUT/cal/manifest.csv" --thresholds \
    --abstain-precision 0.95 --no-progress
for method in energy max_logit cosine centred_max_logit; do
  $RX evaluate --model "$OUT/base900" --data "$OUT/views/views_known.csv" \
      --unknown "$OUT/views/views_new.csv" --ood-method $method --group-by mode \
      --json "$OUT/openset_$method.json" --no-progress
done
# (b) enrollment into the trained rows (lean rows, offset auto from the calibration above).
rm -rf "$OUT/enrolled"
$RX enroll --model "$OUT/base900" --data "$OUT/new_refs.csv" --out "$OUT/enrolled" --json \
    > "$OUT/enroll.json"
# (c) the same with every row rebuilt as a prototype first (`rxvision prototypes`).
[ -f "$OUT/proto900/card.json" ] || $RX prototypes --model "$OUT/base900" \
    --data "$OUT/known_refs.csv" --out "$OUT/proto900"
$RX calibrate --model "$OUT/proto900" --data "$OUT/cal/manifest.csv" --thresholds \
    --abstain-precision 0.95 --ood-method max_logit --no-progress
$RX evaluate --model "$OUT/proto900" --data "$OUT/views/views_known.csv" \
    --unknown "$OUT/views/views_new.csv" --ood-method max_logit --group-by mode \
    --json "$OUT/openset_proto_max_logit.json" --no-progress
rm -rf "$OUT/proto_enrolled"
$RX enroll --model "$OUT/proto900" --data "$OUT/new_refs.csv" --out "$OUT/proto_enrolled" \
    --json > "$OUT/proto_enroll.json"
for run in enrolled proto_enrolled; do
  for part in new known; do
    $RX evaluate --model "$OUT/$run" --data "$OUT/views/views_$part.csv" --group-by mode \
        --json "$OUT/${run}_$part.json" --no-progress
  done
done
$PY - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
def get(name):
    return json.load(open(f"{out}/{name}.json"))
for m in ("energy", "max_logit", "cosine", "centred_max_logit", "proto_max_logit"):
    r = get(f"openset_{m}")
    model = "proto900" if m.startswith("proto") else "base900"
    print(f"{model} on known views: top-1 {r['top1']:.3f}; open-set AUROC ({m}) "
          f"{r['open_set']['auroc']:.3f}")
for name in ("enroll", "proto_enroll"):
    r = get(name)
    print(f"{name}: imprint {r['imprint']}, offset {r['offset']:.4f}")
for name in ("enrolled_new", "enrolled_known", "proto_enrolled_new", "proto_enrolled_known"):
    r = get(name)
    groups = {k: round(v["top1"], 3) for k, v in r.get("groups", {}).items() if isinstance(v, dict)}
    print(f"{name}: top-1 {r['top1']:.3f}, by mode {groups}")
PYEOF
