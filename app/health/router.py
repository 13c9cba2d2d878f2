"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from app import __version__
from app.core.dependencies import LLMRegistryDep, SettingsDep
from app.core.errors import AppError, ErrorResponse, UnauthorizedError
from app.core.metrics import Metrics

router = APIRouter(tags=["Health"])

READY_TIMEOUT_SECONDS = 3.0


class CircuitRead(BaseModel):
    provider: str
    model: str
    state: str = Field(description="`closed` (in use), `open` (skipped), `half_open` (trying).")
    consecutive_failures: int
    retry_in_seconds: float | None = Field(description="When an open circuit is tried again.")


class LLMStatus(BaseModel):
    provider: str
    model: str
    configured_providers: list[str]
    circuits: list[CircuitRead] = Field(
        description="This process's circuit breakers, one per provider+model it has called."
    )
    warning: str | None = None


class HealthRead(BaseModel):
    status: str = Field(examples=["ok"])
    version: str
    environment: str
    database: str = Field(description="The database backend: sqlite or postgresql.")
    llm: LLMStatus


class ReadyRead(BaseModel):
    status: str = Field(examples=["ready"])


class NotReadyError(AppError):
    status_code = 503
    code = "not_ready"
    message = "The database is not answering."


@router.get("/health", response_model=HealthRead)
async def health(request: Request, settings: SettingsDep, registry: LLMRegistryDep) -> Any:
    """Liveness: the process is up. Also says which LLM provider answers by default."""
    warning = None
    if registry.default_name == "echo":
        warning = (
            "No LLM API key is configured: the built-in echo provider answers by repeating the "
            "message. Set GROQ_API_KEY, OPENAI_API_KEY or OPENROUTER_API_KEY for real replies."
        )
    return HealthRead(
        status="ok",
        version=__version__,
        environment=settings.ENVIRONMENT,
        database=request.app.state.engine.dialect.name,
        llm=LLMStatus(
            provider=registry.default_name,
            model=registry.default_model,
            configured_providers=sorted(registry.providers),
            circuits=[CircuitRead(**c) for c in registry.breakers.snapshot()],
            warning=warning,
        ),
    )


@router.get(
    "/ready",
    response_model=ReadyRead,
    responses={503: {"model": ErrorResponse, "description": "The database is not answering."}},
)
async def ready(request: Request) -> ReadyRead:
    """Readiness: 200 when the database answers, else 503."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise NotReadyError() from exc
    return ReadyRead(status="ready")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    """Prometheus metrics. With METRICS_TOKEN set, scrapers must send it as a bearer token."""
    token = settings.METRICS_TOKEN
    if token is not None:
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise UnauthorizedError("Send METRICS_TOKEN as a bearer token.", code="invalid_token")
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
