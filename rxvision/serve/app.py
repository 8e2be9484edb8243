"""The RxVision HTTP service: ``create_app(settings)`` builds a FastAPI app.

Routes (see /docs for the schemas):

- ``POST /v1/identify``: multipart ``image`` (or ``front`` + ``back`` of one pill, fused),
  optional ``topk``, ``explain`` and what the user read off the pill (``imprint``,
  ``color``, ``shape``) -> ranked candidates with drug facts, look-alikes and identical
  pills, abstain/unknown flags, timings.
- ``POST /v1/identify/batch``: several files in ``images`` -> one result per file.
- ``GET /v1/model``: the model card summarised.
- ``GET /v1/library``, ``/v1/library/search``, ``/v1/library/pills/{ndc}``,
  ``/v1/library/photos/{id}``: the model's drug library (:mod:`.library_routes`).
- ``GET /healthz`` (process alive), ``GET /readyz`` (model loaded and warmed up),
  ``GET /metrics`` (Prometheus), ``GET /`` (the web page), ``/docs`` (OpenAPI).

The model is loaded once, in the lifespan; decoding runs in a thread pool and forward
passes on the micro-batcher's thread, never on the event loop. With an API key set, every
``/v1`` route needs the header ``X-API-Key``.

Example:
    >>> app = create_app(ServeSettings(model="runs/c3pi", max_batch=16))
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from ..data.decode import ImageDecodeError, ImageTooLargeError
from ..identify.identifier import (
    Identification,
    Identifier,
    IdentifierError,
    ask_for_retake,
    retake_request,
)
from ..identify.pipeline import FoundPill
from ..locate.presence import TOO_SMALL
from .batcher import BatcherClosedError, BatchResult, QueueFullError
from .errors import ApiError, install_error_handlers
from .forms import BATCH_BODY, IDENTIFY_BODY, IdentifyForm, parse_batch, parse_identify
from .library_routes import library_router
from .metrics import ServeMetrics
from .middleware import BodyLimitMiddleware, MetricsMiddleware
from .schemas import (
    BatchResponse,
    CandidateOut,
    ErrorBody,
    Health,
    IdentificationOut,
    IdentifyResponse,
    ModelInfo,
    Timings,
)
from .service import Decoded, Service, keep_typed_pill
from .settings import ServeSettings

STATIC_DIR = Path(__file__).parent / "static"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in {
        400: "empty, truncated or non-image file; malformed body",
        401: "API key missing or wrong",
        413: "body or image over the limit",
        415: "not multipart/form-data, or a file that is not an image",
        422: "missing or invalid field",
        503: "queue full (see Retry-After) or model not ready",
    }.items()}


def create_app(settings: ServeSettings | None = None,
               identifier: Identifier | None = None) -> FastAPI:
    """Build the service.

    Args:
        settings: model, batching and limits (default: ``ServeSettings()``, bundled model).
        identifier: an already loaded Identifier to serve instead of loading
            ``settings.model`` (tests, embedding the service in another program).
    """
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    service = Service(settings, metrics, identifier)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="RxVision", version=importlib.metadata.version("rxvision"),
                  description="Identify prescription pills from photos.", lifespan=lifespan)
    app.state.service, app.state.settings, app.state.metrics = service, settings, metrics
    install_error_handlers(app)
    paths: set[str] = set()
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=lambda: paths)
    for router in (_api_router(service, settings), _ops_router(service, metrics)):
        app.include_router(router)
        paths.update(route.path for route in router.routes)
    library = library_router(service)
    app.include_router(library, dependencies=[Depends(_api_key_dependency(settings))],
                       responses=ERROR_RESPONSES)
    paths.update(route.path for route in library.routes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    paths.update({"/", "/docs", "/openapi.json"})
    return app


def _api_key_dependency(settings: ServeSettings) -> Any:
    header = APIKeyHeader(name="X-API-Key", auto_error=False,
                          description="required when the server has an API key")

    async def check(key: str | None = Depends(header)) -> None:
        if settings.api_key is None:
            return
        expected = settings.api_key.get_secret_value().encode()
        # compare_digest: the time taken does not reveal how much of the key matched.
        if not key or not hmac.compare_digest(key.encode(), expected):
            raise ApiError(401, "missing or wrong API key: send it in the X-API-Key header",
                           headers={"WWW-Authenticate": "APIKey"})

    return check


def _api_router(service: Service, settings: ServeSettings) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_api_key_dependency(settings))],
                       responses=ERROR_RESPONSES)

    @router.get("/model", response_model=ModelInfo)
    async def model() -> dict[str, Any]:
        """The loaded model: id, hash, versions, labels count, metrics, limits."""
        return service.info

    @router.post("/identify", response_model=IdentifyResponse, openapi_extra=IDENTIFY_BODY)
    async def identify(request: Request) -> Response:
        """Identify one pill from one photo (``image``) or both sides (``front``, ``back``)."""
        t0 = time.perf_counter()
        form = await parse_identify(request, settings)
        if form.explain and not service.info["capabilities"]["explain"]:
            raise ApiError(422, f"explanations need the torch backend; this server runs "
                                f"{service.identifier.backend}")
        if form.typed is not None and service.identifier.answers.library is None:
            raise ApiError(422, "imprint, color and shape need the model's drug library; "
                                + "; ".join(service.identifier.answers.notes))
        decoded, results, answers, post_ms = await _identify(service, form)
        result = answers[0][0]
        explain_ms = 0.0
        if form.explain:
            t1 = time.perf_counter()
            if service.pipeline is None:
                result.explanations = {d.upload.view: await service.explain(d.image)
                                       for d in decoded}
            elif form.pair:  # the crop each side's answer was read from
                result.explanations = {d.upload.view: await service.explain(d.pills[0].crop)
                                       for d in decoded if d.pills}
            else:  # each pill's own crop
                for out, pill in zip(answers[0], decoded[0].pills or [], strict=False):
                    out.explanations = {"image": await service.explain(pill.crop)}
            explain_ms = (time.perf_counter() - t1) * 1e3
        return _json(IdentifyResponse(
            model=service.info["id"], backend=service.identifier.backend,
            mode="pair" if form.pair else "single", result=result,
            pills=answers[0] if service.pipeline is not None else [],
            timings_ms=_timings(decoded, results, post_ms, explain_ms, t0)))

    @router.post("/identify/batch", response_model=BatchResponse, openapi_extra=BATCH_BODY)
    async def identify_batch(request: Request) -> Response:
        """Identify several independent photos (field ``images``), one result each."""
        t0 = time.perf_counter()
        form = await parse_batch(request, settings)
        decoded, results, answers, post_ms = await _identify(service, form)
        return _json(BatchResponse(
            model=service.info["id"], backend=service.identifier.backend,
            results=[a[0] for a in answers],
            pills=answers if service.pipeline is not None else [],
            timings_ms=_timings(decoded, results, post_ms, 0.0, t0)))

    return router


def _ops_router(service: Service, metrics: ServeMetrics) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """The process is up (it may still be loading the model)."""
        return Health(status="ok")

    @router.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
    async def readyz() -> Health:
        """The model is loaded, warmed up and the batcher is running."""
        if not (service.ready and service.batcher is not None and service.batcher.running):
            raise ApiError(503, "model not ready", code="not_ready")
        return Health(status="ready")

    @router.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format: requests, latencies, batch sizes, queue depth."""
        return Response(metrics.render(), media_type=metrics.content_type)

    return router


async def _identify(service: Service, form: IdentifyForm
                    ) -> tuple[list[Decoded], list[BatchResult], list[list[IdentificationOut]],
                               float]:
    """Decode, batched forward, decide; per photo (a pair: one entry) its answers.

    Library and image errors become HTTP errors."""
    try:
        # A pair reads the imprints of the two pills it picks, not of every candidate.
        decoded = await service.decode(form.uploads, max_pills=1 if form.pair else None,
                                       read_imprints=not form.pair)
        if (service.pipeline is not None and form.typed is not None and not form.pair
                and len(decoded[0].pills or []) > 1):
            keep_typed_pill(service.pipeline, decoded[0])  # IdentifierError: a 422
        # A pair with a side where no pill was found is a retake: no forward pass.
        no_side = form.pair and any(not d.tensor.shape[0] for d in decoded)
        results = [] if no_side else await service.forward(decoded)
    except ImageTooLargeError as exc:
        raise ApiError(413, str(exc), code="image_too_large") from None
    except ImageDecodeError as exc:
        raise ApiError(400, str(exc), code="invalid_image") from None
    except IdentifierError as exc:  # typed facts for a photo of several pills
        raise ApiError(422, f"imprint, color and shape describe one pill: {exc}") from None
    except QueueFullError as exc:
        raise ApiError(503, f"server busy: {exc}; retry shortly", code="queue_full",
                       headers={"Retry-After": str(service.settings.retry_after_s)}) from None
    except BatcherClosedError as exc:
        raise ApiError(503, str(exc), code="not_ready") from None
    t0 = time.perf_counter()
    # Off the event loop: attaching drug facts and fusing typed facts read the library.
    try:
        idents = await asyncio.to_thread(service.decide, results, form.topk, form.pair,
                                         form.typed, decoded)
    except IdentifierError as exc:  # typed facts for two pills that are not one
        raise ApiError(422, f"imprint, color and shape describe one pill: {exc}") from None
    answers = _answers(service, decoded, idents, form.pair)
    return decoded, results, answers, (time.perf_counter() - t0) * 1e3


def _answers(service: Service, decoded: list[Decoded], idents: list[Identification],
             pair: bool) -> list[list[IdentificationOut]]:
    """Per photo (a pair: one entry) its answers: for a crop model one per pill found (a
    retake when none is), else one."""
    if service.pipeline is None:
        if pair:
            return [[_out(idents[0], decoded)]]
        return [[_out(i, [d])] for i, d in zip(idents, decoded, strict=True)]
    if pair:
        if not idents:  # a side without a usable pill
            return [[_out(retake_request(), decoded)]]
        pill = decoded[0].pills[0]
        return [[_out(idents[0], decoded, pill, service.pipeline.too_small(pill))]]
    out, row = [], 0
    for d in decoded:
        pills = d.pills or []
        if not pills:
            out.append([_out(retake_request(), [d])])
            continue
        out.append([_out(idents[row + k], [d], pill, service.pipeline.too_small(pill))
                    for k, pill in enumerate(pills)])
        row += len(pills)
    return out


def _json(body: BaseModel) -> Response:
    """A validated response model as JSON, serialised once (pydantic-core) and returned as
    is: FastAPI would otherwise validate and serialise it a second time."""
    return Response(body.model_dump_json(), media_type="application/json")


def _out(ident: Identification, decoded: list[Decoded], pill: FoundPill | None = None,
         small: bool = False) -> IdentificationOut:
    # A photo the check refused is answered with a retake request, never a guess; so is a
    # pill too small in the photo to be named.
    ask_for_retake(ident, [(d.upload.view, d.retake) for d in decoded])
    if small:
        ask_for_retake(ident, [(decoded[0].upload.view, TOO_SMALL)])
    return IdentificationOut(
        candidates=[CandidateOut(rank=c.rank, label=c.label, probability=c.probability,
                                 metadata=c.metadata, facts=c.facts, lookalikes=c.lookalikes,
                                 same_pill=c.same_pill, same_pill_note=c.same_pill_note,
                                 typed_match=c.typed_match) for c in ident.candidates],
        abstain=ident.abstain, unknown=ident.unknown, confidence=ident.confidence,
        ood_score=ident.ood_score, message=ident.message, retake=ident.retake,
        facts_source=ident.facts_source,
        typed=ident.typed, library_hits=ident.library_hits,
        source=" + ".join(d.upload.filename or d.upload.view for d in decoded),
        zoomed_to=[d.zoomed_to for d in decoded], zoom_notes=[d.zoom_note for d in decoded],
        imprint=ident.imprint, same_photo=ident.same_photo,
        box=pill.box if pill is not None else None,
        finder_score=pill.finder_score if pill is not None else None)


def _timings(decoded: list[Decoded], results: list[BatchResult], post_ms: float,
             explain_ms: float, t0: float) -> Timings:
    return Timings(
        decode_ms=round(sum(d.ms for d in decoded), 3),
        queue_ms=round(max((r.queue_ms for r in results), default=0.0), 3),
        forward_ms=round(sum(r.forward_ms for r in results), 3),
        postprocess_ms=round(post_ms, 3), explain_ms=round(explain_ms, 3),
        total_ms=round((time.perf_counter() - t0) * 1e3, 3),
        batch_size=max((r.batch_size for r in results), default=0),
        batch_requests=max((r.batch_jobs for r in results), default=0))
