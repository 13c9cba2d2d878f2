"""Time to first `delta`: what the platform adds to a streamed chat reply.

Starts the fake OpenAI upstream (tests/fake_openai.py) and the API as real uvicorn processes on
free 127.0.0.1 ports, with a throwaway database, then alternates two measurements in one run:

- direct:   POST upstream /v1/chat/completions (stream) -> first chunk with non-empty content
- platform: POST /chat {"stream": true}                  -> first `event: delta`

and prints p50/p95/p99/mean for both, the milliseconds the platform adds, and the ratio; the same
for the whole stream (to `[DONE]` / the terminal `done` event). Every platform stream must end
with exactly one `done` event; failures are counted, reported, and not used as samples (the exit
status is then 1).

    .venv/bin/python -m tests.bench.stream_ttfd
    .venv/bin/python -m tests.bench.stream_ttfd --requests 500 --concurrency 8 --json
    .venv/bin/python -m tests.bench.stream_ttfd \
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

With a Postgres URL a database `bench_<random>` is created on that server and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import Process
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MODEL = "gpt-4o-mini"
PROMPT = "You are a benchmark assistant. Answer briefly."
MESSAGE = "How fast is the first token of this streamed reply?"
MAX_EVENTS = 10_000  # per stream
PERCENTILES = (50, 95, 99)


class BenchError(Exception):
    """A setup problem or a platform that does not stream: reported, then the run stops."""


class StreamFailed(Exception):
    """One measured stream went wrong; counted by reason, not used as a sample."""


@dataclass
class Samples:
    first: list[float] = field(default_factory=list)  # ms to the first delta
    total: list[float] = field(default_factory=list)  # ms to the terminal event
    errors: Counter[str] = field(default_factory=Counter)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def spawn(name: str, command: list[str], env: dict[str, str], logs: Path) -> Process:
    """Start a child with its output in `<logs>/<name>.log`, in its own session (so a Ctrl-C
    reaches only us and we stop the children in order)."""
    with (logs / f"{name}.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            *command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )


async def stop(process: Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await asyncio.wait_for(process.wait(), 5)


def tail(logs: Path, name: str, lines: int = 20) -> str:
    path = logs / f"{name}.log"
    content = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(content.splitlines()[-lines:])


async def wait_ready(
    client: httpx.AsyncClient, url: str, process: Process, name: str, seconds: float = 30
) -> None:
    """Until `url` answers below 500 (a 405 means the upstream is listening), at most
    `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise BenchError(f"{name} exited with status {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get(url)).status_code < 500:
                return
        await asyncio.sleep(0.1)
    raise BenchError(f"{name} was not ready at {url} within {seconds:g} s")


async def postgres_admin(admin: URL, statement: str) -> None:
    """CREATE/DROP DATABASE: outside a transaction, on the server's admin database."""
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def measure_direct(client: httpx.AsyncClient, upstream: str) -> tuple[float, float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": PROMPT}, {"role": "user", "content": MESSAGE}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    async with aconnect_sse(client, "POST", f"{upstream}/v1/chat/completions", json=body) as src:
        if src.response.status_code != 200:
            raise StreamFailed(f"upstream http {src.response.status_code}")
        count = 0
        async for event in src.aiter_sse():
            count += 1
            if event.data == "[DONE]":
                if first is None:
                    raise StreamFailed("upstream [DONE] before any content")
                return first, (time.perf_counter() - started) * 1000
            if first is None:
                choices = json.loads(event.data).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    first = (time.perf_counter() - started) * 1000
            if count >= MAX_EVENTS:
                break
    raise StreamFailed("upstream stream ended without [DONE]")


async def measure_platform(
    client: httpx.AsyncClient, api: str, body: dict[str, Any], sessions: list[str] | None = None
) -> tuple[float, float]:
    """(ms to first delta, ms to the terminal event). Appends the session id to `sessions`.
    A 200 that is not an event stream is a BenchError: the streaming endpoint is not there."""
    started = time.perf_counter()
    first: float | None = None
    counts: Counter[str] = Counter()
    async with aconnect_sse(client, "POST", f"{api}/chat", json=body) as source:
        response = source.response
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
            if response.status_code != 200:
                raise StreamFailed(f"http {response.status_code}: {response.text[:120]}")
            raise BenchError(
                f"the API did not answer with text/event-stream (status {response.status_code}, "
                f"content-type {response.headers.get('content-type')!r}): {response.text[:300]}"
            )
        async for event in source.aiter_sse():
            counts[event.event] += 1
            if event.event == "delta" and first is None:
                first = (time.perf_counter() - started) * 1000
            elif event.event == "session" and sessions is not None:
                sessions.append(json.loads(event.data)["session_id"])
            elif event.event == "error":
                code = (json.loads(event.data).get("error") or {}).get("code")
                raise StreamFailed(f"error event: {code}")
            if counts.total() >= MAX_EVENTS:
                break
        end = (time.perf_counter() - started) * 1000
    if counts["done"] != 1:
        raise StreamFailed(f"{counts['done']} done events (want exactly 1)")
    if first is None:
        raise StreamFailed("done without any delta")
    return first, end


async def sign_up(client: httpx.AsyncClient, api: str) -> dict[str, str]:
    """A new account's bearer-token headers."""
    email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    r = await client.post(f"{api}/auth/register", json={"email": email, "password": password})
    r.raise_for_status()
    r = await client.post(f"{api}/auth/login", data={"username": email, "password": password})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def setup_tenant(client: httpx.AsyncClient, api: str) -> tuple[dict[str, str], str]:
    headers = await sign_up(client, api)
    r = await client.post(f"{api}/projects", json={"name": "bench"}, headers=headers)
    r.raise_for_status()
    project_id = str(r.json()["id"])
    r = await client.post(
        f"{api}/projects/{project_id}/prompts", json={"content": PROMPT}, headers=headers
    )
    r.raise_for_status()
    return headers, project_id


async def run_load(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    upstream: str,
    api: str,
    body: dict[str, Any],
    count: int,
) -> dict[str, Samples]:
    """`count` requests per path, each pair in random order, pulled by `concurrency` workers."""
    queue: deque[str] = deque()
    for _ in range(count):
        queue.extend(random.sample(["direct", "platform"], 2))
    results = {"direct": Samples(), "platform": Samples()}

    async def worker() -> None:
        while queue:
            kind = queue.popleft()
            try:
                if kind == "direct":
                    first, total = await measure_direct(client, upstream)
                else:
                    first, total = await measure_platform(client, api, body)
            except (StreamFailed, httpx.HTTPError, ValueError, KeyError) as exc:
                results[kind].errors[str(exc) or type(exc).__name__] += 1
                continue
            except BaseException:
                queue.clear()  # the other workers stop after their current request
                raise
            results[kind].first.append(first)
            results[kind].total.append(total)

    outcomes = await asyncio.gather(
        *(worker() for _ in range(args.concurrency)), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return results


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else []
    out = {f"p{p}": cuts[p - 1] if cuts else values[0] for p in PERCENTILES}
    out["mean"] = statistics.fmean(values)
    return {k: round(v, 3) for k, v in out.items()}


def compare(direct: list[float], platform: list[float]) -> dict[str, dict[str, float]]:
    d, p = summary(direct), summary(platform)
    return {
        "direct": d,
        "platform": p,
        "added_ms": {k: round(p[k] - d[k], 3) for k in d if k in p},
        "ratio": {k: round(p[k] / d[k], 3) for k in d if k in p and d[k] > 0},
    }


def print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    keys = [*(f"p{p}" for p in PERCENTILES), "mean"]
    print(f"\n{title:<28}" + "".join(f"{k:>10}" for k in keys))
    rows = (
        ("direct", "  direct (ms)", ".2f"),
        ("platform", "  platform (ms)", ".2f"),
        ("added_ms", "  added (ms)", "+.2f"),
        ("ratio", "  platform / direct", ".2f"),
    )
    for row, label, spec in rows:
        cells = (format(table[row][k], spec) if k in table[row] else "-" for k in keys)
        print(f"{label:<28}" + "".join(f"{cell:>10}" for cell in cells))


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.database_url:
        admin = make_url(args.database_url)
        if admin.host not in LOOPBACK:
            raise BenchError(f"refusing a non-loopback database host: {admin.host}")
        database_url = admin.set(database=f"bench_{secrets.token_hex(6)}")
        await postgres_admin(admin, f'CREATE DATABASE "{database_url.database}"')
    else:
        admin, database_url = None, make_url(f"sqlite+aiosqlite:///{workdir / 'bench.db'}")
    processes: list[Process] = []
    up_port, api_port = free_port(), free_port()
    upstream, api = f"http://{HOST}:{up_port}", f"http://{HOST}:{api_port}"
    env = {
        **os.environ,
        "NO_PROXY": "127.0.0.1,localhost",
        "FAKE_OPENAI_LATENCY_MS": str(args.upstream_latency_ms),
        "FAKE_OPENAI_CHUNK_DELAY_MS": str(args.chunk_delay_ms),
        "FAKE_OPENAI_RECORD": "0",
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "LLM_PROVIDER": "openai",
        "LLM_MODEL": MODEL,
        "LLM_BASE_URL": f"{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ENVIRONMENT": "development",
        "REDIS_URL": "",
        # Limits on, but never reached by a benchmark's request rate.
        "RATE_LIMIT_USER_PER_MINUTE": "100000000",
        "RATE_LIMIT_PROJECT_PER_MINUTE": "100000000",
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "--factory", "--host", HOST, "--workers", "1"]
    limits = httpx.Limits(max_connections=2 * args.concurrency + 4)
    timeout = httpx.Timeout(30.0, connect=5.0)
    try:
        async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
            command = [*uvicorn, "--port", str(up_port), "tests.fake_openai:create_app"]
            processes.append(up := await spawn("upstream", command, env, workdir))
            alembic = [sys.executable, "-m", "alembic", "upgrade", "head"]
            processes.append(migrate := await spawn("alembic", alembic, env, workdir))
            try:
                status = await asyncio.wait_for(migrate.wait(), 120)
            except TimeoutError:
                raise BenchError("migrations took over 120 s") from None
            if status != 0:
                raise BenchError(f"migrations failed:\n{tail(workdir, 'alembic')}")
            command = [*uvicorn, "--port", str(api_port), "app.main:create_app"]
            processes.append(app := await spawn("api", command, env, workdir))
            for name, url, process in (
                ("upstream", f"{upstream}/v1/chat/completions", up),
                ("api", f"{api}/ready", app),
            ):
                try:
                    await wait_ready(client, url, process, name)
                except BenchError as exc:
                    raise BenchError(f"{exc}\n{tail(workdir, name)}") from None

            headers, project_id = await setup_tenant(client, api)
            client.headers.update(headers)
            body: dict[str, Any] = {"project_id": project_id, "message": MESSAGE, "stream": True}
            sessions: list[str] = []
            try:  # the first stream answers: is there a streaming endpoint at all?
                await measure_platform(client, api, body, sessions)
            except (StreamFailed, ValueError, KeyError) as exc:
                raise BenchError(f"the first platform stream failed: {exc!r}") from None
            if args.same_session and sessions:
                body["session_id"] = sessions[0]
            await run_load(args, client, upstream, api, body, args.warmup)
            results = await run_load(args, client, upstream, api, body, args.requests)
    finally:
        for process in reversed(processes):
            await stop(process)
        if admin is not None and database_url.database:
            drop = f'DROP DATABASE IF EXISTS "{database_url.database}" WITH (FORCE)'
            await postgres_admin(admin, drop)
    direct, platform = results["direct"], results["platform"]
    return {
        "config": {
            "requests_per_path": args.requests,
            "warmup_per_path": args.warmup,
            "concurrency": args.concurrency,
            "upstream_latency_ms": args.upstream_latency_ms,
            "chunk_delay_ms": args.chunk_delay_ms,
            "database": database_url.get_backend_name(),
            "same_session": args.same_session,
        },
        "samples": {"direct": len(direct.first), "platform": len(platform.first)},
        "errors": {"direct": dict(direct.errors), "platform": dict(platform.errors)},
        "first_delta": compare(direct.first, platform.first),
        "total_stream": compare(direct.total, platform.total),
    }


Bench = Callable[[argparse.Namespace, Path], Awaitable[dict[str, Any]]]


def run_bench(name: str, bench: Bench, args: argparse.Namespace) -> dict[str, Any] | int:
    """Run `bench` in a temporary directory within `args.timeout`: its result, or the exit
    status after saying what stopped it (2: setup or timeout, 130: interrupted)."""

    async def within(workdir: Path) -> dict[str, Any]:
        async with asyncio.timeout(args.timeout):
            return await bench(args, workdir)

    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        try:
            return asyncio.run(within(Path(workdir)))
        except BenchError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
        except httpx.HTTPError as exc:
            print(f"{name}: setup request failed: {exc!r}", file=sys.stderr)
        except TimeoutError:
            print(f"{name}: gave up after --timeout {args.timeout:g} s", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"{name}: interrupted; subprocesses stopped", file=sys.stderr)
            return 130
    return 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.stream_ttfd",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=200, help="measured requests per path")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests per path")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--upstream-latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--database-url", help="a Postgres server URL (default: SQLite temp file)")
    parser.add_argument("--same-session", action="store_true", help="reuse one chat session")
    parser.add_argument("--timeout", type=float, default=300.0, help="overall limit, seconds")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 100_000 and 0 <= args.warmup <= 10_000):
        parser.error("--requests must be 1..100000 and --warmup 0..10000")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be 1..256")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_bench("stream_ttfd", bench, args)
    if isinstance(result, int):
        return result
    failed = sum(result["errors"]["platform"].values()) + sum(result["errors"]["direct"].values())
    if args.json:
        print(json.dumps(result, indent=2))
        return 1 if failed else 0
    cfg = result["config"]
    print(
        f"streams: {result['samples']['direct']} direct, {result['samples']['platform']} platform"
        f" | concurrency {cfg['concurrency']} | upstream latency {cfg['upstream_latency_ms']:g} ms"
        f" | chunk delay {cfg['chunk_delay_ms']:g} ms | {cfg['database']}"
        f"{' | same session' if cfg['same_session'] else ''}"
    )
    print_table("time to first delta", result["first_delta"])
    print_table("total stream", result["total_stream"])
    for kind in ("direct", "platform"):
        for reason, count in result["errors"][kind].items():
            print(f"FAILED {kind}: {count} x {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
