"""One error tree and one error shape: `{"error": {"code", "message", "details"?}}`."""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.logging import REQUEST_ID_HEADER, request_id_var

logger = logging.getLogger("app.errors")


class AppError(Exception):
    """Base of every error the API reports on purpose. `code` is stable; clients switch on it."""

    status_code = 400
    code = "bad_request"
    message = "The request could not be processed."
    # Commit the request's writes even though it fails (e.g. revoking a reused token family).
    keep_writes = False

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"
    message = "The resource was not found."


def project_not_found() -> NotFoundError:
    return NotFoundError("Project not found.", code="project_not_found")


def check_project_reach(reach: uuid.UUID | None, project_id: uuid.UUID) -> None:
    """`reach`: the one project an API key may use (None: a user, bound by the workspace).
    Any other project is not found, as if it did not exist: a key is never told of others."""
    if reach is not None and reach != project_id:
        raise project_not_found()


class ConflictError(AppError):
    status_code = 409
    code = "conflict"


class UnauthorizedError(AppError):
    status_code = 401
    code = "unauthorized"
    message = "Missing or invalid credentials."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(AppError):
    status_code = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class ValidationFailedError(AppError):
    status_code = 422
    code = "validation_error"
    message = "The request is invalid."


def field_error(field: str, problem: str) -> ValidationFailedError:
    """A 422 about one field, shaped like the request-validation errors."""
    return ValidationFailedError(
        f"The request is invalid: {field}: {problem}",
        details=[{"field": field, "message": problem, "type": "value_error"}],
    )


class PayloadTooLargeError(AppError):
    status_code = 413
    code = "payload_too_large"


class RateLimitedError(AppError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests."

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(
            message, code=code, details=details, headers={"Retry-After": str(retry_after)}
        )


class InternalError(AppError):
    """Something failed on our side; reported without internals (the log has the trace)."""

    status_code = 500
    code = "internal_error"
    message = "An unexpected error occurred."


class UpstreamError(AppError):
    """The LLM upstream failed: 502 bad reply, 503 unavailable, 504 timed out, 429 limited."""

    status_code = 502
    code = "llm_upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details, headers=headers)
        self.status_code = status_code


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """The shape of every error response."""

    error: ErrorBody


# Paths that answer errors in OpenAI's shape, for OpenAI clients and SDKs.
OPENAI_PATH_PREFIX = "/v1/"
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(
    status_code: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """`{"error": {message, type, param, code}}` as OpenAI's API sends it."""
    param = next((d.get("field") for d in details or [] if d.get("field")), None)
    kind = _OPENAI_TYPES.get(
        status_code, "api_error" if status_code >= 500 else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error_response(
    status_code: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    request: Request | None = None,
) -> JSONResponse:
    all_headers = dict(headers or {})
    request_id = request_id_var.get()
    if request_id:
        all_headers[REQUEST_ID_HEADER] = request_id
    if request is not None and request.url.path.startswith(OPENAI_PATH_PREFIX):
        # OpenAI reports invalid requests as 400.
        status_code = 400 if status_code == 422 else status_code
        return JSONResponse(
            openai_error_body(status_code, code, message, details),
            status_code=status_code,
            headers=all_headers,
        )
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status_code, headers=all_headers)


_HTTP_CODES = {
    400: ("bad_request", "The request could not be processed."),
    401: ("unauthorized", "Missing or invalid credentials."),
    403: ("forbidden", "You may not do this."),
    404: ("not_found", "The resource was not found."),
    405: ("method_not_allowed", "This method is not allowed on this path."),
    406: ("not_acceptable", "The requested representation is not available."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "The request's content type is not supported."),
}


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)  # noqa: S101 - registered for AppError only
    return _error_response(
        exc.status_code, exc.code, exc.message, exc.details, exc.headers, request
    )


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # FastAPI's answer to a body it cannot decode (e.g. not UTF-8): a validation error.
        return _error_response(
            422,
            "validation_error",
            "The request body could not be read: send UTF-8 JSON (or the documented form).",
            request=request,
        )
    code, default_message = _HTTP_CODES.get(exc.status_code, ("http_error", "Request failed."))
    # Starlette's default detail is the bare status phrase; ours says more.
    custom = isinstance(exc.detail, str) and exc.detail != HTTPStatus(exc.status_code).phrase
    message = exc.detail if custom and exc.status_code != 404 else None
    return _error_response(
        exc.status_code,
        code,
        message or default_message,
        headers=dict(exc.headers or {}),
        request=request,
    )


def _jsonable_error(error: dict[str, Any]) -> dict[str, Any]:
    loc = [part for part in error.get("loc", ()) if part != "body"]
    return {
        "field": ".".join(str(part) for part in loc) or None,
        "message": str(error.get("msg", "Invalid value")),
        "type": str(error.get("type", "value_error")),
    }


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    details = [_jsonable_error(dict(error)) for error in exc.errors()]
    if any(d["type"] == "json_invalid" for d in details):
        message = "The request body is not valid JSON."
    elif any(d["type"] == "model_attributes_type" and d["field"] is None for d in details):
        message = "The request body must be a JSON object (send Content-Type: application/json)."
    else:
        message = "The request is invalid: " + "; ".join(
            f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details[:5]
        )
    return _error_response(422, "validation_error", message, details, request=request)


_UNREACHABLE_HINTS = ("connection", "could not connect", "unable to open database file")


def database_unreachable(exc: BaseException) -> bool:
    """A lost or refused database connection (not a bug in a statement)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if isinstance(orig, ConnectionError | TimeoutError | OSError):
            return True
        hint = f"{type(orig).__name__} {orig}".lower()
        return isinstance(exc, OperationalError | InterfaceError) and any(
            h in hint for h in _UNREACHABLE_HINTS
        )
    return isinstance(exc, ConnectionError | TimeoutError) or (
        isinstance(exc, OSError) and exc.errno is not None
    )


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if database_unreachable(exc):
        # Type names only: a DBAPIError's text carries the statement's parameters.
        logger.warning(
            "database unreachable on %s %s: %s (%s)",
            request.method,
            request.url.path,
            type(exc).__name__,
            type(getattr(exc, "orig", None) or exc).__name__,
        )
        return _error_response(
            503,
            "database_unavailable",
            "The database is not answering; try again shortly.",
            headers={"Retry-After": "5"},
            request=request,
        )
    logger.error(
        "unhandled error on %s %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=exc,
    )
    return _error_response(
        500, "internal_error", "Something went wrong on our side.", request=request
    )


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring the error shape for the given status codes."""
    descriptions = {
        400: "Invalid request (the OpenAI-compatible endpoints' validation errors).",
        401: "Missing, invalid or expired credentials.",
        403: "Forbidden: your role in this workspace does not allow this (`insufficient_role`), "
        "or an API key lacks the scope or may not call this route.",
        404: "Not found (or owned by another workspace).",
        409: "Conflict.",
        410: "Gone: a used, revoked or expired one-time token.",
        413: "Request body too large.",
        422: "Validation error.",
        429: "Rate limited (`rate_limited`), a token quota used up (`quota_exceeded`), or the "
        "LLM upstream limited us (`llm_rate_limited`); `Retry-After` says when to retry.",
        502: "The LLM upstream failed.",
        503: "The LLM upstream is unavailable or not configured.",
        504: "The LLM upstream timed out.",
    }
    return {
        code: {"model": ErrorResponse, "description": descriptions.get(code, "Error.")}
        for code in status_codes
    }
