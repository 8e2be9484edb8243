"""Reference embeddings for enrollment: phone-style views of each reference photo, embedded.

The views come from the training synthesiser, seeded, with the model's own ``augment``
settings; see :mod:`rxvision.library.enroll` for how the embeddings become new rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from ..artifact import (
    ArtifactError,
)
from ..data import ImageSet, Sample, load_image
from ..data.synth import PhoneViewSynthesizer, SynthParams
from ..locate import EvalTransform
from ..models import RxVisionModel

DEFAULT_VIEWS = 16  # synthetic phone-style views per reference photo


DEFAULT_SEED = 0


def reference_views(images: list[Image.Image], transform: EvalTransform, views: int,
                    seed: int, params: SynthParams | None = None) -> Tensor:
    """Plain letterboxed references plus ``views`` synthetic phone views of each (uint8).

    Returns:
        Tensor (len(images) * (1 + views), 3, H, W), uint8.
    """
    plain = torch.stack([transform.to_uint8(img) for img in images])  # (R, 3, H, W)
    if views <= 0:
        return plain
    synth = PhoneViewSynthesizer.from_images(images, size=transform.size, params=params,
                                             fill=transform.fill)
    g = torch.Generator().manual_seed(seed)
    classes = torch.arange(len(images)).repeat_interleave(views)
    rendered, _ = synth.render(classes, g)  # (R * views, 3, H, W)
    return torch.cat([plain, rendered])


@torch.inference_mode()
def embed_uint8(model: RxVisionModel, transform: EvalTransform, views: Tensor,
                batch_size: int = 32) -> Tensor:
    """Pre-logit embeddings (N, D) of uint8 views (N, 3, H, W)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(views), batch_size):
        x = transform.normalize(views[start:start + batch_size]).to(device)
        out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out)


def label_embeddings(model: RxVisionModel, transform: EvalTransform,
                     references: dict[str, list[Image.Image]], views: int = DEFAULT_VIEWS,
                     seed: int = DEFAULT_SEED, params: SynthParams | None = None,
                     batch_size: int = 32, progress: bool = True) -> list[Tensor]:
    """Pre-logit embeddings (V, D) of each label's views, in ``references`` order.

    Label ``i``'s views use seed ``seed + i``. ``progress`` shows a bar on stderr when
    there are more than a few labels.
    """
    model.eval()
    bar = tqdm(references.values(), desc="reference views", unit="label", leave=False,
               disable=not progress or len(references) < 8)
    return [embed_uint8(model, transform,
                        reference_views(images, transform, views, seed + i, params), batch_size)
            for i, images in enumerate(bar)]


def label_prototypes(model: RxVisionModel, transform: EvalTransform,
                     references: dict[str, list[Image.Image]], views: int = DEFAULT_VIEWS,
                     seed: int = DEFAULT_SEED, params: SynthParams | None = None,
                     batch_size: int = 32, progress: bool = True) -> Tensor:
    """Mean pre-logit embedding of each label's views (:func:`label_embeddings`): (L, D)."""
    return torch.stack([e.mean(0) for e in label_embeddings(
        model, transform, references, views, seed, params, batch_size, progress)])


def mean_embedding(model: RxVisionModel) -> Tensor:
    """Mean pre-logit embedding on the training distribution, from the head's BatchNorm.

    The embedding is ``ReLU(BN(x))``; BN output unit ``i`` is ~N(beta_i, gamma_i^2) over
    the data its running statistics were taken on, and a rectified normal has mean
    ``beta·Φ(beta/gamma) + gamma·φ(beta/gamma)``.
    """
    fc = model.classifier.fc
    norms = [m for m in fc if isinstance(m, nn.BatchNorm1d)]
    if len(norms) != 1 or not any(isinstance(m, nn.ReLU) for m in fc):
        raise ArtifactError("centred imprinting needs a head of Linear + BatchNorm1d + ReLU; "
                            "use --imprint plain for this model")
    bn = norms[0]
    beta = bn.bias.detach().float()
    gamma = bn.weight.detach().float().abs().clamp(min=1e-6)
    a = beta / gamma
    normal = torch.distributions.Normal(0.0, 1.0)
    return beta * normal.cdf(a) + gamma * normal.log_prob(a).exp()


def load_references(data: ImageSet, skip: set[str]) -> dict[str, list[Image.Image]]:
    """Each label's reference photos (decoded), in ``data`` order, leaving out ``skip``."""
    refs: dict[str, list[Image.Image]] = {}
    for sample in data.samples:
        if sample.label not in skip:
            refs.setdefault(sample.label, []).append(load_image(sample.path))
    return refs


def uint8_batches(samples: list[Sample], transform: EvalTransform, batch_size: int
                  ) -> Iterator[Tensor]:
    """Decoded, letterboxed photos (B, 3, H, W) uint8, ``batch_size`` at a time."""
    for start in range(0, len(samples), batch_size):
        yield torch.stack([transform.to_uint8(load_image(s.path))
                           for s in samples[start:start + batch_size]])
