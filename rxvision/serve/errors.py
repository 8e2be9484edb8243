"""Every failure becomes a JSON body ``{"error", "detail", "status"}``, never a stack trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("rxvision.serve")

CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
         405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
         422: "unprocessable", 500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """An error answer: ``raise ApiError(415, "send multipart/form-data")``."""

    def __init__(self, status: int, detail: str, code: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.code = code or CODES.get(status, "error")
        self.headers = dict(headers or {})
        self.errors = errors


def error_body(status: int, detail: str, code: str | None = None,
               errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code or CODES.get(status, "error"), "detail": detail,
                            "status": status}
    if errors is not None:
        body["errors"] = errors
    return body


def error_response(status: int, detail: str, code: str | None = None,
                   headers: Mapping[str, str] | None = None,
                   errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, detail, code, errors), status, dict(headers or {}))


def raw_error(status: int, detail: str, code: str | None = None) -> tuple[dict, bytes]:
    """An error as ASGI ``http.response.start`` message + body, for pure ASGI middleware."""
    body = json.dumps(error_body(status, detail, code)).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, body


def install_error_handlers(app: FastAPI) -> None:
    """Route ApiError, HTTP errors, validation errors and anything unexpected to JSON."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.detail, exc.code, exc.headers, exc.errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
                  for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return error_response(422, detail or "invalid request", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The trace goes to the server log only; the client learns nothing internal.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the server log has the details")
