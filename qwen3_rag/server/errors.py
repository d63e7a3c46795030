"""Errors as JSON: ``{"error": {"message", "type", "code"}}`` with a 4xx status for the caller's mistakes.

The library raises Python errors that say what was wrong (ValueError, TypeError, FilterError); here they become
400s with that message. Only a failure of the server itself is a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from qwen3_rag._optional import require

require("fastapi", "server", "qwen3-rag serve")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

from qwen3_rag.indexers.filters import FilterError  # noqa: E402
from qwen3_rag.indexers.manifest import IndexLockedError  # noqa: E402
from qwen3_rag.server.batching import Overloaded  # noqa: E402
from qwen3_rag.server.state import NotServed  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["APIError", "error_body", "error_response", "install_error_handlers"]

#: The OpenAI error type of each status the server answers.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
          429: "rate_limit_error", 502: "upstream_error", 503: "service_unavailable", 504: "timeout_error"}


class APIError(Exception):
    """An answer other than 200: ``status``, a message that says what to do, an error code."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "code": code}}


def error_response(status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    problems = []
    code = "invalid_value"
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        if error.get("type") == "json_invalid":
            code = "invalid_json"
            problems.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})")
        else:
            problems.append(f"{where}: {error.get('msg')}")
    return "; ".join(problems) or "invalid request", code


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as JSON with the right status."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, code = _validation_message(exc)
        return error_response(400, message, code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code)
        return error_response(exc.status_code, str(exc.detail), code, getattr(exc, "headers", None))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(429, str(exc), "queue_full", {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(NotServed)
    async def not_served(request: Request, exc: NotServed) -> JSONResponse:
        return error_response(404, str(exc), "not_found")

    @app.exception_handler(FilterError)
    async def bad_filter(request: Request, exc: FilterError) -> JSONResponse:
        return error_response(400, f"bad filter: {exc}", "invalid_filter")

    @app.exception_handler(IndexLockedError)
    async def locked(request: Request, exc: IndexLockedError) -> JSONResponse:
        return error_response(409, str(exc), "index_locked")

    for kind in (ValueError, TypeError):
        app.add_exception_handler(kind, _bad_input)

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"the server failed: {type(exc).__name__}", "server_error")


async def _bad_input(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, str(exc), "invalid_value")
