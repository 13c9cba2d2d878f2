"""Property-based fuzzing of every operation in the OpenAPI schema with schemathesis.

The app runs under uvicorn in a thread of this process, on its own migrated database, with the
echo provider (no network). Requests are authenticated with a real user token, or a real project
API key for the key-only endpoints. Every response must: not be a 5xx, use a documented status
code and content type, match its documented schema, and (for errors) use the error shape.
Both valid (positive) and invalid (negative) inputs are generated. Bounded: a fixed number of
examples per operation and mode, derandomized so CI runs are repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

# Where every 4.x release defines them (newer ones also re-export them from schemathesis.checks).
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from tests.conftest import alembic_config, make_settings

EXAMPLES_PER_OPERATION = 30
KEY_ONLY_PREFIXES = ("/v1/", "/api/v1/")


@contextlib.contextmanager
def _server(app: Any) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def live_api(database_factory: Callable[[], str]) -> Iterator[dict[str, Any]]:
    url = database_factory()
    command.upgrade(alembic_config(url), "head")
    app_settings = make_settings(
        url,
        LLM_PROVIDER="echo",
        OPENAI_API_KEY=None,
        LLM_BASE_URL=None,
        RATE_LIMIT_USER_PER_MINUTE=0,
        RATE_LIMIT_API_KEY_PER_MINUTE=0,
        RATE_LIMIT_PROJECT_PER_MINUTE=0,
        RATE_LIMIT_END_USER_PER_MINUTE=0,
        LOGIN_ATTEMPTS_PER_IP_PER_MINUTE=0,
        REGISTRATIONS_PER_IP_PER_HOUR=0,
        LOGIN_FAILURES_PER_ACCOUNT=0,
        SESSION_TURN_WAIT_SECONDS=2,
        IDEMPOTENCY_WAIT_SECONDS=2,
        LOG_LEVEL="ERROR",
    )
    with _server(create_app(app_settings)) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            email = "fuzz@example.com"
            http.post("/auth/register", json={"email": email, "password": "password123"})
            token = http.post(
                "/auth/login", data={"username": email, "password": "password123"}
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            project = http.post("/projects", json={"name": "Fuzz"}, headers=auth).json()
            key = http.post(
                f"/projects/{project['id']}/api-keys",
                json={"name": "fuzz", "scopes": ["chat", "sessions:read", "sessions:write"]},
                headers=auth,
            ).json()["key"]
        yield {"base": base, "user": auth, "key": {"Authorization": f"Bearer {key}"}}


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error uses the documented shape (OpenAI's under /v1/)."""
    if response.status_code < 400:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"not the error shape: {body!r}"
    if case.path.startswith("/v1/"):
        assert {"message", "type", "code"} <= set(error), error
    else:
        assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), error
    return True


def test_every_operation_holds_under_fuzzing(live_api: dict[str, Any]) -> None:
    def headers_for(case: Any) -> dict[str, str]:
        user_or_key = "key" if case.path.startswith(KEY_ONLY_PREFIXES) else "user"
        headers: dict[str, str] = live_api[user_or_key]
        return headers

    schema = schemathesis.openapi.from_url(f"{live_api['base']}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result, mode in itertools.product(
        list(schema.get_all_operations()), (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ):
        operation = result.ok()
        operations += 1
        path = operation.path

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case: Any) -> None:
            sent = headers_for(case)
            if case.headers and any(k.lower() == "authorization" for k in case.headers):
                sent = {}
            case.call_and_validate(
                base_url=live_api["base"],
                headers=sent,
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                    error_shape,
                ],
            )

        try:
            fuzz()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # no input to make invalid (e.g. /health)
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {path} ({mode.value}): {exc}"[:2000])
    assert operations >= 70
    assert not failures, "\n\n".join(failures)
