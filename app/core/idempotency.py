"""`Idempotency-Key` for chat sends: a retry with the same key and request gets the original
result and stores nothing twice, across processes (the database's unique constraint decides
who runs the request).

- Same key, same request, finished: the stored response again (`Idempotent-Replayed: true`).
- Same key, same request, still running: wait for it (up to IDEMPOTENCY_WAIT_SECONDS), then
  409 `idempotency_key_in_progress`; never a second LLM call.
- Same key, another request: 422 `idempotency_key_reused`.
- A request that fails before anything is stored (validation, limits) frees its key; one whose
  turn was stored keeps its outcome, errors included. Keys expire after IDEMPOTENCY_TTL_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.errors import AppError, ConflictError, ValidationFailedError
from app.core.security import sha256_hex
from app.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEPT_HEADERS = ("retry-after", "x-llm-attempts", "x-llm-fallback", "x-llm-provider", "x-llm-model")


@dataclass(frozen=True)
class Claim:
    """This request runs: it owns the key."""

    id: uuid.UUID


@dataclass(frozen=True)
class Replay:
    """The key's first request has finished: answer with its outcome."""

    status: int
    response: dict[str, Any]
    headers: dict[str, str]


class ReplayedError(AppError):
    """A stored error, raised again so it is rendered like the original."""

    def __init__(self, status: int, stored: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(
            stored.get("message"),
            code=stored.get("code"),
            details=stored.get("details"),
            headers={**headers, REPLAYED_HEADER: "true"},
        )
        self.status_code = status


def fingerprint(request: Request, payload: Any, *extra: Any) -> str:
    canonical = json.dumps([request.method, request.url.path, payload, *extra], sort_keys=True)
    return sha256_hex(canonical)


class IdempotencyStore:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        workspace_id: uuid.UUID,
        caller: str,
        settings: Settings,
    ) -> None:
        self.maker = maker
        self.workspace_id = workspace_id
        self.caller = caller
        self.ttl = timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
        self.wait_seconds = settings.IDEMPOTENCY_WAIT_SECONDS
        # A running claim older than this was abandoned (its process died): it can be taken.
        self.abandoned_after = timedelta(seconds=settings.LLM_TOTAL_TIMEOUT + 60)
        self.poll_seconds = settings.STREAM_POLL_SECONDS

    async def begin(self, key: str, print_: str) -> Claim | Replay:
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
            raise ValidationFailedError(
                f"{HEADER} must be 1..{MAX_KEY_LENGTH} printable ASCII characters.",
                code="invalid_idempotency_key",
            )
        deadline = time.monotonic() + self.wait_seconds
        while True:
            claim = await self._try_claim(key, print_)
            if claim is not None:
                return claim
            async with self.maker() as db:
                row = await self._find(db, key)
            if row is None:
                continue  # it expired and was removed meanwhile: claim it
            if row.fingerprint != print_:
                raise ValidationFailedError(
                    f"This {HEADER} was used for a different request; use a new key for a new "
                    "request.",
                    code="idempotency_key_reused",
                )
            if row.status == "done" and row.response is not None:
                return Replay(row.response_status or 200, row.response, row.response_headers or {})
            if await self._take_over_abandoned(row):
                return Claim(row.id)
            if time.monotonic() >= deadline:
                raise ConflictError(
                    f"A request with this {HEADER} is still running; retry shortly.",
                    code="idempotency_key_in_progress",
                    headers={"Retry-After": "1"},
                )
            await asyncio.sleep(self.poll_seconds)

    async def finish(
        self, claim: Claim, status: int, response: dict[str, Any], headers: dict[str, str]
    ) -> None:
        kept = {k: v for k, v in headers.items() if k.lower() in KEPT_HEADERS}
        async with self.maker() as db, db.begin():
            await db.execute(
                update(IdempotencyKey)
                .where(
                    IdempotencyKey.workspace_id == self.workspace_id, IdempotencyKey.id == claim.id
                )
                .values(
                    status="done", response_status=status, response=response, response_headers=kept
                )
            )

    async def release(self, claim: Claim) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.workspace_id == self.workspace_id, IdempotencyKey.id == claim.id
                )
            )

    async def _try_claim(self, key: str, print_: str) -> Claim | None:
        now = datetime.now(UTC)
        claim_id = uuid.uuid4()
        try:
            async with self.maker() as db, db.begin():
                # Expired keys of this workspace go first (so an expired key can be reused).
                await db.execute(
                    delete(IdempotencyKey).where(
                        IdempotencyKey.workspace_id == self.workspace_id,
                        IdempotencyKey.expires_at < now,
                    )
                )
                db.add(
                    IdempotencyKey(
                        id=claim_id,
                        workspace_id=self.workspace_id,
                        caller=self.caller,
                        key=key,
                        fingerprint=print_,
                        status="running",
                        created_at=now,
                        expires_at=now + self.ttl,
                    )
                )
        except IntegrityError:
            return None
        return Claim(claim_id)

    async def _find(self, db: AsyncSession, key: str) -> IdempotencyKey | None:
        result = await db.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.workspace_id == self.workspace_id,
                IdempotencyKey.caller == self.caller,
                IdempotencyKey.key == key,
            )
        )
        row: IdempotencyKey | None = result.scalar_one_or_none()
        return row

    async def _take_over_abandoned(self, row: IdempotencyKey) -> bool:
        now = datetime.now(UTC)
        if row.status != "running" or row.created_at > now - self.abandoned_after:
            return False
        async with self.maker() as db, db.begin():
            result = await db.execute(
                update(IdempotencyKey)
                .where(
                    IdempotencyKey.id == row.id,
                    IdempotencyKey.status == "running",
                    IdempotencyKey.created_at == row.created_at,
                )
                .values(created_at=now)
            )
        return bool(getattr(result, "rowcount", 0) == 1)


def store_for(
    maker: async_sessionmaker[AsyncSession], principal: Any, settings: Settings
) -> IdempotencyStore:
    """The store of a caller's keys (per API key, or per user)."""
    caller = f"key:{principal.api_key_id}" if principal.api_key_id else f"user:{principal.user_id}"
    return IdempotencyStore(maker, principal.workspace_id, caller, settings)


IDEMPOTENCY_DOC = (
    f"\n\nSend an `{HEADER}` header (1..255 characters, e.g. a UUID) to make a retry safe: the "
    "same key with the same request returns the first result (with `Idempotent-Replayed: "
    "true`) and stores nothing twice; while the first is still running a retry waits for it "
    "(or gets 409 `idempotency_key_in_progress`); the same key with a different request is 422 "
    "`idempotency_key_reused`. Keys are kept for `IDEMPOTENCY_TTL_SECONDS` (a day by default)."
)


def stored_turn(exc: AppError) -> bool:
    """Whether a failed turn had stored the user's message (its details name the reply)."""
    return any("assistant_message_id" in d for d in exc.details or [])


async def run_idempotent(
    store: IdempotencyStore | None,
    key: str | None,
    print_: str,
    handler: Callable[[], Awaitable[JSONResponse]],
) -> Response:
    """Run a JSON handler once per key; see the module's docstring."""
    if store is None or key is None:
        return await handler()
    outcome = await store.begin(key, print_)
    if isinstance(outcome, Replay):
        return replay_response(outcome)
    try:
        response = await handler()
    except AppError as exc:
        if stored_turn(exc):
            error: dict[str, Any] = {"kind": "error", "code": exc.code, "message": exc.message}
            if exc.details:
                error["details"] = exc.details
            await asyncio.shield(store.finish(outcome, exc.status_code, error, exc.headers))
        else:
            await asyncio.shield(store.release(outcome))
        raise
    except BaseException:
        await asyncio.shield(store.release(outcome))
        raise
    body = json.loads(bytes(response.body))
    await store.finish(
        outcome, response.status_code, {"kind": "json", "body": body}, dict(response.headers)
    )
    return response


def replay_response(replay: Replay) -> JSONResponse:
    if replay.response.get("kind") == "error":
        raise ReplayedError(replay.status, replay.response, replay.headers)
    return JSONResponse(
        replay.response.get("body"),
        status_code=replay.status,
        headers={**replay.headers, REPLAYED_HEADER: "true"},
    )
