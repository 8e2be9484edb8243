"""Response bodies that carry the drug library: facts, look-alikes, typed facts, search."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class DrugFactsOut(BaseModel):
    """One reference pill's drug facts (NLM RxImage / RxNorm, from the model's library)."""

    label: str
    ndc: str = Field(description="NDC package code with dashes, e.g. 00002-3229-30")
    drug: str = Field(description='e.g. "atomoxetine 40 mg oral capsule"; "" when unknown')
    name: str = Field(description="RxNorm name")
    generic_name: str
    brand_name: str
    strength: str
    dosage_form: str
    labeler: str
    rxcui: str = Field(description="RxNorm concept id")
    dea_schedule: str = Field(description="CII..CV, or empty")
    is_controlled: bool = Field(description="a DEA-scheduled (controlled) substance")
    imprint: list[str] = Field(description="imprint tokens as NLM writes them")
    imprint_text: str
    imprint_type: str = Field(description="PRINTED, DEBOSSED, EMBOSSED or empty")
    imprint_color: str
    colors: list[str] = Field(description="NLM coded colours, e.g. WHITE, BLUE")
    shape: str
    appearance: str = Field(description='e.g. "white and blue capsule"')
    size_mm: float | None = Field(description="longest side in millimetres")
    score: int | None = Field(description="1 = unscored, 2-4 = number of segments")
    part: int = Field(description="part number within a multi-part pack (1 otherwise)")
    status: str = Field(description='"" or "Former imprint"')
    source_id: str
    image: str = Field(description="the reference photograph, relative to the library's root")
    dailymed_url: str | None = Field(description="DailyMed search for this NDC")
    description: str = Field(description="the facts in one readable line")


class PillRefOut(BaseModel):
    """Another pill named in an answer (an identical pill or a look-alike)."""

    label: str
    ndc: str
    drug: str
    labeler: str
    description: str
    is_controlled: bool
    dea_schedule: str


class LookalikeOut(PillRefOut):
    """A pill the model sees as close to this one, and what tells them apart."""

    similarity: float = Field(description="cosine of the two pills' centred class rows")
    note: str = Field(description='e.g. "also looks like X (NDC ...): check the imprint: ..."')


class TypedMatchOut(BaseModel):
    """How a candidate matches what the user typed."""

    likelihood: float = Field(description="L(typed facts | this pill), floor to 1")
    photo_probability: float = Field(description="the photo's probability alone")
    explanation: list[str]


class TypedOut(BaseModel):
    """The typed facts and how they were used."""

    fields: dict[str, str] = Field(description="imprint, color, shape as typed")
    contradicted: bool = Field(description="they match none of the likely pills: not sure")
    top_likelihood: float
    threshold: float
    note: str


class LibraryHitOut(BaseModel):
    """One library search hit."""

    rank: int
    score: float = Field(description="match with the query, 0 to 1")
    label: str
    explanation: list[str]
    facts: DrugFactsOut
    reference_id: int | None = None
    group_id: int | None = Field(None, description="identical-pill group, if any")
    photo_url: str | None = Field(None, description="the reference photograph, if served")


class SearchResponse(BaseModel):
    """Answer of GET /v1/library/search."""

    query: dict[str, Any] = Field(description="the fields searched by")
    hits: list[LibraryHitOut]


class ReferenceOut(BaseModel):
    """One reference photograph of a pill, its facts and its identical pills."""

    reference_id: int
    facts: DrugFactsOut
    photo_url: str | None = Field(description="null when the photograph is not on the server")
    group_id: int | None
    same_pill: list[PillRefOut]
    same_pill_note: str


class PillResponse(BaseModel):
    """Answer of GET /v1/library/pills/{ndc}: every reference photograph of the pill."""

    ndc: str
    references: list[ReferenceOut]


class LibraryInfo(BaseModel):
    """Answer of GET /v1/library: is there a library, and what it holds."""

    available: bool
    references: int = 0
    labels: int = 0
    groups: int = 0
    grouped_labels: int = 0
    lookalikes: bool = Field(False, description="answers list look-alikes for this model")
    note: str = ""
