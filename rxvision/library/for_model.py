"""The library inside a model artifact: ``library.sqlite`` beside ``card.json``.

A model's library holds the facts of the model's own labels and, for these weights, each
label's look-alikes by the model's class rows (:mod:`.appearance`). It is built from a
manifest with the facts columns (c3pi-4k's), keeping only the model's labels:

    rxvision library build ../shared/data/c3pi-4k/manifest.csv --for-model models/rxvision-c3pi-4k

Example:
    >>> build = build_model_library("../shared/data/c3pi-4k/manifest.csv", "runs/c3pi")
    >>> build.path, build.missing
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifact import Artifact, load_artifact, read_card
from .appearance import Appearance
from .database import LIBRARY_NAME, build_library, open_library, write_library
from .errors import LibraryError


@dataclass
class ModelLibrary:
    """What :func:`build_model_library` wrote."""

    path: Path
    labels: int  # the model's labels
    missing: list[str] = field(default_factory=list)  # model labels without a manifest row


def class_rows(art: Artifact) -> np.ndarray:
    """The final layer's class rows (C, D) as float32 (weights, or prototypes)."""
    weight = getattr(art.model.get_classifier(), "weight", None)
    if weight is None:
        raise LibraryError(f"{art.path}: the final layer has no class rows to compare")
    return weight.detach().float().cpu().numpy()


def model_appearance(art: Artifact, source: str | Path | None = None) -> Appearance:
    """The artifact's class rows as :class:`Appearance`, fingerprinted by its weights;
    ``source`` names the model in the library (default: where ``art`` was loaded from)."""
    sha = (art.card.get("weights") or {}).get("sha256")
    if not sha:
        raise LibraryError(f"{art.path}: card has no weights SHA-256 to tie look-alikes to")
    return Appearance(art.labels, class_rows(art), sha, source=str(source or art.path))


def build_model_library(manifest: str | Path, model_dir: str | Path) -> ModelLibrary:
    """Write ``model_dir/library.sqlite`` from ``manifest``'s rows of the model's labels.

    Raises:
        LibraryError: an export (no torch weights: build for its source, then export), or
            a manifest holding none of the model's labels.
    """
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    if "export" in card:
        raise LibraryError(
            f"{model_dir} is an export: build the library for its source model "
            f"({card['export'].get('source', {}).get('path')}) and export again "
            "(export copies the library)"
        )
    art = load_artifact(model_dir)
    path = build_library(
        manifest, model_dir / LIBRARY_NAME, labels=art.labels, appearance=model_appearance(art)
    )
    with open_library(path, verify=True) as lib:
        have = set(lib.labels())
    return ModelLibrary(path, len(art.labels), [lab for lab in art.labels if lab not in have])


def retie_library(library: str | Path, model_dir: str | Path,
                  published_as: str | Path | None = None) -> ModelLibrary:
    """Write ``model_dir/library.sqlite`` from another library's facts, with look-alikes
    recomputed for ``model_dir``'s weights (a re-saved model: fp16 bundle, new rows).

    Only the model's labels are kept; photographs keep resolving (the image root is
    rewritten for the new folder). ``published_as`` names the model in the library when
    ``model_dir`` is a staging folder (see ``save_artifact(parts=...)``).
    """
    model_dir = Path(model_dir)
    art = load_artifact(model_dir)
    with open_library(library) as lib:
        facts, root, source = lib.all_facts(), lib.image_root, lib.meta.get("source", "")
    wanted = set(art.labels)
    kept = [f for f in facts if f.label in wanted]
    if not kept:
        raise LibraryError(f"{library} holds none of {model_dir}'s {len(wanted)} labels")
    path = write_library(
        kept,
        model_dir / LIBRARY_NAME,
        image_root=root,
        source=source,
        appearance=model_appearance(art, published_as),
    )
    have = {f.label for f in kept}
    return ModelLibrary(path, len(art.labels), [lab for lab in art.labels if lab not in have])
