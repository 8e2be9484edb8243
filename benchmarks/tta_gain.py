"""What rotation test-time augmentation gains: top-1 with 1, 2 and 4 right-angle rotations.

Runs the model once per quarter turn on the same random subset of a labelled manifest (with
a ``mode`` column, as `rxvision data synth` writes) and prints top-1 overall and per mode
for the plain pass, 2 rotations (0/180), 4 rotations (mean logits) and 4 rotations (mean
probabilities). `rxvision predict/evaluate --tta N` use mean logits.

    python benchmarks/tta_gain.py --model models/rxvision-c3pi-4k \
        --data runs/heldout-v2/manifest.csv --n 600
"""

from __future__ import annotations

import argparse
import random

import torch

from rxvision.artifact import load_artifact
from rxvision.data import load_dataset, load_image
from rxvision.identify.bundled import resolve_model_path
from rxvision.locate import EvalTransform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="artifact (default: the bundled model)")
    parser.add_argument("--data", required=True, help="labelled manifest with a mode column")
    parser.add_argument("--n", type=int, default=600, help="random photos to use")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    art = load_artifact(resolve_model_path(args.model))
    model = art.model.eval()
    transform = EvalTransform(art.preprocessing)
    samples = list(load_dataset(args.data).samples)
    random.Random(args.seed).shuffle(samples)
    samples = samples[: args.n]
    index = {label: i for i, label in enumerate(art.labels)}
    x = torch.stack([transform(load_image(s.path)) for s in samples])  # (N, 3, H, W)
    y = torch.tensor([index[s.label] for s in samples])
    modes = [s.extra.get("mode", "all") for s in samples]
    with torch.inference_mode():
        turns = [torch.cat([model(torch.rot90(x[i:i + 50], k, dims=(2, 3)))
                            for i in range(0, len(x), 50)]) for k in range(4)]

    def top1(logits: torch.Tensor, mode: str | None = None) -> float:
        keep = torch.tensor([mode is None or m == mode for m in modes])
        return float((logits.argmax(1)[keep] == y[keep]).float().mean())

    variants = {
        "plain": turns[0],
        "2 rotations": (turns[0] + turns[2]) / 2,
        "4 rotations": sum(turns) / 4,
        "4 rotations, mean probabilities": sum(t.softmax(1) for t in turns) / 4,
    }
    print(f"{len(samples)} photos of {args.data}")
    for name, logits in variants.items():
        per_mode = "  ".join(f"{m} {top1(logits, m):.3f}" for m in sorted(set(modes)))
        print(f"{name:32s} top-1 {top1(logits):.3f}  {per_mode}")


if __name__ == "__main__":
    main()
