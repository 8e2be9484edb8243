"""The calibrated temperature, by the pill's size in the photo.

A crop model sees every pill at one scale, but a pill that spans few photo pixels arrives
as an enlarged, soft crop: at the same logits the classifier is right less often than for
a sharp one. One temperature fitted over mixed sizes is then over-confident on small pills
and under-confident on large ones (the sixth bundled model, one T = 1.09 fitted at 512 px:
ECE 0.019 at 512 px, 0.142 at 1024 px). A temperature that depends on the pill's size fixes
both:

    T(px) = exp(log_t + slope * ln(clip(px, px_min, px_max) / px_ref))

where ``px`` is the longer side of the pill's box in the decoded photo. Above ``px_max``
(the crop's own pill size, ``fill`` x the input side) the crop holds no more detail, so
the temperature stops changing; below ``px_min`` the pipeline asks for a retake anyway.
Photos whose pill size is unknown (whole-photo models, crops given directly) keep the
card's single ``calibration.temperature``.

The card stores it as ``calibration.size_temperature``; ``rxvision calibrate`` fits it on
independent renders of several resolutions
(:func:`rxvision.engine.calibration.fit_size_temperature`).

Example:
    >>> st = SizeTemperature.from_card(card)               # None when the card has none
    >>> temps = row_temperatures(1.09, st, [64.0, 210.0])   # array([1.31, 0.88])
    >>> log_probs = log_softmax(logits / temps[:, None])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..artifact import ArtifactError

PX_REF = 100.0  # the size at which T = exp(log_t)


@dataclass(frozen=True)
class SizeTemperature:
    """``T(px) = exp(log_t + slope * ln(clip(px, px_min, px_max) / px_ref))``."""

    log_t: float
    slope: float
    px_min: float
    px_max: float
    px_ref: float = PX_REF

    def __post_init__(self) -> None:
        values = (self.log_t, self.slope, self.px_min, self.px_max, self.px_ref)
        if not all(math.isfinite(v) for v in values):
            raise ArtifactError(f"size temperature has a non-finite value: {self}")
        if not 0 < self.px_min < self.px_max or self.px_ref <= 0:
            raise ArtifactError(f"size temperature needs 0 < px_min < px_max and px_ref > 0, "
                                f"got {self}")

    def __call__(self, pill_px: Any) -> np.ndarray:
        """Temperatures (N,) for pill sizes (N,) in photo pixels (all must be > 0)."""
        px = np.clip(np.asarray(pill_px, dtype=np.float64), self.px_min, self.px_max)
        return np.exp(self.log_t + self.slope * np.log(px / self.px_ref))

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> SizeTemperature | None:
        """The card's ``calibration.size_temperature`` (None when it has none).

        Raises:
            ArtifactError: the entry is malformed (missing or non-numeric fields).
        """
        entry = (card.get("calibration") or {}).get("size_temperature")
        if entry is None:
            return None
        try:
            return cls(float(entry["log_t"]), float(entry["slope"]), float(entry["px_min"]),
                       float(entry["px_max"]), float(entry.get("px_ref", PX_REF)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"card calibration.size_temperature is malformed ({exc!r}); "
                                "rerun `rxvision calibrate`") from exc

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}

    def describe(self) -> str:
        """E.g. "T 1.36 at 50 px .. 0.88 at 180 px and above"."""
        lo, hi = self([max(self.px_min, 50.0), self.px_max])
        return (f"T {lo:.3g} at {max(self.px_min, 50.0):.0f} px .. {hi:.3g} at "
                f"{self.px_max:.0f} px and above")


def row_temperatures(temperature: float, by_size: SizeTemperature | None,
                     pill_px: Any | None) -> float | np.ndarray:
    """Each row's temperature: by size where the pill's size is known (> 0), else the
    single ``temperature``; the single one when there is no size model or no sizes."""
    if by_size is None or pill_px is None:
        return temperature
    px = np.asarray(pill_px, dtype=np.float64).ravel()
    known = np.isfinite(px) & (px > 0)
    return np.where(known, by_size(np.where(known, px, by_size.px_ref)), temperature)
