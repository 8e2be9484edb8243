"""Where the model looked: self-attention and Grad-CAM overlays on the letterboxed input.

- **Attention**: the attention map (B, heads, N, N) over the N = h*w tokens of the coarsest
  pyramid level; the attention each token *receives*, averaged over heads and queries, is
  reshaped to the (h, w) grid, upsampled and overlaid. It shows which regions the other
  regions consult, which is where the distinguishing detail (imprint, score line) tends to be.
- **Grad-CAM** (Selvaraju et al., 2017) on the last backbone stage: the stage's activations
  weighted by the spatial mean of the top class logit's gradient, ReLU, normalised.

Both are drawn on the image the network actually saw (letterboxed to the input size), so
the overlay size is the card's input size.

Example:
    >>> overlays = explain_image(model, EvalTransform(card["preprocessing"]), pil_image)
    >>> write_overlays("out/", "photo", overlays)  # photo_attention.png, photo_gradcam.png
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

from ..data import EvalTransform
from ..io_utils import atomic_write_bytes
from ..models import RxVisionModel

COLORMAP = "jet"
ALPHA = 0.45  # weight of the heat map in the blend; the pill stays readable underneath


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


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = ALPHA) -> Image.Image:
    """Blend a [0, 1] heat map (any grid) over ``image``, upsampled bilinearly to its size."""
    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=(image.height, image.width), mode="bilinear",
                       align_corners=False)[0, 0].clamp(0, 1).numpy()
    colored = (colormaps[COLORMAP](up)[..., :3] * 255).astype(np.uint8)  # (H, W, 3)
    return Image.blend(image.convert("RGB"), Image.fromarray(colored, "RGB"), alpha)


def explain_image(model: RxVisionModel, transform: EvalTransform, image: Image.Image,
                  class_index: int | None = None) -> dict[str, Image.Image]:
    """Attention and Grad-CAM overlays on the letterboxed ``image``.

    Returns:
        ``{"attention": PIL RGB, "gradcam": PIL RGB}``, each of the card's input size.
    """
    was_training = model.training
    model.eval()
    try:
        boxed_uint8 = transform.to_uint8(image)  # (3, H, W)
        boxed = Image.fromarray(boxed_uint8.permute(1, 2, 0).numpy(), "RGB")
        device = next(model.parameters()).device
        x = transform.normalize(boxed_uint8)[None].to(device)  # (1, 3, H, W)
        attention = attention_heatmap(model, x)
        cam, _ = gradcam_heatmap(model, x, class_index)
    finally:
        model.train(was_training)
    return {"attention": overlay(boxed, attention), "gradcam": overlay(boxed, cam)}


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
