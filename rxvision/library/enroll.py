"""Enrollment: teach a trained model new pills from reference photos, without training.

For each new label, its reference photo(s) are rendered as several phone-style views with
the same synthesiser training used (:class:`rxvision.data.synth.PhoneViewSynthesizer`,
seeded, with the model's own ``augment`` settings), plus the plain letterboxed photo. The
mean of their 512-d pre-logit embeddings is the label's prototype ``m``, which is
*imprinted* (Qi et al., 2018) as a new row of the final layer.

Cosine final layer (``classifier.type: cosine``; logits ``s·(cos(e, w) - offset)``):

- ``lean`` (default for trained rows): ``a·μ̂ + sqrt(1 - a²)·normalise(m⊥)``, the prototype's
  direction orthogonal to the mean embedding ``μ̂`` plus the trained rows' mean lean ``a`` on
  it (trained rows point away from ``μ̂``, post-ReLU prototypes towards it). Even so a new
  row's cosine with its own pill's photos is far higher than a trained row's with its own
  (0.21 against 0.03 in the 900-pill study), so the new rows also get an ``offset``:
  ``offset="auto"`` (:func:`fit_offset`) subtracts the difference of the two means, the
  trained rows' measured by ``rxvision calibrate`` on held-out views, the new rows' on fresh
  synthetic views of the new pills.
- ``prototype`` (default when every row is a prototype, ``rxvision prototypes``):
  ``normalise(m)``, the same rule as the rows it joins, no offset.

Linear final layer, two rules:

``centred`` (default), with ``w̄, b̄`` the mean existing row and bias, ``μ`` the mean
embedding and ``α = mean ||w_c - w̄||``::

    p = normalise(m - μ)     weight_new = w̄ + scale·α·p     bias_new = b̄ - scale·α·(p·μ)

so ``logit_new(e) = w̄·e + b̄ + scale·α·(e - μ)·p``: the new row shares the trained rows'
common part and differs from it by a deviation as long as theirs, pointing from the mean
embedding to the new pill. ``μ`` needs no data: the embedding is ``ReLU(BN(...))``, and
after BatchNorm each unit is ~N(β, γ²) on the training distribution, so
``μ = β·Φ(β/γ) + γ·φ(β/γ)`` (the mean of a rectified normal).

``plain`` (the textbook recipe for normalised classifiers)::

    weight_new = normalise(m) · mean ||w_c|| · scale     bias_new = b̄

Why ``centred`` is the default: the embeddings are non-negative (after a ReLU), so any two
embeddings have a high cosine similarity, while trained rows have almost no component along
the mean embedding (softmax gradients sum to zero over classes). A ``plain`` row therefore
scores *every* photo highly, and new pills take over old pills' answers. In a CPU-sized
study (``benchmarks/enroll_imprint_sim.py``: frozen ImageNet features, trained head, 120
known + 30 enrolled c3pi pills) ``plain`` kept 0% of the old pills' confident correct
answers at every scale; ``centred`` kept 96% / 63% / 24% at scale 0.5 / 0.75 / 1.0, with
26% / 41% / 42% top-1 on the new pills (plain: 43%). ``scale`` trades new-pill accuracy
against old-pill accuracy: ``scale="auto"`` measures that trade on photos of the old
classes and takes the largest scale within a given loss (:func:`choose_scale`).

Both rules copy every existing row and every other weight unchanged, so the old classes'
logits are exactly what they were; an old pill's photo can only change answer if a new pill
now scores higher. Labels the model already knows are an error by default (enrollment must
not silently shadow a trained class); ``on_existing="skip"`` skips them instead.

Example:
    >>> result = enroll_artifact("runs/base", "new_pills/manifest.csv", "runs/base+new")
    >>> result.enrolled, result.references
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..artifact import (
    SAVED_CARD_KEYS,
    Artifact,
    head_precision_problem,
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
from .embeddings import DEFAULT_SEED, DEFAULT_VIEWS, label_embeddings, load_references
from .enroll_facts import enrollment_facts, write_enrolled_library
from .enroll_fit import (
    DEFAULT_MAX_DROP,
    OFFSET_SEED_SHIFT,
    choose_scale,
    extend_class_centres,
    resolve_offset,
)
from .imprinting import (
    DEFAULT_IMPRINT,
    EnrollmentError,
    imprint,
    prototype_settings,
    resolve_method,
)


@dataclass
class EnrollmentResult:
    """What an enrollment did."""

    enrolled: list[str]
    skipped: list[str] = field(default_factory=list)
    references: dict[str, int] = field(default_factory=dict)  # label -> reference photos
    views_per_reference: int = DEFAULT_VIEWS
    imprint: str = DEFAULT_IMPRINT
    scale: float = 1.0
    scale_fit: dict[str, Any] | None = None  # how scale="auto" chose the scale
    offset: float = 0.0  # cosine layers: subtracted from the new rows' cosines
    offset_fit: dict[str, Any] | None = None  # how offset="auto" chose it
    class_centres_fit: dict[str, Any] | None = None  # how the new classes' centres were set
    # All classes' logit centres (calibration.own_logit_means) after enrollment; None when
    # the base card has none. Saved into the card's calibration, not the enrollment record.
    own_logit_means: list[float] | None = None
    output: str | None = None
    library: dict[str, Any] | None = None  # the drug library written beside the new model


def enroll(art: Artifact, data: ImageSet, views: int = DEFAULT_VIEWS, seed: int = DEFAULT_SEED,
           on_existing: str = "error", batch_size: int = 32, method: str = DEFAULT_IMPRINT,
           scale: float | str = 1.0, old_data: ImageSet | None = None,
           max_drop: float = DEFAULT_MAX_DROP, offset: float | str = "auto"
           ) -> tuple[list[str], list[dict[str, str]], EnrollmentResult]:
    """Imprint the labels of ``data`` into ``art.model`` (in place).

    Args:
        scale: Linear layers: a positive number, or ``"auto"``: the largest scale that
            costs the old classes at most ``max_drop`` top-1 on ``old_data`` (see
            :func:`choose_scale`).
        offset: cosine layers: a number subtracted from the new rows' cosines, or
            ``"auto"``: :func:`fit_offset` against the trained rows' own-class cosine, read
            from the card (``rxvision calibrate`` stores it) or measured on ``old_data``;
            0 for ``prototype`` rows, which are built like the rows they join.

    Returns:
        (all labels, all label metadata, what was done).

    Raises:
        DatasetError: ``data`` holds labels the model knows and ``on_existing="error"``,
            nothing is left to enroll, or ``scale="auto"`` without ``old_data``.
    """
    if on_existing not in ("error", "skip"):
        raise EnrollmentError(f"on_existing must be 'error' or 'skip', got {on_existing!r}")
    method = resolve_method(art.model, method,
                            prototype_head=prototype_settings(art.card) is not None)
    if isinstance(art.model.get_classifier(), CosineClassifier) and scale != 1.0:
        raise EnrollmentError("this model has a cosine classifier: enrollment needs no scale "
                              f"(new rows compare directions, like the trained ones); got "
                              f"{scale!r}")
    if scale == "auto" and old_data is None:
        raise DatasetError("--scale auto needs --old-data: labelled photos of the model's own "
                           "classes to measure what enrollment costs them")
    if scale != "auto" and not float(scale) > 0:
        raise EnrollmentError(f"scale must be positive or 'auto', got {scale!r}")
    known = set(art.labels)
    existing = sorted(set(data.labels) & known)
    if existing and on_existing == "error":
        raise DatasetError(
            f"{data.source}: {len(existing)} label(s) are already in the model "
            f"(e.g. {existing[:3]}); remove them or pass --skip-existing"
        )
    refs = load_references(data, set(existing))
    if not refs:
        raise DatasetError(f"{data.source}: no new labels to enroll")
    aug = art.config.augment
    # The views training rendered, in the model's framing (whole photo or pill crop).
    params = SynthParams.for_training(aug)
    # A crop model's views are already the finder's crop: no zoom on top of them.
    transform = EvalTransform(art.preprocessing, zoom="off" if aug.framing == "crop" else None)
    embeddings = label_embeddings(art.model, transform, refs, views, seed, params, batch_size)
    protos = torch.stack([e.mean(0) for e in embeddings])
    fresh_cache: list[list[Tensor]] = []

    def fresh_embeddings() -> list[Tensor]:
        """Views of each new label that do not build its row (computed once, on demand)."""
        if not fresh_cache:
            fresh_cache.append(label_embeddings(art.model, transform, refs, views,
                                                seed + OFFSET_SEED_SHIFT, params, batch_size))
        return fresh_cache[0]

    offset, offset_fit = resolve_offset(art, method, offset, protos, old_data, transform,
                                         batch_size, fresh_embeddings)
    scale_fit = None
    if scale == "auto":
        assert old_data is not None
        scale, scale_fit = choose_scale(art.model, transform, old_data, art.labels, protos,
                                        method, max_drop, batch_size)
    old_count = len(art.labels)
    imprint(art.model, protos, method, float(scale), offset)
    centres, centres_fit = extend_class_centres(art.card, art.model.get_classifier(),
                                                fresh_embeddings, old_count)
    meta = dict(zip(data.labels, data.label_metadata, strict=True))
    new = list(refs)
    result = EnrollmentResult(new, existing, {k: len(v) for k, v in refs.items()}, views,
                              method, float(scale), scale_fit, offset, offset_fit,
                              centres_fit, centres)
    return art.labels + new, art.label_metadata + [meta[k] for k in new], result


def require_head_precision(art: Artifact, precision: str) -> None:
    """Refuse a final-layer precision the model cannot keep (fp16 needs a cosine layer)."""
    problem = head_precision_problem(art.model, precision)
    if problem is not None:
        raise EnrollmentError(problem)


def enroll_artifact(model_path: str | Path, data_path: str | Path, out: str | Path,
                    views: int = DEFAULT_VIEWS, seed: int = DEFAULT_SEED,
                    on_existing: str = "error", batch_size: int = 32,
                    method: str = DEFAULT_IMPRINT, scale: float | str = 1.0,
                    old_data: str | Path | None = None,
                    max_drop: float = DEFAULT_MAX_DROP,
                    offset: float | str = "auto",
                    head_precision: str | None = None) -> EnrollmentResult:
    """Load ``model_path``, enroll the labels in ``data_path``, save the result to ``out``.

    The new card keeps the base card's calibration, identification thresholds and other
    sections, and appends an ``enrollment`` record; the base metrics move into that record
    because they were measured without the new labels. When the base model has a drug
    library, the new model gets one too, with the new pills' facts from the manifest's
    columns (:mod:`.enroll_facts`); a crop model's pill finder (``segmenter/``) is copied
    along. ``head_precision`` ("fp32" | "fp16") is stored as the new card's
    ``identification.head_precision``, the precision the torch backend then keeps the final
    layer's rows at (None: the base card's).
    """
    model_path, out = Path(model_path), Path(out)
    require_new_output(model_path, out)
    art = load_artifact(model_path)
    if head_precision is not None:  # checked before any work
        require_head_precision(art, head_precision)
    data = load_dataset(data_path)
    facts = enrollment_facts(model_path, data_path, data.labels)  # checked before any work
    old = load_dataset(old_data) if old_data is not None else None
    labels, metadata, result = enroll(art, data, views, seed, on_existing, batch_size, method,
                                      scale, old, max_drop, offset)
    card = art.card
    record: dict[str, Any] = {
        **asdict(result),
        "base_model": {"path": str(model_path), "sha256": card.get("weights", {}).get("sha256"),
                       "num_classes": len(art.labels)},
        "base_metrics": card.get("metrics", {}),
        "data": str(data_path),
        "seed": seed,
        "method": f"classifier weight imprinting ({method}) of mean pre-logit embeddings",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    record.pop("output")
    record.pop("own_logit_means")
    record.pop("library")
    calibration = card.get("calibration")
    if result.own_logit_means is not None:
        calibration = {**calibration, "own_logit_means": result.own_logit_means}
    extra = {k: v for k, v in card.items() if k not in SAVED_CARD_KEYS}
    extra["enrollment"] = [*card.get("enrollment", []), record]
    if head_precision is not None:
        extra["identification"] = {**card.get("identification", {}),
                                   "head_precision": head_precision}

    def parts(staging: Path) -> None:  # published with the model, or not at all
        carry_segmenter(model_path, staging)  # a crop model keeps its pill finder
        if facts is not None:
            result.library = write_enrolled_library(model_path, staging, art, labels, facts,
                                                    result.enrolled, published_as=out)

    save_artifact(out, art.model, art.config, labels, metadata, metrics={},
                  calibration=calibration, extra=extra,
                  half=card.get("weights", {}).get("dtype") == "float16",
                  zoom=card_zoom(card["preprocessing"]), parts=parts)
    result.output = str(out)
    return result
