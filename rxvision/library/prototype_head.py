"""Prototype head: rebuild every row of a cosine final layer from reference photos.

A cosine classifier scores ``s · cos(embedding, row)``. After training, each row can be
replaced by its label's *prototype*: the mean pre-logit embedding of the label's reference
photo(s) rendered as phone-style views (:func:`rxvision.library.enroll.label_prototypes`,
the same views enrollment uses). Why:

- **Enrollment on equal terms.** A pill enrolled later gets a row built by exactly the same
  rule as every other row, so new and old pills compete fairly and no offset is needed
  (trained rows have cosine ~0.03 with their own pill's views, prototypes ~0.9).

**The cost:** the trained rows are usually the better classifier for the pills they were
trained on. Measured (docs/identification.md): on the bundled model, 0.837 top-1 with the
trained rows against 0.814 with prototypes; on the shorter-trained 900-pill study model the
prototypes were ahead (0.767 against 0.750). The bundled model keeps its trained rows.

The network weights do not change; the scale ``s`` is kept, and the calibration and
identification thresholds of the source card are dropped (they were fitted to the old
rows): run ``rxvision calibrate`` on the result. The source's pill finder and drug library
come along; the library's look-alikes are recomputed for the new rows (they are neighbours
of the rows, and the rows changed).

Example:
    >>> record = prototype_head_artifact("runs/c3pi", "data/c3pi/manifest.csv", "runs/proto")
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..artifact import (
    SAVED_CARD_KEYS,
    Artifact,
    ArtifactError,
    load_artifact,
    require_new_output,
    save_artifact,
)
from ..data import DatasetError, ImageSet, load_dataset
from ..data.synth import SynthParams
from ..data.transforms import card_zoom
from ..locate import EvalTransform
from ..locate.segmenter import carry_segmenter
from ..models.layers import CosineClassifier
from .database import LIBRARY_NAME
from .embeddings import DEFAULT_SEED, DEFAULT_VIEWS, label_prototypes, load_references
from .for_model import retie_library
from .imprinting import PROTOTYPE_CARD_KEY, PROTOTYPE_SOURCE

# Card keys save_artifact writes itself, and the thresholds fitted to the old rows (dropped).
_DROPPED_KEYS = SAVED_CARD_KEYS | {"identification"}


def _references(data: ImageSet, labels: list[str]) -> dict[str, list]:
    missing = sorted(set(labels) - set(data.labels))
    extra = sorted(set(data.labels) - set(labels))
    if missing or extra:
        raise DatasetError(
            f"{data.source}: the reference photos must cover exactly the model's labels; "
            f"{len(missing)} label(s) have no photo (e.g. {missing[:3]}), "
            f"{len(extra)} are not in the model (e.g. {extra[:3]}); enroll new labels with "
            "`rxvision enroll`")
    refs = load_references(data, skip=set())
    return {label: refs[label] for label in labels}  # the model's row order


@torch.no_grad()
def rebuild_rows(art: Artifact, data: ImageSet, views: int = DEFAULT_VIEWS,
                 seed: int = DEFAULT_SEED, batch_size: int = 32) -> None:
    """Replace every row of ``art.model``'s cosine layer by its label's prototype, in place."""
    head = art.model.get_classifier()
    if not isinstance(head, CosineClassifier):
        raise ArtifactError("a prototype head needs a cosine final layer "
                            "(architecture.classifier.type: cosine)")
    aug = art.config.augment
    # The views training rendered, in the model's framing (whole photo or pill crop).
    params = SynthParams.for_training(aug)
    refs = _references(data, art.labels)
    zoom = "off" if aug.framing == "crop" else None  # a crop model's views are crops
    protos = label_prototypes(art.model, EvalTransform(art.preprocessing, zoom), refs, views,
                              seed, params, batch_size)
    head.weight.copy_(F.normalize(protos, dim=1).to(head.weight))
    head.offset.zero_()  # every row now follows one rule; enrolled rows' offsets go too


def prototype_head_artifact(model_path: str | Path, data_path: str | Path, out: str | Path,
                            views: int = DEFAULT_VIEWS, seed: int = DEFAULT_SEED,
                            batch_size: int = 32) -> dict[str, Any]:
    """Load ``model_path``, rebuild its rows from ``data_path``, save to ``out`` with the
    source's pill finder and drug library (look-alikes recomputed for the new rows).

    The finder and the library are built beside the new weights before anything is
    published: if either fails, ``out`` is left as it was.

    Returns:
        The record written to the card under ``classifier_rows``; ``library`` names the
        re-tied library file (None: the source has none).
    """
    model_path, out = Path(model_path), Path(out)
    require_new_output(model_path, out)
    art = load_artifact(model_path)
    data = load_dataset(data_path)
    rebuild_rows(art, data, views, seed, batch_size)
    card = art.card
    record = {
        "source": PROTOTYPE_SOURCE, "data": str(data_path), "views_per_reference": views,
        "seed": seed, "references": len(data.samples),
        "base_model": {"path": str(model_path), "sha256": card.get("weights", {}).get("sha256"),
                       "metrics": card.get("metrics", {})},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    extra = {k: v for k, v in card.items() if k not in _DROPPED_KEYS}
    extra[PROTOTYPE_CARD_KEY] = record
    source_library = model_path / LIBRARY_NAME
    tied = source_library.is_file()

    def parts(staging: Path) -> None:  # published with the model, or not at all
        carry_segmenter(model_path, staging)  # a crop model keeps its pill finder
        if tied:
            retie_library(source_library, staging, published_as=out)

    save_artifact(out, art.model, art.config, art.labels, art.label_metadata, metrics={},
                  calibration=None, extra=extra,
                  half=card.get("weights", {}).get("dtype") == "float16",
                  zoom=card_zoom(card["preprocessing"]), parts=parts)
    return {**record, "library": str(out / LIBRARY_NAME) if tied else None}
