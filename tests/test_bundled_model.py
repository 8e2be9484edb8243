"""The bundled model still recognises the sample pills in views it never saw.

A regression guard for `models/rxvision-c3pi-4k`: the 24 sample photos are C3PI pills the
model was trained on, so views rendered by the training renderer, in the model's own
framing (the eighth version sees pill crops, as its pill finder cuts them, and tells 3,936
pills apart), with a seed no training run uses must be named right more often than not (it
scored 0.728 top-1 on the training renderer's one-side crop views of all 3,936 pills, in
one pass; such views are not evidence of quality on real photos, see docs/library.md). A
broken, swapped or badly re-bundled model fails here (a random one scores about 0).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rxvision.artifact import load_artifact
from rxvision.data import load_dataset, load_image
from rxvision.data.synth import PhoneViewSynthesizer, SynthParams
from rxvision.identify.bundled import bundled_model_dir
from rxvision.locate import EvalTransform

VIEWS_PER_PILL = 4
SEED = 2024  # the held-out seed of docs/training.md; training seeds are 42 to 45
# These 96 views (seed 2024) score 0.521 with the tenth version (fp16 weights as shipped,
# 3,936 classes; session 16's renderer, which also cuts 6 crops in 10 with finder-like
# masks; the ninth scored 0.531 on session 15's views, 0.604 on session 14's, the eighth
# 0.583 on earlier ones, the 1,000-pill seventh 0.760); the views are fixed, so only a
# changed model or renderer moves it: under 0.48 is a break. Training-renderer views: a
# regression guard, not evidence of accuracy.
MIN_TOP1 = 0.48


@pytest.fixture(scope="module")
def bundled() -> Path:
    path = bundled_model_dir()
    if not (path / "card.json").is_file():
        pytest.fail(f"bundled model missing: {path} (it is part of the repository)")
    return path


def test_bundled_model_names_sample_pills_in_new_views(bundled: Path, sample_dir: Path) -> None:
    art = load_artifact(bundled)
    images = load_dataset(sample_dir / "manifest.csv")
    assert set(images.labels) <= set(art.labels), "the sample pills are c3pi-1k pills"
    crops = art.config.augment.framing == "crop"
    transform = EvalTransform(art.preprocessing, zoom="off" if crops else None)
    synth = PhoneViewSynthesizer.from_images(
        [load_image(s.path) for s in images.samples], size=transform.size,
        params=SynthParams.for_training(art.config.augment), fill=transform.fill)
    classes = torch.arange(len(images.samples)).repeat_interleave(VIEWS_PER_PILL)
    views, modes = synth.render(classes, torch.Generator().manual_seed(SEED))
    index = {label: i for i, label in enumerate(art.labels)}
    targets = torch.tensor([index[images.samples[c].label] for c in classes.tolist()])
    with torch.no_grad():
        logits = torch.cat([art.model(transform.normalize(views[i:i + 32]))
                            for i in range(0, len(views), 32)])
    top1 = float((logits.argmax(1) == targets).float().mean())
    assert top1 >= MIN_TOP1, f"bundled model top-1 {top1:.3f} on {len(views)} sample views"
    assert set(modes) == ({"one"} if crops else {"one", "both"})
