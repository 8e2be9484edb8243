"""Compare post-hoc open-set scores on one model: which tells unknown pills apart best?

Embeds three labelled view sets with the model (one forward pass each, no rotations):
``--known`` (held-out views of the model's pills), ``--unknown`` (views of pills it never
saw) and ``--calibration`` (other views of its pills, the only set anything is fitted on).
Then prints the open-set AUROC (known vs unknown; per ``mode`` column value too) of:
max-logit, the centred max-logit of ``rxvision calibrate`` (class centres fitted on the
calibration views), maximum cosine to class centres of the calibration embeddings (alone
and mixed with the classifier rows), Mahalanobis distance with a shared shrunk covariance,
the nearest calibration view, the logit margin, centred energy and two sums. Nothing is
tuned on the unknown pills; the variants are a fixed list. Embeddings are cached in
``--cache`` (an .npz) so a rerun takes seconds.

    python benchmarks/openset_scores.py --model runs/study2/base900 \\
        --known runs/study2/views/views_known.csv --unknown runs/study2/views/views_new.csv \\
        --calibration runs/study2/cal/manifest.csv --cache runs/study2/openset_scores.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from rxvision.artifact import load_artifact
from rxvision.data import load_dataset, load_image
from rxvision.identify.openset import fit_class_centres
from rxvision.library.embeddings import embed_uint8
from rxvision.locate import EvalTransform

SETS = ("known", "unknown", "calibration")


def embed_sets(args: argparse.Namespace) -> dict[str, np.ndarray]:
    art = load_artifact(args.model)
    model = art.model.eval()
    transform = EvalTransform(art.preprocessing)
    out: dict[str, np.ndarray] = {}
    for name in SETS:
        data = load_dataset(getattr(args, name))
        chunks = []
        for start in range(0, len(data.samples), 64):
            views = torch.stack([transform.to_uint8(load_image(s.path))
                                 for s in data.samples[start:start + 64]])
            chunks.append(embed_uint8(model, transform, views).numpy())
        out[name] = np.concatenate(chunks)
        out[f"{name}_labels"] = np.array([s.label for s in data.samples])
        out[f"{name}_mode"] = np.array([s.extra.get("mode", "all") for s in data.samples])
        print(f"embedded {len(data.samples)} {name} views", flush=True)
    head = model.get_classifier()
    out["rows"] = head.weight.detach().float().numpy()
    out["scale"] = np.array(float(head.log_scale.detach().exp()))
    out["labels"] = np.array(art.labels)
    return out


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Known-vs-unknown AUROC of scores where higher means known."""
    y = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="artifact with a cosine final layer")
    for name in SETS:
        p.add_argument(f"--{name}", required=True, help=f"{name} views manifest")
    p.add_argument("--cache", type=Path, help="npz of the embeddings (written if missing)")
    args = p.parse_args()
    if args.cache and args.cache.is_file():
        d = dict(np.load(args.cache))
    else:
        d = embed_sets(args)
        if args.cache:
            np.savez(args.cache, **d)
    index = {label: i for i, label in enumerate(d["labels"])}
    cal_t = np.array([index[label] for label in d["calibration_labels"]])
    rows = unit(d["rows"])
    emb = {k: unit(d[k]) for k in SETS}
    logits = {k: float(d["scale"]) * emb[k] @ rows.T for k in SETS}
    centres, _ = fit_class_centres(logits["calibration"], cal_t)

    sums = np.zeros_like(rows)
    np.add.at(sums, cal_t, emb["calibration"])
    counts = np.bincount(cal_t, minlength=len(rows))
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], rows)
    resid = emb["calibration"] - means[cal_t]
    cov = resid.T @ resid / len(resid)

    def centred(k: str) -> np.ndarray:
        lg = logits[k]
        return lg.max(1) - centres[lg.argmax(1)]

    def mahalanobis(k: str, shrink: float) -> np.ndarray:
        s = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
        inv = np.linalg.inv(s)
        x = emb[k]
        dist = (np.einsum("nd,de,ne->n", x, inv, x)[:, None] - 2 * x @ inv @ means.T
                + np.einsum("cd,de,ce->c", means, inv, means)[None])
        return -dist.min(1)

    def margin(k: str) -> np.ndarray:
        top2 = np.sort(logits[k], 1)[:, -2:]
        return top2[:, 1] - top2[:, 0]

    def zsum(a, b):  # standardised on the calibration views (known pills only)
        def z(f, k):
            ref = f("calibration")
            return (f(k) - ref.mean()) / ref.std()
        return lambda k: z(a, k) + z(b, k)

    def cos_to(centre_rows: np.ndarray):
        return lambda k: (emb[k] @ unit(centre_rows).T).max(1)

    scores = {  # higher = more likely a known pill
        "max-logit": lambda k: logits[k].max(1),
        "centred max-logit (rxvision)": centred,
        "max cosine, calibration centres": cos_to(sums),
        "max cosine, centres + 1 x rows": cos_to(sums + rows),
        "max cosine, centres + 2 x rows": cos_to(sums + 2 * rows),
        "Mahalanobis, shrink 0.1": lambda k: mahalanobis(k, 0.1),
        "Mahalanobis, shrink 0.5": lambda k: mahalanobis(k, 0.5),
        "nearest calibration view": lambda k: (emb[k] @ emb["calibration"].T).max(1),
        "logit margin": margin,
        "centred energy, T 0.5": lambda k: 0.5 * logsumexp((logits[k] - centres) / 0.5, 1),
        "centred energy, T 1": lambda k: logsumexp(logits[k] - centres, 1),
        "centred + margin": lambda k: centred(k) + margin(k),
        "z(centred) + z(cosine, centres + rows)": zsum(centred, cos_to(sums + rows)),
    }
    modes = sorted(set(d["known_mode"]) & set(d["unknown_mode"]))
    print(f"{len(emb['known'])} known vs {len(emb['unknown'])} unknown views; AUROC")
    print(f"{'score':42s} {'all':>6s} " + " ".join(f"{m:>6s}" for m in modes))
    for name, f in scores.items():
        known, unknown = f("known"), f("unknown")
        every = auroc(known, unknown)
        per = [auroc(known[d["known_mode"] == m], unknown[d["unknown_mode"] == m])
               for m in modes]
        print(f"{name:42s} {every:6.3f} " + " ".join(f"{v:6.3f}" for v in per))


if __name__ == "__main__":
    main()
