"""The drug library over HTTP: search by what is on a pill, one pill's facts, its photograph.

Routes (under the API key, like every ``/v1`` route):

- ``GET /v1/library``: whether the model has a library, and its counts.
- ``GET /v1/library/search?imprint=&color=&shape=&size=&score=&name=&limit=``: ranked
  pills (see docs/library.md for the ranking); a malformed query is a 422 naming the field.
- ``GET /v1/library/pills/{ndc}``: every reference photograph of one pill (NDC or label),
  with its facts and identical pills; 404 when the library has no such pill.
- ``GET /v1/library/photos/{reference_id}``: the reference photograph, when the server has
  it (the photographs are not inside the library file; 404 otherwise).

The library is the one the Identifier opened (``library.sqlite`` in the model artifact);
without one every route but ``GET /v1/library`` answers 404 ``no_library``. Handlers are
plain functions: FastAPI runs them in its thread pool, off the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from ..library.database import Library, Reference
from ..library.errors import LibraryError, QueryError
from ..library.lookalike import same_pill_note
from ..library.search import MAX_LIMIT, search
from .errors import ApiError
from .library_schemas import (
    LibraryInfo,
    PillRefOut,
    PillResponse,
    ReferenceOut,
    SearchResponse,
)
from .service import Service

PHOTO_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".webp": "image/webp"}
MAX_TEXT = 200  # longer query text is refused before parsing (the parser's own limits apply)


def library_router(service: Service) -> APIRouter:
    """The ``/v1/library`` routes over the library of ``service``'s Identifier."""
    router = APIRouter(prefix="/v1/library", tags=["library"])

    def library() -> Library:
        lib = service.identifier.answers.library if service.identifier else None
        if lib is None:
            raise ApiError(404, "this model has no drug library (library.sqlite beside its "
                                "card.json); build one with `rxvision library build MANIFEST "
                                "--for-model MODEL`", code="no_library")
        return lib

    @router.get("", response_model=LibraryInfo)
    def info() -> LibraryInfo:
        """Whether answers carry drug facts, and what the library holds."""
        answers = service.identifier.answers
        lib = answers.library
        if lib is None:
            return LibraryInfo(available=False, note="; ".join(answers.notes))
        m = lib.meta
        return LibraryInfo(available=True, references=int(m["references"]),
                           labels=int(m["labels"]), groups=int(m["groups"]),
                           grouped_labels=int(m["grouped_labels"]),
                           lookalikes=answers.show_lookalikes, note="; ".join(answers.notes))

    @router.get("/search", response_model=SearchResponse)
    def search_library(
        imprint: str | None = Query(None, max_length=MAX_TEXT,
                                    description='letters and digits on the pill, e.g. "M 411"'),
        color: str | None = Query(None, max_length=MAX_TEXT,
                                  description='colour(s), e.g. "blue", "white, yellow"'),
        shape: str | None = Query(None, max_length=MAX_TEXT, description="e.g. round, oval"),
        size: float | None = Query(None, description="longest side in millimetres (1-60)"),
        score: int | None = Query(None, description="1 = unscored, 2-4 = segments"),
        name: str | None = Query(None, max_length=MAX_TEXT,
                                 description="words of the drug, brand or labeler name"),
        limit: int = Query(10, ge=1, le=MAX_LIMIT, description="hits to return"),
    ) -> SearchResponse:
        """Rank the library's pills by a fuzzy imprint match and soft colour, shape, size."""
        lib = library()
        try:
            hits = search(lib, imprint=imprint, color=color, shape=shape, size_mm=size,
                          score=score, name=name, limit=limit)
        except QueryError as exc:
            raise ApiError(422, str(exc), code="invalid_query") from None
        given = {"imprint": imprint, "color": color, "shape": shape, "size": size,
                 "score": score, "name": name}
        return SearchResponse(
            query={k: v for k, v in given.items() if v not in (None, "")},
            hits=[{"rank": h.rank, "score": round(h.score, 4), "label": h.facts.label,
                   "explanation": list(h.explanation), "facts": h.facts.to_dict(),
                   "reference_id": h.reference_id, "group_id": h.group_id,
                   "photo_url": _photo_url(h.reference_id, h.image_path)} for h in hits])

    @router.get("/pills/{ndc}", response_model=PillResponse)
    def pill(ndc: str) -> PillResponse:
        """One pill's facts, reference photograph(s) and identical pills, by NDC or label."""
        lib = library()
        if len(ndc) > 40:
            raise ApiError(422, "an NDC has at most 13 characters, e.g. 00002-3229-30")
        try:
            refs = lib.references(ndc)
        except LibraryError:
            raise ApiError(404, f"{ndc!r} is not in this model's library (give an NDC with "
                                "dashes, e.g. 00002-3229-30, or a label)",
                           code="unknown_pill") from None
        return PillResponse(ndc=refs[0].facts.ndc or ndc,
                            references=[_reference_out(lib, r) for r in refs])

    @router.get("/photos/{reference_id}", response_class=FileResponse,
                responses={200: {"content": {t: {} for t in set(PHOTO_TYPES.values())}}})
    def photo(reference_id: int) -> FileResponse:
        """A reference photograph, when this server has the library's photographs."""
        lib = library()
        found = lib.fetch([reference_id])
        path = found[0].image_path if found else None
        if path is None or path.suffix.lower() not in PHOTO_TYPES or not path.is_file():
            raise ApiError(404, f"reference photograph {reference_id} is not on this server",
                           code="no_photo")
        return FileResponse(path, media_type=PHOTO_TYPES[path.suffix.lower()])

    return router


def _photo_url(reference_id: int, path: Any) -> str | None:
    ok = path is not None and path.suffix.lower() in PHOTO_TYPES and path.is_file()
    return f"/v1/library/photos/{reference_id}" if ok else None


def _reference_out(lib: Library, ref: Reference) -> ReferenceOut:
    twins = ([m for m in lib.group_members([ref.group_id]) if m.facts.label != ref.facts.label]
             if ref.group_id is not None else [])
    return ReferenceOut(
        reference_id=ref.id, facts=ref.facts.to_dict(),
        photo_url=_photo_url(ref.id, ref.image_path), group_id=ref.group_id,
        same_pill=[PillRefOut(label=m.facts.label, ndc=m.facts.ndc, drug=m.facts.drug,
                              labeler=m.facts.labeler, description=m.facts.describe(),
                              is_controlled=m.facts.is_controlled,
                              dea_schedule=m.facts.dea_schedule) for m in twins],
        same_pill_note=same_pill_note(ref.facts, [m.facts for m in twins]))
