"""The fp32 reference of an int8 export: find it, and compare the two evaluations.

An int8 ONNX export's card records the PyTorch artifact it came from (``export.source``:
its path and weights hash). ``rxvision evaluate --backend onnx`` on such an export
evaluates that artifact on the same images with the same settings and reports the
accuracy delta, so quantisation loss is never read off two runs on different data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifact import ArtifactError, read_card
from ..identify.bundled import bundled_model_dir


def fp32_source(card: dict[str, Any]) -> tuple[Path | None, str]:
    """The artifact an int8 export was quantised from, or None and why not.

    Looks at the recorded path, then at the bundled model, and accepts a directory only
    when its weights hash equals the one the export recorded.
    """
    source = (card.get("export") or {}).get("source") or {}
    want = source.get("weights_sha256")
    if not want:
        return None, "the export's card records no source weights hash"
    tried = []
    for candidate in (source.get("path"), bundled_model_dir()):
        if not candidate:
            continue
        path = Path(candidate)
        try:
            found = read_card(path).get("weights", {}).get("sha256")
        except ArtifactError:
            tried.append(f"{path} (no artifact)")
            continue
        if found == want:
            return path, "weights hash matches the export's source"
        tried.append(f"{path} (other weights)")
    return None, (f"source weights {want[:12]} not found; tried " + ", ".join(tried)
                  if tried else f"source weights {want[:12]}: no path recorded")


def compare(int8: dict[str, Any], fp32: dict[str, Any], source: Path) -> dict[str, Any]:
    """Top-1/top-5 (and per group) of both evaluations and their differences in points."""

    def delta(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(100 * (a - b), 2)

    out: dict[str, Any] = {"fp32_source": str(source)}
    for key in ("top1", "top5", "ece"):
        out[f"fp32_{key}"], out[f"int8_{key}"] = fp32.get(key), int8.get(key)
    out["delta_top1_points"] = delta(int8.get("top1"), fp32.get("top1"))
    out["delta_top5_points"] = delta(int8.get("top5"), fp32.get("top5"))
    groups = {}
    for name, m in (int8.get("groups") or {}).items():
        ref = (fp32.get("groups") or {}).get(name)
        if isinstance(m, dict) and isinstance(ref, dict):
            groups[name] = {"fp32_top1": ref.get("top1"), "int8_top1": m.get("top1"),
                            "delta_top1_points": delta(m.get("top1"), ref.get("top1"))}
    if groups:
        out["groups"] = groups
    return out


def format_comparison(study: dict[str, Any]) -> str:
    """One line for the evaluate summary."""
    if not study.get("available", True):
        return f"  int8 vs fp32: no fp32 reference ({study['reason']})"
    line = (f"  int8 vs fp32 ({study['fp32_source']}): top-1 {study['int8_top1']:.4f} vs "
            f"{study['fp32_top1']:.4f} ({study['delta_top1_points']:+.2f} pt), top-5 "
            f"{study['delta_top5_points']:+.2f} pt")
    for name, g in (study.get("groups") or {}).items():
        if g["delta_top1_points"] is not None:
            line += f"; [{name}] {g['delta_top1_points']:+.2f} pt"
    return line
