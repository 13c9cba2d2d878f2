"""How a provider failure is reported: the stored message's error code and the HTTP error."""

from __future__ import annotations

from typing import Any

from app.core.errors import UpstreamError
from app.llm.base import (
    LLMAuthError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMError,
    LLMNotConfiguredError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
)
from app.llm.resilience import LLMCircuitOpenError

DEFAULT_RETRY_AFTER_SECONDS = 10

# (status, code) per error type; the first match wins, so subclasses come first.
_MAPPING: tuple[tuple[type[LLMError], int, str], ...] = (
    (LLMTimeoutError, 504, "llm_timeout"),
    (LLMCircuitOpenError, 503, "llm_circuit_open"),
    (LLMRateLimitError, 429, "llm_rate_limited"),
    (LLMNotConfiguredError, 503, "llm_not_configured"),
    (LLMConnectionError, 503, "llm_unavailable"),
    (LLMAuthError, 502, "llm_auth_failed"),
    (LLMBadRequestError, 502, "llm_request_rejected"),
    (LLMResponseError, 502, "llm_bad_response"),
)


def classify(exc: LLMError) -> tuple[int, str]:
    for error_type, status, code in _MAPPING:
        if isinstance(exc, error_type):
            return status, code
    return 502, "llm_upstream_error"


def upstream_error(exc: LLMError, details: list[dict[str, Any]] | None = None) -> UpstreamError:
    status, code = classify(exc)
    headers = {}
    if isinstance(exc, LLMRateLimitError):
        headers["Retry-After"] = str(exc.retry_after or DEFAULT_RETRY_AFTER_SECONDS)
    elif isinstance(exc, LLMCircuitOpenError):
        headers["Retry-After"] = str(exc.retry_after)
    return UpstreamError(
        f"The LLM request failed: {exc.message}",
        status_code=status,
        code=code,
        details=details,
        headers=headers,
    )
