"""From the segmenter's two probability maps to one mask per pill.

Pixels above the foreground threshold are pill; connected regions of them may hold several
touching pills. Each pill has a core (its deep interior), and cores of touching pills are
apart, so every core is one pill: the region's pixels go to the nearest core. A region
without any core above threshold (a pill so small or faint that its core did not fire) is
one pill. Regions smaller than ``min_area`` pixels or with a mean foreground probability
below ``min_score`` are dropped as specks.

Example:
    >>> labels, scores = split_instances(foreground, core, InstanceThresholds())
    >>> labels.max()            # number of pills; labels == k is the k-th pill's mask
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class InstanceThresholds:
    """Decision thresholds (stored in the segmenter's card)."""

    foreground: float = 0.5
    core: float = 0.5
    min_area: int = 16  # pixels at the working size: smaller regions are specks
    min_core_area: int = 2
    min_score: float = 0.6  # mean foreground probability over the pill
    # Two touching parts of one region are one pill when their union is this convex (area
    # over convex-hull area): the network often gives each half of a two-coloured capsule a
    # core of its own. Two equal discs side by side score 0.85, overlapping by a fifth 0.91;
    # 0.9 merged most split capsules without costing recall on held-out composites.
    merge_solidity: float = 0.9
    # Regions cut by the photo's frame are not reported: a pill partly outside the photo
    # cannot be identified, and most such regions are sleeves, laptops and fingers.
    keep_cut_by_frame: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceThresholds:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown segmenter threshold keys {sorted(unknown)}")
        return cls(**data)


def split_instances(
    foreground: np.ndarray, core: np.ndarray, thresholds: InstanceThresholds
) -> tuple[np.ndarray, list[float]]:
    """Pill label map (H, W) int32 (0 = background, 1..N) and each pill's score.

    Args:
        foreground: foreground probability (H, W) in [0, 1].
        core: core probability (H, W) in [0, 1].
        thresholds: see :class:`InstanceThresholds`.
    """
    fg = foreground > thresholds.foreground
    regions, _ = ndimage.label(fg)
    cores, _ = ndimage.label((core > thresholds.core) & fg)
    out = np.zeros(fg.shape, dtype=np.int32)
    scores: list[float] = []
    for index, sl in enumerate(ndimage.find_objects(regions), start=1):
        if sl is None:
            continue
        region = regions[sl] == index
        if region.sum() < thresholds.min_area:
            continue
        inside = np.where(region, cores[sl], 0)
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        ids = ids[counts >= thresholds.min_core_area]
        if len(ids) <= 1:
            parts = [region]
        else:
            # Each region pixel joins its nearest core (indices of the nearest core pixel).
            seeds = np.isin(inside, ids)
            iy, ix = ndimage.distance_transform_edt(
                ~seeds, return_distances=False, return_indices=True
            )
            nearest = inside[iy, ix]
            parts = _merge_convex([region & (nearest == i) for i in ids], thresholds.merge_solidity)
        for part in parts:
            area = int(part.sum())
            score = float(foreground[sl][part].mean()) if area else 0.0
            if area < thresholds.min_area or score < thresholds.min_score:
                continue
            if not thresholds.keep_cut_by_frame and _touches_frame(part, sl, fg.shape):
                continue
            scores.append(score)
            out[sl][part] = len(scores)
    return out, scores


def _touches_frame(part: np.ndarray, sl: tuple[slice, slice], shape: tuple[int, ...]) -> bool:
    """Whether ``part`` (a mask inside the slices ``sl`` of a map of ``shape``) reaches its edge."""
    h, w = shape[:2]
    rows, cols = np.nonzero(part)
    return bool(
        sl[0].start + rows.min() == 0
        or sl[1].start + cols.min() == 0
        or sl[0].start + rows.max() == h - 1
        or sl[1].start + cols.max() == w - 1
    )


def solidity(mask: np.ndarray, degenerate: float = 1.0) -> float:
    """Area over convex-hull area of a boolean mask (about 1 for convex shapes);
    ``degenerate`` for a mask of under 8 pixels or all on a line (no hull)."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    if len(xs) < 8:
        return degenerate
    try:
        hull = ConvexHull(np.c_[xs, ys].astype(np.float64))
    except QhullError:  # all on a line
        return degenerate
    # Hull through pixel centres, grown by half a pixel all round (perimeter / 2 + 1).
    return float(len(xs) / (hull.volume + hull.area / 2 + 1))


def _merge_convex(parts: list[np.ndarray], threshold: float) -> list[np.ndarray]:
    """Merge touching parts whose union is convex, most convex pair first."""
    parts = list(parts)
    while len(parts) > 1:
        best: tuple[float, int, int] | None = None
        for i in range(len(parts)):
            grown = ndimage.binary_dilation(parts[i])
            for j in range(i + 1, len(parts)):
                if not (grown & parts[j]).any():
                    continue
                value = solidity(parts[i] | parts[j])
                if value >= threshold and (best is None or value > best[0]):
                    best = (value, i, j)
        if best is None:
            break
        _, i, j = best
        parts[i] = parts[i] | parts[j]
        del parts[j]
    return parts
