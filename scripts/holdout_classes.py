"""Remove some classes from a trained model, for enrollment and open-set experiments.

    python scripts/holdout_classes.py RUN --remove new_pills.csv --out RUN-without

Keeps every weight except the final Linear rows (and biases) of the labels listed in the
manifest given by ``--remove``. The network below the head has still seen those pills in
training, so experiments on such a model are optimistic compared with truly new pills:
say so wherever its numbers are quoted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rxvision.artifact import load_artifact, read_card, save_artifact
from rxvision.data import load_dataset
from rxvision.models.layers import CosineClassifier, make_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="trained model artifact")
    parser.add_argument("--remove", required=True, help="manifest whose labels are removed")
    parser.add_argument("--out", required=True, type=Path, help="output artifact directory")
    args = parser.parse_args()
    art = load_artifact(args.run)
    card = read_card(args.run)
    removed = set(load_dataset(args.remove).labels)
    unknown = removed - set(art.labels)
    if unknown:
        raise SystemExit(f"{len(unknown)} labels to remove are not in the model, "
                         f"e.g. {sorted(unknown)[:3]}")
    keep = [i for i, label in enumerate(art.labels) if label not in removed]
    head = art.model.get_classifier()
    new_head = make_classifier(art.config.architecture.classifier.type, head.in_features,
                               len(keep))
    with torch.no_grad():
        new_head.weight.copy_(head.weight[keep])
        if isinstance(head, CosineClassifier):
            new_head.log_scale.copy_(head.log_scale)
        else:
            new_head.bias.copy_(head.bias[keep])
    art.model.classifier.classifier = new_head
    art.model.num_classes = len(keep)
    save_artifact(args.out, art.model, art.config, [art.labels[i] for i in keep],
                  [art.label_metadata[i] for i in keep], metrics={},
                  calibration=card.get("calibration"),
                  extra={"holdout": {"source": str(args.run), "removed": sorted(removed)}})
    print(f"{args.out}: {len(keep)} of {len(art.labels)} classes kept")


if __name__ == "__main__":
    main()
