"""Reading the multipart requests of /v1/identify and /v1/identify/batch, with limits.

Parsed by hand (not FastAPI ``File()`` parameters) so each failure gets its own status:
not multipart -> 415, a file that says it is not an image -> 415, a missing or misused
field -> 422, a malformed body -> 400. The OpenAPI schema of these bodies is written out
in :data:`IDENTIFY_BODY` / :data:`BATCH_BODY` so /docs still offers the upload form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect, Request

from ..identify.answers import TypedFacts
from .errors import ApiError
from .service import Upload
from .settings import ServeSettings
from .typed_form import TYPED_SCHEMA, has_typed, parse_typed

MAX_TEXT_FIELD_BYTES = 1024  # topk / explain are tiny; anything bigger is abuse
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
# Browsers label unknown files octet-stream; those are decoded and judged by their bytes.
ACCEPTED_GENERIC_TYPES = {"", "application/octet-stream"}


@dataclass
class IdentifyForm:
    """A parsed request. ``pair`` is set only by the fields ``front`` + ``back`` of
    /v1/identify, never inferred from the number of files (a batch of two photos is two
    pills)."""

    uploads: list[Upload]
    topk: int
    explain: bool
    pair: bool = False
    typed: TypedFacts | None = None  # imprint, colour, shape the user read off the pill


async def _read_form(request: Request, settings: ServeSettings, max_files: int) -> FormData:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, f"unsupported content type {ctype or '(none)'!r}: send "
                            "multipart/form-data with the photo in the field 'image'")
    try:
        return await request.form(max_files=max_files, max_fields=8,
                                  max_part_size=MAX_TEXT_FIELD_BYTES)
    except ClientDisconnect:  # the body limit cut the upload off (413 already sent)
        raise ApiError(413, "request body too large") from None


async def _file(form: FormData, name: str, view: str | None = None) -> Upload:
    value = form.get(name)
    return await _upload(value, name, view or name)


async def _upload(value: Any, field: str, view: str) -> Upload:
    if not isinstance(value, UploadFile):
        raise ApiError(422, f"field {field!r} must be a file upload, not text",
                       errors=[{"loc": ["body", field], "msg": "expected a file"}])
    ctype = (value.content_type or "").split(";")[0].strip().lower()
    if not (ctype.startswith("image/") or ctype in ACCEPTED_GENERIC_TYPES):
        raise ApiError(415, f"{view}: unsupported file type {ctype!r}; send a photo "
                            "(image/jpeg, image/png, ...)")
    return Upload(view, value.filename, await value.read())


def _refuse_repeats(form: FormData, *fields: str) -> None:
    """422 when one of ``fields`` was sent more than once: one value would be dropped."""
    repeated = [f for f in fields if len(form.getlist(f)) > 1]
    if repeated:
        names = ", ".join(repr(f) for f in repeated)
        hint = (" (several photos of different pills: POST them as 'images' to "
                "/v1/identify/batch)" if {"image", "front", "back"} & set(repeated) else "")
        raise ApiError(422, f"field {names} sent more than once; send each field once{hint}",
                       errors=[{"loc": ["body", f], "msg": "repeated field"} for f in repeated])


def _options(form: FormData, settings: ServeSettings) -> tuple[int, bool]:
    _refuse_repeats(form, "topk", "explain")
    errors = []
    topk_text = form.get("topk")
    topk = settings.default_topk
    if topk_text is not None:
        try:
            topk = int(str(topk_text))
            if not 1 <= topk <= settings.max_topk:
                raise ValueError
        except ValueError:
            errors.append({"loc": ["body", "topk"],
                           "msg": f"must be an integer from 1 to {settings.max_topk}"})
    explain_text = str(form.get("explain", "")).strip().lower()
    if explain_text not in TRUE | FALSE:
        errors.append({"loc": ["body", "explain"], "msg": "must be true or false"})
    if errors:
        raise ApiError(422, "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in errors),
                       errors=errors)
    return topk, explain_text in TRUE


def _missing(msg: str, *fields: str) -> ApiError:
    return ApiError(422, msg, errors=[{"loc": ["body", f], "msg": "field required"}
                                      for f in fields])


async def parse_identify(request: Request, settings: ServeSettings) -> IdentifyForm:
    """``image`` alone, or ``front`` + ``back``; optional ``topk``, ``explain`` and the
    typed facts ``imprint``, ``color``, ``shape``."""
    async with _Form(request, settings, max_files=2) as form:
        _refuse_repeats(form, "image", "front", "back")
        topk, explain = _options(form, settings)
        typed = parse_typed(form)
        has = {name for name in ("image", "front", "back") if name in form}
        if has == {"image"}:
            uploads = [await _file(form, "image")]
        elif has == {"front", "back"}:
            uploads = [await _file(form, "front"), await _file(form, "back")]
        elif not has:
            raise _missing("missing field 'image' (or 'front' and 'back' for both sides)",
                           "image")
        elif "image" in has:
            raise ApiError(422, "send either 'image' or 'front' + 'back', not both")
        else:
            other = ({"front", "back"} - has).pop()
            raise _missing(f"missing field {other!r}: a pair needs both 'front' and 'back'",
                           other)
    return IdentifyForm(uploads, topk, explain, pair=has == {"front", "back"}, typed=typed)


async def parse_batch(request: Request, settings: ServeSettings) -> IdentifyForm:
    """Several files in the field ``images``; optional ``topk``."""
    limit = settings.max_batch_images
    async with _Form(request, settings, max_files=limit) as form:
        topk, explain = _options(form, settings)
        if explain:
            raise ApiError(422, "explain is available on /v1/identify only")
        if has_typed(form):
            raise ApiError(422, "imprint, color and shape describe one pill: send them with "
                                "its photo(s) to /v1/identify")
        values = form.getlist("images")
        if not values:
            raise _missing("missing field 'images' (one or more files)", "images")
        uploads = [await _upload(v, "images", f"images[{i}]") for i, v in enumerate(values)]
    return IdentifyForm(uploads, topk, False, pair=False)


class _Form:
    """``async with``: the parsed form, closed (temp files removed) on exit."""

    def __init__(self, request: Request, settings: ServeSettings, max_files: int):
        self.request, self.settings, self.max_files = request, settings, max_files
        self.form: FormData | None = None

    async def __aenter__(self) -> FormData:
        self.form = await _read_form(self.request, self.settings, self.max_files)
        return self.form

    async def __aexit__(self, *exc: object) -> None:
        if self.form is not None:
            await self.form.close()


def _file_schema(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


_OPTIONS = {
    "topk": {"type": "integer", "minimum": 1, "default": 5, "description": "candidates"},
}
IDENTIFY_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "properties": {
        "image": _file_schema("one photo of the pill"),
        "front": _file_schema("front side (with 'back', instead of 'image')"),
        "back": _file_schema("back side (with 'front')"),
        **_OPTIONS,
        "explain": {"type": "boolean", "default": False,
                    "description": "add attention, Grad-CAM and occlusion overlays "
                                   "(torch backend)"},
        **TYPED_SCHEMA,
    }}}}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": _file_schema("a photo")},
        **_OPTIONS,
    }}}}}}
