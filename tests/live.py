"""Real HTTP for the streaming tests: uvicorn servers on loopback ports (in the test's loop, or
as subprocesses), and an SSE reader.

The API and the fake upstream run as real uvicorn servers (in the test's event loop), so bytes
go through sockets exactly as in production: chunked responses, disconnects, reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Run `app` under uvicorn on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    # Leave the test runner's Ctrl-C handling alone.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        task.cancel()
        raise RuntimeError("the test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=15)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_process(
    env: dict[str, str], target: tuple[str, ...] = ("--factory", "app.main:create_app")
) -> Iterator[str]:
    """The API as a uvicorn subprocess of `target` (its import string and flags), serving
    `/health`; yields its base URL and terminates it afterwards."""
    port = free_port()
    # Its log goes to a file, not a pipe: a pipe nobody reads fills up (64 KiB) and then
    # blocks the process on its next log line.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "uvicorn",
            *target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(log.read().decode(errors="replace") or "died")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("the API process did not start")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextlib.asynccontextmanager
async def worker_process(
    database_url: str, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m app.worker` on `database_url` (a 2 s lease, polling every 0.1 s: a killed
    worker's jobs are claimed again soon), with `env` added; killed afterwards if still alive."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "development",
        "JOBS_POLL_SECONDS": "0.1",
        "JOBS_LEASE_SECONDS": "2",
        "OUTBOUND_ALLOW_PRIVATE_NETWORKS": "true",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.worker",
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@dataclass
class Event:
    event: str
    data: Any
    id: str | None


@dataclass
class Stream:
    """What a client saw on one event-stream response."""

    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    _chunks: AsyncIterator[bytes] | None = None
    _buffer: bytes = b""

    @property
    def names(self) -> list[str]:
        return [e.event for e in self.events]

    @property
    def text(self) -> str:
        return "".join(e.data["content"] for e in self.events if e.event == "delta")

    @property
    def last(self) -> Event:
        return self.events[-1]

    def of(self, name: str) -> list[Event]:
        return [e for e in self.events if e.event == name]


async def read_events(
    response: httpx.Response, stream: Stream | None = None, *, stop_after: int | None = None
) -> Stream:
    """Parse an SSE body as a browser would (lines, blank line ends an event), keeping comments.

    With `stop_after`, return once that many events have arrived; pass the returned `Stream`
    back in to go on reading the same response.
    """
    stream = stream or Stream()
    if stream._chunks is None:
        stream._chunks = response.aiter_bytes()
    name, data, event_id = "message", [], None
    while stop_after is None or len(stream.events) < stop_after:
        if b"\n" not in stream._buffer:
            try:
                stream._buffer += await anext(stream._chunks)
            except StopAsyncIteration:
                break
            continue
        raw, stream._buffer = stream._buffer.split(b"\n", 1)
        line = raw.decode().rstrip("\r")
        if line.startswith(":"):
            stream.comments.append(line[1:].strip())
        elif line == "":
            if data:
                stream.events.append(Event(name, json.loads("\n".join(data)), event_id))
            name, data = "message", []
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                event_id = value
    return stream


async def stream_request(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, Stream]:
    """Send a request and read its whole event stream (bounded by the client's timeout)."""
    async with client.stream(method, url, **kwargs) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response, await read_events(response)
        await response.aread()
        return response, Stream()
