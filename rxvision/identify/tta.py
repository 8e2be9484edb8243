"""Test-time augmentation over right-angle rotations.

A pill has no "up": a photo turned by 90 degrees shows the same pill. :class:`RotationTTA`
runs a model on 1, 2 (0 and 180 degrees) or 4 (0, 90, 180, 270 degrees) rotated copies of
each preprocessed image in one batch and averages the logits (and embeddings, for open-set
scores). With 4 rotations the result is exactly invariant to right-angle turns of the input;
it costs that many forward passes. NumPy batches stay NumPy (the ONNX serving path never
imports torch); torch batches stay torch.

Averaged logits are a little less extreme than single-pass ones, so the temperature and
thresholds should be fitted with the same setting: ``rxvision calibrate --tta N`` does, and
records ``calibration.tta = N`` in the card. That is then the model's default number of
rotations (:func:`card_tta`; cards without it mean 1); ``--tta`` overrides it.

Example:
    >>> backend = RotationTTA(load_backend("runs/c3pi"), rotations=4)
    >>> logits = backend(batch)  # (B, C), averaged over 4 rotations
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..artifact import ArtifactError

ROTATIONS = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3)}  # number of copies -> quarter turns
TTA_CHOICES = tuple(ROTATIONS)


def card_tta(card: dict[str, Any]) -> int:
    """The rotations a card was calibrated with (``calibration.tta``); 1 when absent.

    Raises:
        ArtifactError: the card holds a value other than 1, 2 or 4.
    """
    value = (card.get("calibration") or {}).get("tta", 1)
    if isinstance(value, bool) or value not in ROTATIONS:
        raise ArtifactError(f"card calibration.tta must be one of {TTA_CHOICES}, got {value!r}")
    return int(value)


def calibration_mismatch(card: dict[str, Any], rotations: int) -> str | None:
    """A note when a calibrated card runs with other rotations than it was calibrated for.

    The temperature, class centres and thresholds were fitted on logits averaged over
    ``calibration.tta`` rotations; with another number they still rank pills the same way
    but the confidences and the abstain/unknown decisions are no longer fitted. ``None``
    when the numbers agree or the card holds no temperature.
    """
    if "temperature" not in (card.get("calibration") or {}):
        return None
    fitted = card_tta(card)
    if fitted == rotations:
        return None
    return (f"the model was calibrated with {fitted} rotation(s) per photo but runs with "
            f"{rotations}: confidences and thresholds were not fitted for this setting "
            f"(refit: rxvision calibrate --tta {rotations} --thresholds ...)")


def with_rotations(inner: Any, rotations: int, input_size: Any = None) -> Any:
    """``inner`` wrapped in :class:`RotationTTA`, or ``inner`` itself for 1 rotation.

    ``input_size`` (height, width) defaults to ``inner.preprocessing["input_size"]``.

    Raises:
        ArtifactError: rotations asked of a model whose input is not square (a quarter turn
            would change its shape).
    """
    if rotations == 1:
        return inner
    size = input_size or (getattr(inner, "preprocessing", None) or {}).get("input_size")
    if size is not None and size[0] != size[1]:
        raise ArtifactError(f"rotation TTA needs a square input; this model's is "
                            f"{size[0]}x{size[1]} (use --tta 1)")
    return RotationTTA(inner, rotations)


def resolve_rotations(card: dict[str, Any], requested: int | None = None) -> int:
    """The one rule every command follows: ``--tta N`` wins, then ``calibration.tta``, then 1."""
    return card_tta(card) if requested is None else requested


def apply_tta(inner: Any, card: dict[str, Any], requested: int | None = None,
              input_size: Any = None) -> tuple[Any, int]:
    """``inner`` with the rotations of :func:`resolve_rotations`; and how many."""
    rotations = resolve_rotations(card, requested)
    return with_rotations(inner, rotations, input_size), rotations


class RotationTTA:
    """Wrap a backend or runner (batch -> logits, or -> (logits, embeddings))."""

    def __init__(self, inner: Any, rotations: int = 4):
        if rotations not in ROTATIONS:
            raise ValueError(f"rotations must be one of {sorted(ROTATIONS)}, got {rotations}")
        self.inner = inner
        self.rotations = rotations

    def __getattr__(self, name: str) -> Any:
        # labels, card, preprocessing, temperature, model ... come from the wrapped object.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _expand(self, batch: Any) -> Any:
        """(B, 3, H, W) -> (k·B, 3, H, W): the k rotated copies, rotation-major."""
        if batch.shape[-1] != batch.shape[-2]:
            raise ValueError(f"rotation TTA needs square inputs, got {tuple(batch.shape[-2:])}")
        turns = ROTATIONS[self.rotations]
        if isinstance(batch, np.ndarray):
            return np.concatenate([np.rot90(batch, k, axes=(-2, -1)) for k in turns])
        import torch  # a torch batch: torch is loaded already

        return torch.cat([torch.rot90(batch, k, dims=(-2, -1)) for k in turns])

    def _mean(self, out: Any, n: int) -> Any:
        """(k·B, ...) -> (B, ...) float32, averaged over the rotations (NumPy or torch)."""
        out = out.astype(np.float32, copy=False) if isinstance(out, np.ndarray) else out.float()
        return out.reshape(self.rotations, n, *out.shape[1:]).mean(0)

    def __call__(self, batch: Any) -> Any:
        out = self.inner(self._expand(batch))
        if isinstance(out, tuple):
            return tuple(self._mean(o, len(batch)) for o in out)  # type: ignore[return-value]
        return self._mean(out, len(batch))

    def logits_and_embeddings(self, batch: Any) -> tuple[Any, Any]:
        logits, emb = self.inner.logits_and_embeddings(self._expand(batch))
        return self._mean(logits, len(batch)), self._mean(emb, len(batch))
