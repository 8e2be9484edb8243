"""Response bodies of the HTTP API (pydantic models; they also document /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .library_schemas import (
    DrugFactsOut,
    LibraryHitOut,
    LookalikeOut,
    PillRefOut,
    TypedMatchOut,
    TypedOut,
)


class CandidateOut(BaseModel):
    """One ranked answer."""

    rank: int = Field(description="1 = most probable")
    label: str
    probability: float = Field(description="calibrated probability in [0, 1]")
    metadata: dict[str, str] = Field(description="drug metadata of the label (e.g. ndc)")
    facts: DrugFactsOut | None = Field(
        None, description="drug facts from the model's library (null without one)")
    lookalikes: list[LookalikeOut] = Field(
        default_factory=list, description="nearest other pills by appearance, and what "
        "tells each apart")
    same_pill: list[PillRefOut] = Field(
        default_factory=list, description="the same pill sold under other NDCs")
    same_pill_note: str = ""
    typed_match: TypedMatchOut | None = Field(
        None, description="with typed facts: how this pill matches them")


class AlsoFitsOut(BaseModel):
    """A pill the imprint read fits as well as the answer."""

    label: str = Field(description="its label (NDC)")
    imprint: str = Field(description='its library imprint, sides separated by ";"')


class ImprintOut(BaseModel):
    """The imprint read off one pill (OCR on its crop) and what it did to the answer."""

    read: str = Field(description='the text read, "" when nothing legible ("M 411"; front / '
                      'back for a pair)')
    decided_by: Literal["imprint", "appearance"] = Field(
        description="which evidence put the answer ahead of the runner-up")
    changed: bool = Field(description="the imprint moved the top answer away from the photo's")
    reader: str = Field(description="OCR engine")
    read_ms: float = Field(description="time spent reading, milliseconds")
    also_fits: list[AlsoFitsOut] = Field(
        default_factory=list, description="other likely pills the read does not tell apart "
        "from the answer (it left their differing part unread); then the answer is \"not "
        "sure\" unless the photo alone is sure enough")
    photo_confidence: float | None = Field(
        None, description="the photo's own probability of the answer, before the imprint")


class SamePhotoOut(BaseModel):
    """The photo's other pill an answer was weighed with (the card's same-photo rule)."""

    with_box: list[int] = Field(description="the other pill's [x0, y0, x1, y1] in photo pixels")
    same_pill_probability: float = Field(
        description="how likely the two are one pill (the same drug) given both crops; the "
        "answer mixes the pair's joint ranking and this pill's own by it")


class IdentificationOut(BaseModel):
    """The answer for one pill (one photo, or a fused front/back pair)."""

    candidates: list[CandidateOut]
    abstain: bool = Field(description="do not present candidates[0] as the answer")
    unknown: bool = Field(description="the open-set score says: not a pill this model knows")
    confidence: float = Field(description="calibrated probability of candidates[0]")
    ood_score: float = Field(description="open-set score, higher = more likely unknown")
    message: str = Field(description='"ok" | "not sure" | "not a pill I know" | '
                         '"retake the photo"')
    retake: str | None = Field(
        None, description='why the photo must be retaken instead of answered: "no pill found '
        'in the photo", "photo too dark", "overexposed", "too blurred", "pill too small" '
        '("front: ..." / "back: ..." for a pair); then there are no candidates. null when '
        "the photo was answered")
    source: str | None = Field(None, description="uploaded file name(s)")
    zoomed_to: list[list[int] | None] = Field(
        default_factory=list, description="per photo: the square [x0, y0, x1, y1] the model "
        "saw when it zoomed to a small pill (preprocessing.zoom), else null")
    zoom_notes: list[str | None] = Field(
        default_factory=list, description="per photo: why it was or was not zoomed "
        '("zoomed", "pills already fill the frame", "no pill-like region found", ...); '
        "null with zoom off")
    imprint: ImprintOut | None = Field(
        None, description="a model that finds the pills first, with a drug library: the "
        "imprint read off this pill and whether it or the appearance decided")
    same_photo: SamePhotoOut | None = Field(
        None, description="a model that finds the pills first: the photo's other sure pill "
        "this answer was weighed with as possibly the same pill seen twice (null: answered "
        "alone)")
    box: list[int] | None = Field(
        None, description="a model that finds the pills first: where this pill lies in the "
        "photo, [x0, y0, x1, y1] in photo pixels (null for a whole-photo model)")
    finder_score: float | None = Field(
        None, description="the pill finder's mean foreground probability over this pill")
    explanations: dict[str, dict[str, str]] | None = Field(
        None, description="per view (image/front/back): overlay kind -> PNG data URL")
    facts_source: str = Field(
        "card", description='"library": candidates carry drug facts; "card": the model has '
        "no library, metadata only")
    typed: TypedOut | None = Field(None, description="the typed facts and how they were used")
    library_hits: list[LibraryHitOut] = Field(
        default_factory=list, description="when the typed facts contradict the photo: the "
        "library's pills that match them")


class Timings(BaseModel):
    """Where the time of one request went, in milliseconds."""

    decode_ms: float = Field(description="decode + letterbox of this request's images")
    queue_ms: float = Field(description="waiting for the batched forward pass to start")
    forward_ms: float = Field(description="the batched forward pass (shared)")
    postprocess_ms: float
    explain_ms: float = 0.0
    total_ms: float
    batch_size: int = Field(description="images in the forward pass this request rode in")
    batch_requests: int = Field(description="requests sharing that forward pass")


class IdentifyResponse(BaseModel):
    """Answer of POST /v1/identify."""

    model: str = Field(description="model id: name@sha256-prefix")
    backend: str
    mode: Literal["single", "pair"]
    result: IdentificationOut = Field(description="the answer (a crop model: the first pill's)")
    pills: list[IdentificationOut] = Field(
        default_factory=list, description="a model that finds the pills first: one answer per "
        "pill found, best first, each with its box (result is the first); empty otherwise")
    timings_ms: Timings


class BatchResponse(BaseModel):
    """Answer of POST /v1/identify/batch: one result per uploaded image, in order."""

    model: str
    backend: str
    results: list[IdentificationOut] = Field(
        description="per file, its answer (a crop model: its first pill's)")
    pills: list[list[IdentificationOut]] = Field(
        default_factory=list, description="a model that finds the pills first: per file, "
        "one answer per pill found; empty otherwise")
    timings_ms: Timings


class ModelInfo(BaseModel):
    """The loaded model's card, summarised (GET /v1/model)."""

    id: str
    name: str
    backend: str
    sha256: str | None = Field(description="hash of the weights or ONNX file")
    version: dict[str, Any] = Field(description="rxvision, card format and software versions")
    num_labels: int
    input_size: list[int]
    zoom: str = Field(description='"auto": crops around a pill small in the photo; "off"')
    tta: int = Field(description="right-angle rotations averaged per photo (1 = one pass)")
    temperature: float = Field(description="calibration temperature of a photo whose pill "
                                           "size is unknown")
    size_temperature: dict[str, float] | None = Field(
        None, description="T by the pill's size in the photo (log_t, slope, px_min, px_max, "
                          "px_ref): T = exp(log_t + slope ln(clip(px, px_min, px_max) / "
                          "px_ref)); null: one T for every pill")
    identification: dict[str, Any] = Field(description="abstain/open-set thresholds, the "
                                           "final layer's precision in use and, for a model "
                                           "that finds the pill first, its finder gate "
                                           "(min_finder_score) and its rule for two pills of "
                                           "one photo (same_photo: temperature, prior; null: "
                                           "each answered alone)")
    metrics: dict[str, Any]
    capabilities: dict[str, bool]
    limits: dict[str, int | float]


class ErrorBody(BaseModel):
    """Every error answer: a stable code, a human message and the HTTP status."""

    error: str = Field(description="machine-readable code, e.g. payload_too_large")
    detail: str
    status: int
    errors: list[dict[str, Any]] | None = Field(None, description="field errors (422)")


class Health(BaseModel):
    status: str
