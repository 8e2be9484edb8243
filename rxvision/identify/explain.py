"""Where the model looked: attention, Grad-CAM and occlusion overlays on the letterboxed input.

- **Attention**: the attention map (B, heads, N, N) over the N = h*w tokens of the coarsest
  pyramid level; the attention each token *receives*, averaged over heads and queries, is
  reshaped to the (h, w) grid, upsampled and overlaid. It shows which regions the other
  regions consult, which is where the distinguishing detail (imprint, score line) tends to be.
- **Grad-CAM** (Selvaraju et al., 2017) on the last backbone stage: the stage's activations
  weighted by the spatial mean of the top class logit's gradient, ReLU, normalised. In this
  architecture the gradient reaches that stage through global self-attention (which mixes
  all tokens) and the head also pools the finer pyramid levels, so Grad-CAM can point away
  from the evidence; read it next to the occlusion map.
- **Occlusion** (Zeiler & Fergus, 2014): the input is covered patch by patch with the
  normalisation mean (zeros after normalisation) and the top class's probability recomputed;
  the map shows the fraction of the probability lost when the patch centred there is
  hidden. It measures what the answer depends on, at the cost of about 100 forward passes
  (10 x 10 patches at 224 px).

Both are drawn on the image the network actually saw (letterboxed to the input size), so
the overlay size is the card's input size.

Example:
    >>> overlays = explain_image(model, EvalTransform(card["preprocessing"]), pil_image)
    >>> write_overlays("out/", "photo", overlays)  # photo_{attention,gradcam,occlusion}.png
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from ..io_utils import atomic_write_bytes
from ..locate import EvalTransform
from ..models import RxVisionModel

COLORMAP = "jet"
ALPHA = 0.45  # weight of the heat map in the blend; the pill stays readable underneath
OCCLUSION_PATCH_FRACTION = 0.2  # patch side / input side: about a pill side in a 'both' view
OCCLUSION_BATCH = 32


def attention_heatmap(model: RxVisionModel, x: Tensor) -> np.ndarray:
    """Attention received per token, on the coarsest-level grid, for one input (1, 3, H, W).

    Returns:
        Float array (h, w) in [0, 1].
    """
    with torch.no_grad():
        maps, attn = model.forward_features(x, return_attention=True)
    h, w = maps[-1].shape[-2:]  # grid of the attended level, e.g. 7 x 7 at 224 px
    received = attn[0].mean(dim=0).mean(dim=0)  # (N,): average over heads, then queries
    return _normalise(received.reshape(h, w).float().cpu().numpy())


def gradcam_heatmap(model: RxVisionModel, x: Tensor, class_index: int | None = None
                    ) -> tuple[np.ndarray, int]:
    """Grad-CAM on the last backbone stage for ``class_index`` (default: the top class).

    Returns:
        (heat map (h, w) in [0, 1] on the last stage's grid, the class explained).
    """
    captured: dict[str, Tensor] = {}

    def keep_last_stage(_module: torch.nn.Module, _inputs: object, output: list[Tensor]) -> None:
        act = output[-1]  # (1, C, h, w): the last feature map the backbone returns
        act.retain_grad()
        captured["act"] = act

    handle = model.backbone.register_forward_hook(keep_last_stage)
    try:
        with torch.enable_grad():
            # Gradients must reach the last stage even when the backbone is frozen.
            logits = model(x.detach().clone().requires_grad_(True))
            index = int(logits[0].argmax()) if class_index is None else int(class_index)
            logits[0, index].backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    act, grad = captured["act"].detach(), captured["act"].grad
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = F.relu((weights * act).sum(dim=1))[0]  # (h, w)
    return _normalise(cam.float().cpu().numpy()), index


@torch.no_grad()
def occlusion_heatmap(model: torch.nn.Module, x: Tensor, class_index: int | None = None,
                      patch: int | None = None, stride: int | None = None
                      ) -> tuple[np.ndarray, int]:
    """Fraction of the class probability lost when each region of ``x`` (1, 3, H, W) is hidden.

    Square patches of side ``patch`` (default a fifth of the shorter input side) step by
    ``stride`` (default half a patch) so that they also cover the bottom and right edges;
    each is filled with zeros, i.e. the normalisation mean. Each patch scores
    ``max(0, p - p_hidden) / p`` for the explained class at its centre; pixels between
    centres are interpolated bilinearly.

    Returns:
        (heat map (H, W) in [0, 1] on the input grid, the class explained).
    """
    _, _, H, W = x.shape
    p_full = model(x).float().softmax(dim=-1)[0]
    index = int(p_full.argmax()) if class_index is None else int(class_index)
    p_ref = float(p_full[index])
    patch = patch or max(1, round(min(H, W) * OCCLUSION_PATCH_FRACTION))
    if not 0 < patch <= min(H, W):
        raise ValueError(f"occlusion patch must be in 1..{min(H, W)} pixels, got {patch}")
    stride = stride or max(1, patch // 2)
    tops = _positions(H, patch, stride)
    lefts = _positions(W, patch, stride)
    corners = [(t, left) for t in tops for left in lefts]
    lost = []
    for start in range(0, len(corners), OCCLUSION_BATCH):
        chunk = corners[start : start + OCCLUSION_BATCH]
        hidden = x.repeat(len(chunk), 1, 1, 1)
        for i, (t, left) in enumerate(chunk):
            hidden[i, :, t : t + patch, left : left + patch] = 0.0
        p = model(hidden).float().softmax(dim=-1)[:, index]
        lost.append((p_ref - p).clamp(min=0) / max(p_ref, 1e-12))
    drops = torch.cat(lost).view(len(tops), len(lefts)).cpu().numpy()
    # The drop belongs to the patch centre; pixels in between interpolate (bilinear, clamped
    # at the borders), which reads like the other overlays instead of a mosaic of squares.
    rows = np.stack([np.interp(np.arange(H) + 0.5, np.asarray(tops) + patch / 2, drops[:, c])
                     for c in range(len(lefts))], axis=1)  # (H, n_lefts)
    heat = np.stack([np.interp(np.arange(W) + 0.5, np.asarray(lefts) + patch / 2, rows[y])
                     for y in range(H)])  # (H, W)
    return np.clip(heat, 0.0, 1.0).astype(np.float32), index


def _positions(length: int, patch: int, stride: int) -> list[int]:
    """Patch offsets from 0 in steps of ``stride``, the last one flush with the far edge."""
    last = length - patch
    offsets = list(range(0, last + 1, stride))
    if offsets[-1] != last:
        offsets.append(last)
    return offsets


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = ALPHA) -> Image.Image:
    """Blend a [0, 1] heat map (any grid) over ``image``, upsampled bilinearly to its size.

    Attention and Grad-CAM maps are scaled so their maximum is 1; the occlusion map is in
    absolute units (fraction of the probability lost), so its colours compare across images.
    """
    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=(image.height, image.width), mode="bilinear",
                       align_corners=False)[0, 0].clamp(0, 1).numpy()
    colored = (colormaps[COLORMAP](up)[..., :3] * 255).astype(np.uint8)  # (H, W, 3)
    return Image.blend(image.convert("RGB"), Image.fromarray(colored, "RGB"), alpha)


def explain_image(model: RxVisionModel, transform: EvalTransform, image: Image.Image,
                  class_index: int | None = None) -> dict[str, Image.Image]:
    """Attention, Grad-CAM and occlusion overlays on the letterboxed ``image``.

    All three explain the same class: ``class_index``, else the top class.

    Returns:
        ``{"attention": ..., "gradcam": ..., "occlusion": ...}``, PIL RGB images of the
        card's input size.
    """
    was_training = model.training
    model.eval()
    try:
        boxed_uint8 = transform.to_uint8(image)  # (3, H, W)
        boxed = Image.fromarray(boxed_uint8.permute(1, 2, 0).numpy(), "RGB")
        device = next(model.parameters()).device
        x = transform.normalize(boxed_uint8)[None].to(device)  # (1, 3, H, W)
        attention = attention_heatmap(model, x)
        cam, index = gradcam_heatmap(model, x, class_index)
        hidden, _ = occlusion_heatmap(model, x, index)
    finally:
        model.train(was_training)
    return {"attention": overlay(boxed, attention), "gradcam": overlay(boxed, cam),
            "occlusion": overlay(boxed, hidden)}


def write_overlays(out_dir: str | Path, stem: str, overlays: dict[str, Image.Image]
                   ) -> list[Path]:
    """Write ``<stem>_<kind>.png`` for each overlay atomically; return the paths."""
    paths = []
    for kind, img in overlays.items():
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        paths.append(atomic_write_bytes(Path(out_dir) / f"{stem}_{kind}.png", buf.getvalue()))
    return paths


def _normalise(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant map becomes all zeros (nothing stands out)."""
    a = a - a.min()
    top = a.max()
    return a / top if top > 0 else a
