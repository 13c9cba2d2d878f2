"""Chat under load: what the platform adds to a turn, what a turn costs, and LiteLLM for scale.

One run (under 10 minutes on 2 cores) starts the fake OpenAI upstream (tests/fake_openai.py, one
process: model `bench-slow` answers after 200 ms, `bench-fast` at once) and the API as production
runs it (`uvicorn --workers 2`, uvloop, httptools, Postgres, Redis, `WORKERS_IN_API=false`
with `python -m app.worker` beside it) on free 127.0.0.1 ports, with a throwaway database
`bench_<random>`. It prepares two projects (2 prompts, history_window 10, an API key each)
with `--sessions` sessions of ~10 messages each, plus a 10-message session and a 10,000-message
one (bulk-inserted), then measures, each wrk run after a 3 s warm-up:

a) upstream 200 ms: wrk on the upstream directly, then on `POST /chat` (bench-slow project);
b) upstream 0 ms: the same with bench-fast, plus what a turn costs the server;
c) LiteLLM's proxy (2 workers, own venv `.bench/litellm-venv`, master key, no database) in front
   of the same upstream, sent the same body;
d) sequential turns alternating between the 10-message and the 10,000-message session (httpx);
e) streamed turns: time to the first delta, direct vs platform (tests/bench/stream_ttfd.py);
f) sequential turns (httpx) alternating between the 10-message session and one of a project
   grounded in its knowledge base: 10,000 chunks of the standard library's docstrings, written
   directly to the tables, `knowledge: {enabled: true, top_k: 4}`.

    .venv/bin/python -m tests.bench.chat_load
    .venv/bin/python -m tests.bench.chat_load --duration 5 --history-turns 20 --json
    python3 scripts/dev.py bench --no-litellm

The figures:

- req/s and p50/p95/p99/mean: wrk's (`-t 2 -c 32 --latency`), measured run only. Platform
  requests are `POST /chat` with the project's API key, each wrk thread rotating over its own
  slice of sessions (a session answers one turn at a time). Direct requests send the upstream
  what the platform sends it for a turn (2 system prompts, 10 history messages, the message).
- added: platform minus direct, per percentile.
- CPU per request (per turn for the platform): utime + stime from /proc/<pid>/stat of the
  server's processes (the API's uvicorn master and workers; every LiteLLM process; the fake
  upstream for direct runs) over the measured run, divided by its 2xx responses.
- peak RSS per worker: VmHWM from /proc/<pid>/status of each API worker, after phase b.
- DB round trips per turn: the increase of `db_round_trips_total` (statements, BEGINs, COMMITs,
  ROLLBACKs) divided by that of `http_requests_total{route="/chat",status="200"}`, both read
  from `GET /metrics` (all workers, through PROMETHEUS_MULTIPROC_DIR; "n/a" when /metrics lacks
  them), over phase d's measured turns (one at a time, so exact; the target's figure) and over
  phase b's run (under load: the up to 32 turns in flight when the counters are read at either
  end make it uncertain by about ±0.05).
- long / short: a turn's p50 (and mean) on the 10,000-message session over the 10-message one.
- knowledge on - off: a grounded turn's p50/p95/mean minus a plain one's (phase f), and each
  one's DB round trips per turn (read from /metrics around every turn).

Exit status: 0 even when a target is missed (this is a report), 1 if a platform request failed
(socket error, non-2xx, failed stream), 2 on a setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import operator
import os
import platform
import secrets
import subprocess
import sys
import time
import uuid
import warnings
from asyncio.subprocess import Process
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.bench.stream_ttfd import (
    HOST,
    LOOPBACK,
    ROOT,
    BenchError,
    compare,
    free_port,
    postgres_admin,
    run_bench,
    run_load,
    spawn,
    stop,
    summary,
    tail,
    wait_ready,
)

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/15"
WRK = Path("/usr/bin/wrk")
LITELLM_VENV = ROOT / ".bench" / "litellm-venv"
FAST, SLOW = "bench-fast", "bench-slow"
SLOW_MS = 200
PROMPTS = ("You are a benchmark assistant. Answer briefly.", "Prefer short, plain sentences.")
MESSAGE = "How long does one chat turn take on this platform?"
REPLY = f"Fake reply to: {MESSAGE}"  # what the fake upstream answers
HISTORY_WINDOW = 10  # messages each turn sends upstream; the direct body has as many
SESSION_TURNS = 5  # turns per prepared session: 10 messages
LONG_SESSION = 10_000  # messages
KNOWLEDGE_CHUNKS = 10_000  # in the grounded project of phase f
CHUNK_CHARS = 1000
SETUP_CONCURRENCY = 16
WARMUP_SECONDS = 3
HISTORY_WARMUP = 10  # turns per session
STREAM_CONCURRENCY = 8
STREAM_WARMUP = 20  # streams per path
LATENCY_KEYS = ("p50", "p95", "p99", "mean")
CHAT_OK = {("route", "/chat"), ("status", "200")}  # labels of a successful turn in /metrics
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class Run:
    """What every phase needs: the options, the work directory, the servers, a client."""

    def __init__(self, args: argparse.Namespace, workdir: Path, client: httpx.AsyncClient) -> None:
        self.args, self.workdir, self.client = args, workdir, client
        self.started = time.monotonic()
        self.upstream = f"http://{HOST}:{free_port()}"
        self.api = f"http://{HOST}:{free_port()}"

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Project:
    id: str
    key: str  # the API key's secret
    sessions: list[str] = field(default_factory=list)


def checked(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 300:
        raise BenchError(f"{what}: http {response.status_code}: {response.text[:300]}")
    return response.json()


# --- processes -------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root`, then its descendants (found by scanning /proc for parent ids)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop(0)
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of those of `pids` still alive."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of the whole line
    return ticks / os.sysconf("SC_CLK_TCK")


def workers(master: int) -> list[int]:
    """uvicorn's worker processes: multiprocessing children of `master` (not its resource
    tracker)."""
    return [
        pid
        for pid in process_tree(master)[1:]
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- wrk -------------------------------------------------------------------------------------

LUA = """\
-- Generated by tests/bench/chat_load.py. Each thread gets its own slice of request bodies
-- (for the platform: one per session) and sends them round-robin.
local slices = {slices}
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
  thread:set("bodies", slices[(#threads - 1) % #slices + 1])
end

function init(args)
  prepared, position, non2xx = {{}}, 0, 0
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format("POST", {path}, {headers}, body)
  end
end

function request()
  position = position % #prepared + 1
  return prepared[position]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": {{"connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d}}, "latency_ms": {{"p50": %.3f, ' ..
    '"p95": %.3f, "p99": %.3f, "mean": %.3f, "max": %.3f}}}}\\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000))
end
"""


def lua_string(value: str) -> str:
    if "]==]" in value or "\n" in value:
        raise ValueError(f"cannot quote {value!r} for Lua")
    return f"[==[{value}]==]"


def lua_script(path: str, headers: dict[str, str], slices: list[list[str]]) -> str:
    def table(items: list[str]) -> str:
        return "{" + ", ".join(items) + "}"

    return LUA.format(
        slices=table([table([lua_string(body) for body in bodies]) for bodies in slices]),
        path=lua_string(path),
        headers=table([f"[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]),
    )


def upstream_body(model: str) -> str:
    """What the platform sends upstream for a turn: the prompts, HISTORY_WINDOW messages, the
    message (same fields, same order)."""
    history = [
        {"role": role, "content": content}
        for _ in range(HISTORY_WINDOW // 2)
        for role, content in (("user", MESSAGE), ("assistant", REPLY))
    ]
    messages = [
        *({"role": "system", "content": prompt} for prompt in PROMPTS),
        *history,
        {"role": "user", "content": MESSAGE},
    ]
    body = {"model": model, "messages": messages, "temperature": 0.7, "max_tokens": 1000}
    return json.dumps({**body, "stream": False})


def direct_script(model: str, threads: int, key: str = "sk-bench") -> str:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    return lua_script("/v1/chat/completions", headers, [[upstream_body(model)]] * threads)


def platform_script(project: Project, threads: int) -> str:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {project.key}"}
    bodies = [
        json.dumps({"project_id": project.id, "session_id": session, "message": MESSAGE})
        for session in project.sessions
    ]
    return lua_script("/chat", headers, [bodies[i::threads] for i in range(threads)])


async def run_wrk(run: Run, name: str, url: str, script: str, seconds: int) -> dict[str, Any]:
    script_path = run.workdir / f"{name}.lua"
    script_path.write_text(script)
    command = [
        *(str(WRK), "-t", str(run.args.threads), "-c", str(run.args.connections)),
        *("-d", f"{seconds}s", "--timeout", "10s", "--latency", "-s", str(script_path), url),
    ]
    process = await spawn(name, command, dict(os.environ), run.workdir)
    try:
        await asyncio.wait_for(process.wait(), seconds + 60)
    finally:
        await stop(process)
    output = (run.workdir / f"{name}.log").read_text(errors="replace")
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if process.returncode != 0 or line is None:
        raise BenchError(f"wrk {name} failed ({process.returncode}):\n{tail(run.workdir, name)}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    errors = result["errors"]  # errors["status"] counts the 4xx/5xx already in non2xx
    result["failed"] = result["non2xx"] + sum(errors.values()) - errors["status"]
    result["ok"] = result["requests"] - result["non2xx"]
    result["rps"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
    return result


async def metric_totals(run: Run) -> dict[str, float]:
    """`round_trips` (db_round_trips_total, every kind) and `chat_ok`
    (http_requests_total{route="/chat",status="200"}) from /metrics, when there."""
    totals: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        response = await run.client.get(f"{run.api}/metrics")
        if response.status_code != 200:
            return totals
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == "db_round_trips_total":
                    totals["round_trips"] = totals.get("round_trips", 0) + sample.value
                elif sample.name == "http_requests_total" and sample.labels.items() >= CHAT_OK:
                    totals["chat_ok"] = totals.get("chat_ok", 0) + sample.value
    return totals


def round_trips_per_turn(
    before: dict[str, float], after: dict[str, float], digits: int = 2
) -> float | None:
    if {"round_trips", "chat_ok"} <= before.keys() & after.keys():
        turns = after["chat_ok"] - before["chat_ok"]
        if turns > 0:
            return round((after["round_trips"] - before["round_trips"]) / turns, digits)
    return None


async def load(
    run: Run, name: str, url: str, script: str, root_pid: int, metrics: bool = False
) -> dict[str, Any]:
    """A warm-up wrk run, then the measured one, with the CPU of `root_pid`'s process tree and
    (`metrics`) the API's DB round trips per turn."""
    await run_wrk(run, f"{name}-warmup", url, script, WARMUP_SECONDS)
    pids = process_tree(root_pid)
    before = await metric_totals(run) if metrics else {}
    cpu = cpu_seconds(pids)
    result = await run_wrk(run, name, url, script, run.args.duration)
    cpu = cpu_seconds(pids) - cpu
    result["cpu_ms_per_request"] = round(cpu * 1000 / result["ok"], 3) if result["ok"] else None
    if metrics:
        result["db_round_trips_per_turn"] = round_trips_per_turn(before, await metric_totals(run))
    return result


def added_ms(direct: dict[str, Any], platform_: dict[str, Any]) -> dict[str, float]:
    d, p = direct["latency_ms"], platform_["latency_ms"]
    return {k: round(p[k] - d[k], 3) for k in LATENCY_KEYS}


# --- servers and data ------------------------------------------------------------------------


def api_env(run: Run, database_url: URL) -> dict[str, str]:
    """For the upstream, the migrations and the API."""
    metrics_dir = run.workdir / "prometheus"
    metrics_dir.mkdir(exist_ok=True)
    unlimited = "100000000"
    return {
        **os.environ,
        "NO_PROXY": "127.0.0.1,localhost",
        "FAKE_OPENAI_RECORD": "0",
        "FAKE_OPENAI_LATENCY_MS": "0",
        "FAKE_OPENAI_CHUNK_DELAY_MS": "0",
        "FAKE_OPENAI_MODEL_LATENCY_MS": f"{SLOW}={SLOW_MS},{FAST}=0",
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "DATABASE_POOL_SIZE": "10",
        "DATABASE_MAX_OVERFLOW": "10",
        "ENVIRONMENT": "development",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": f"{run.upstream}/v1",
        "LLM_MODEL": FAST,
        "OPENAI_API_KEY": "sk-bench",
        "REDIS_URL": REDIS_URL if run.args.redis else "",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "REGISTRATIONS_PER_IP_PER_HOUR": "0",
        "LOGIN_ATTEMPTS_PER_IP_PER_MINUTE": "0",
        "RATE_LIMIT_USER_PER_MINUTE": unlimited,
        "RATE_LIMIT_API_KEY_PER_MINUTE": unlimited,
        "RATE_LIMIT_PROJECT_PER_MINUTE": unlimited,
        "RATE_LIMIT_END_USER_PER_MINUTE": unlimited,
        # Background work in its own process, as in production: the API's counters (its DB
        # round trips above all) are then the turns' alone.
        "WORKERS_IN_API": "false",
    }


async def start_servers(
    run: Run, database_url: URL, processes: list[Process]
) -> tuple[Process, Process]:
    """The upstream and the migrations side by side, then the API, each appended to `processes`
    as it starts; returns (upstream, API)."""
    env = api_env(run, database_url)
    uvicorn = [
        *(sys.executable, "-m", "uvicorn", "--factory", "--host", HOST, "--no-access-log"),
        *("--loop", "uvloop", "--http", "httptools"),
    ]
    up_port, api_port = run.upstream.rsplit(":", 1)[1], run.api.rsplit(":", 1)[1]
    command = [*uvicorn, "--port", up_port, "tests.fake_openai:create_app"]
    processes.append(upstream := await spawn("upstream", command, env, run.workdir))
    alembic = [sys.executable, "-m", "alembic", "upgrade", "head"]
    processes.append(migrate := await spawn("alembic", alembic, env, run.workdir))
    try:
        status = await asyncio.wait_for(migrate.wait(), 120)
    except TimeoutError:
        raise BenchError("migrations took over 120 s") from None
    if status != 0:
        raise BenchError(f"migrations failed:\n{tail(run.workdir, 'alembic')}")
    command = [*uvicorn, "--port", api_port, "--workers", str(run.args.workers)]
    processes.append(api := await spawn("api", [*command, "app.main:create_app"], env, run.workdir))
    worker_metrics = run.workdir / "prometheus-worker"  # not summed into the API's /metrics
    worker_metrics.mkdir(exist_ok=True)
    worker_env = env | {"PROMETHEUS_MULTIPROC_DIR": str(worker_metrics)}
    worker = [sys.executable, "-m", "app.worker"]
    processes.append(await spawn("worker", worker, worker_env, run.workdir))
    for name, url, process in (
        ("upstream", f"{run.upstream}/v1/chat/completions", upstream),
        ("api", f"{run.api}/ready", api),
    ):
        try:
            await wait_ready(run.client, url, process, name)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{tail(run.workdir, name)}") from None
    return upstream, api


async def create_project(run: Run, headers: dict[str, str], model: str, **fields: Any) -> Project:
    client, api = run.client, run.api
    body = {"name": fields.pop("name", model), "model": model, "history_window": HISTORY_WINDOW}
    body |= fields
    project_id = checked(
        await client.post(f"{api}/projects", json=body, headers=headers), "project"
    )
    project_id = str(project_id["id"])
    for prompt in PROMPTS:
        url = f"{api}/projects/{project_id}/prompts"
        checked(await client.post(url, json={"content": prompt}, headers=headers), "prompt")
    url, body = f"{api}/projects/{project_id}/api-keys", {"name": "bench", "scopes": ["chat"]}
    key = checked(await client.post(url, json=body, headers=headers), "API key")["key"]
    return Project(project_id, key)


async def turn(run: Run, project: Project, session: str | None = None) -> str:
    """One non-streamed turn (a new session without `session`); returns the session id."""
    body = {"project_id": project.id, "message": MESSAGE}
    if session:
        body["session_id"] = session
    headers = {"Authorization": f"Bearer {project.key}"}
    response = await run.client.post(f"{run.api}/chat", json=body, headers=headers)
    return str(checked(response, "chat turn")["session_id"])


async def new_sessions(
    run: Run, project: Project, count: int, limit: asyncio.Semaphore
) -> list[str]:
    """`count` sessions of SESSION_TURNS turns: concurrent across sessions, in order within."""

    async def one() -> str:
        async with limit:
            session = await turn(run, project)
        for _ in range(SESSION_TURNS - 1):
            async with limit:
                await turn(run, project, session)
        return session

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def fill_session(database_url: URL, session_id: str, total: int) -> None:
    """One INSERT of alternating user/assistant messages until the session holds `total`."""
    insert = text(
        "INSERT INTO chat_messages"
        " (id, workspace_id, chat_session_id, seq, role, content, status, created_at)"
        " SELECT gen_random_uuid(), s.workspace_id, s.id, g.seq,"
        "  CASE WHEN g.seq % 2 = 1 THEN 'user' ELSE 'assistant' END,"
        "  CASE WHEN g.seq % 2 = 1 THEN :message ELSE :reply END, 'complete', now()"
        " FROM chat_sessions AS s"
        " CROSS JOIN generate_series(s.message_count + 1, :total) AS g(seq)"
        " WHERE s.id = CAST(:session AS uuid)"
    )
    count = text(
        "UPDATE chat_sessions SET message_count = :total WHERE id = CAST(:session AS uuid)"
    )
    params = {"message": MESSAGE, "reply": REPLY, "total": total, "session": session_id}
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert, params)
            await connection.execute(count, params)
            await connection.execute(text("ANALYZE chat_messages"))
    finally:
        await engine.dispose()


def docstring_chunks(count: int, size: int = CHUNK_CHARS) -> list[str]:
    """`count` chunk texts of real English: windows over the standard library's docstrings
    (each distinct one once, modules in name order), evenly spaced, overlapping when the
    text is short of `count * size` characters. The same for a Python version."""
    seen: dict[str, None] = {}
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in ("antigravity", "this") or "tk" in name:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # noqa: S112 - a platform's missing module is skipped
            continue
        for value in vars(module).values():
            doc = getattr(value, "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200:
                seen.setdefault(" ".join(doc.split()), None)
    corpus = "\n\n".join(seen)
    step = max(1, (len(corpus) - size) // count)
    return [corpus[index * step : index * step + size] for index in range(count)]


async def fill_knowledge(database_url: URL, project_id: str, count: int) -> None:
    """A ready document of `count` chunks in the project, written directly (the indexing
    pipeline has its own benchmark, tests/bench/retrieval.py)."""
    from app.models import KnowledgeChunk, KnowledgeDocument  # the API's own tables

    engine = create_async_engine(database_url)
    texts = docstring_chunks(count)
    try:
        async with engine.begin() as connection:
            workspace = await connection.scalar(
                text("SELECT workspace_id FROM projects WHERE id = CAST(:id AS uuid)"),
                {"id": project_id},
            )
            document_id, now = uuid.uuid4(), datetime.now(UTC)
            await connection.execute(
                insert(KnowledgeDocument).values(
                    id=document_id,
                    workspace_id=workspace,
                    project_id=uuid.UUID(project_id),
                    title="Python standard library docstrings",
                    source="text",
                    mime_type="text/markdown",
                    size_bytes=sum(map(len, texts)),
                    sha256="0" * 64,
                    metadata={},
                    enabled=True,
                    status="ready",
                    char_count=sum(map(len, texts)),
                    chunk_count=count,
                    index_version=1,
                    indexed_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            rows = [
                {
                    "workspace_id": workspace,
                    "public_id": uuid.uuid4(),
                    "project_id": uuid.UUID(project_id),
                    "document_id": document_id,
                    "version": 1,
                    "position": position,
                    "text": chunk,
                    "content_hash": hashlib.sha256(chunk.encode()).hexdigest(),
                    "char_start": position * CHUNK_CHARS,
                    "char_end": (position + 1) * CHUNK_CHARS,
                }
                for position, chunk in enumerate(texts)
            ]
            for start in range(0, len(rows), 1000):
                await connection.execute(insert(KnowledgeChunk), rows[start : start + 1000])
            await connection.execute(text("ANALYZE kb_chunks"))
    finally:
        await engine.dispose()


# --- phases ----------------------------------------------------------------------------------


async def alternating(run: Run, sessions: tuple[tuple[str, Project, str], ...]) -> dict[str, Any]:
    """Sequential turns, one on each (kind, project, session) in turn; failures counted, not
    timed. Also each kind's DB round trips per turn, read from /metrics around every measured
    turn: with one turn at a time, none is in flight when the counters are read."""
    times: dict[str, list[float]] = {kind: [] for kind, _, _ in sessions}
    trips: dict[str, float] = dict.fromkeys(times, 0.0)
    failed = 0
    for index in range(HISTORY_WARMUP + run.args.history_turns):
        for kind, project, session in sessions:
            measured = index >= HISTORY_WARMUP
            before = await metric_totals(run) if measured else {}
            started = time.perf_counter()
            try:
                await turn(run, project, session)
            except (BenchError, httpx.HTTPError):
                failed += 1
                continue
            elapsed = (time.perf_counter() - started) * 1000
            if measured:
                times[kind].append(elapsed)
                trips[kind] += round_trips_per_turn(before, await metric_totals(run), 3) or 0
    return {
        "failed": failed,
        "ms": {kind: summary(values) for kind, values in times.items()},
        "db_round_trips_per_turn": {
            kind: round(trips[kind] / len(times[kind]), 3) if times[kind] else None
            for kind in times
        },
    }


def ratios(over: dict[str, float], under: dict[str, float]) -> dict[str, float]:
    return {k: round(over[k] / under[k], 3) for k in ("p50", "mean") if under.get(k) and over}


async def history_phase(run: Run, project: Project, short: str, long: str) -> dict[str, Any]:
    """Turns alternating between a 10-message and a 10,000-message session."""
    found = await alternating(run, (("short", project, short), ("long", project, long)))
    short_ms, long_ms = found["ms"]["short"], found["ms"]["long"]
    trips = found["db_round_trips_per_turn"]
    return {
        "failed": found["failed"],
        "short_ms": short_ms,
        "long_ms": long_ms,
        "ratio": ratios(long_ms, short_ms),
        "db_round_trips_per_turn": trips["short"],
        "db_round_trips_per_turn_long": trips["long"],
    }


async def knowledge_phase(
    run: Run, plain: Project, plain_session: str, grounded: Project, grounded_session: str
) -> dict[str, Any]:
    """Turns alternating between a project without knowledge and one grounded in
    KNOWLEDGE_CHUNKS chunks (both sessions 10 messages): what retrieval adds to a turn."""
    found = await alternating(
        run, (("off", plain, plain_session), ("on", grounded, grounded_session))
    )
    off, on = found["ms"]["off"], found["ms"]["on"]
    trips = found["db_round_trips_per_turn"]
    return {
        "failed": found["failed"],
        "off_ms": off,
        "on_ms": on,
        "added_ms": {k: round(on[k] - off[k], 3) for k in ("p50", "p95", "mean") if k in on},
        "db_round_trips_per_turn": trips,
        "added_round_trips": round(trips["on"] - trips["off"], 3)
        if None not in trips.values()
        else None,
    }


async def streaming_phase(run: Run, project: Project) -> dict[str, Any]:
    """stream_ttfd's interleaved direct and platform streams, on new sessions of `project`."""
    body = {"project_id": project.id, "message": MESSAGE, "stream": True}
    options = argparse.Namespace(concurrency=STREAM_CONCURRENCY)
    headers = {"Authorization": f"Bearer {project.key}"}
    async with httpx.AsyncClient(headers=headers, timeout=TIMEOUT, trust_env=False) as client:
        await run_load(options, client, run.upstream, run.api, body, STREAM_WARMUP)
        count = run.args.stream_requests
        results = await run_load(options, client, run.upstream, run.api, body, count)
    direct, platform_ = results["direct"], results["platform"]
    return {
        "errors": {"direct": dict(direct.errors), "platform": dict(platform_.errors)},
        "first_delta": compare(direct.first, platform_.first),
    }


def ensure_litellm() -> None:
    """Create `.bench/litellm-venv` with `litellm[proxy]` unless it is there (minutes, once)."""
    if (LITELLM_VENV / "bin" / "litellm").exists():
        return
    print(
        f"installing litellm[proxy] into {LITELLM_VENV} (first run only: a few minutes)",
        file=sys.stderr,
        flush=True,
    )
    steps = (
        [sys.executable, "-m", "venv", str(LITELLM_VENV)],
        [str(LITELLM_VENV / "bin" / "pip"), "install", "--progress-bar", "on", "litellm[proxy]"],
    )
    for command in steps:  # their output on stderr: stdout is for the report
        if subprocess.run(command, stdout=sys.stderr, check=False).returncode != 0:  # noqa: S603
            raise BenchError(f"failed: {' '.join(command)}")


def litellm_version() -> str:
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    command = [str(LITELLM_VENV / "bin" / "python"), "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    return done.stdout.strip() or "unknown"


async def litellm_phase(run: Run) -> dict[str, Any]:
    """LiteLLM's proxy in front of the same upstream: no database, no callbacks, errors-only
    logging, the bundled model price map (nothing fetched), a master key (it refuses to start
    without one) that the requests send."""
    port = free_port()
    config = run.workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {FAST}\n"
        "    litellm_params:\n"
        f"      model: openai/{FAST}\n"
        f"      api_base: {run.upstream}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n"
        "general_settings: {}\n"
    )
    master_key = f"sk-{secrets.token_hex(24)}"
    env = {  # none of ours: no DATABASE_URL, REDIS_URL, ...
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(run.workdir)),
        "NO_PROXY": "127.0.0.1,localhost",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MODE": "PRODUCTION",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DISABLE_SCHEMA_UPDATE": "true",
        "LITELLM_MASTER_KEY": master_key,
    }
    command = [
        *(str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config)),
        *("--host", HOST, "--port", str(port), "--num_workers", str(run.args.workers)),
    ]
    process = await spawn("litellm", command, env, run.workdir)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.returncode is not None or time.monotonic() > deadline:
                raise BenchError(f"LiteLLM did not start:\n{tail(run.workdir, 'litellm')}")
            with contextlib.suppress(httpx.TransportError):
                if (await run.client.get(f"{url}/health/liveliness")).status_code == 200:
                    break
            await asyncio.sleep(0.5)
        script = direct_script(FAST, run.args.threads, master_key)
        result = await load(run, "litellm", f"{url}/v1/chat/completions", script, process.pid)
        pids = process_tree(process.pid)
        result["processes"] = len(pids)
        result["peak_rss_mb_total"] = round(sum(map(peak_rss_mb, pids)), 1)
        return result
    finally:
        await stop(process)


# --- the run ---------------------------------------------------------------------------------


async def server_version(admin: URL) -> str:
    engine = create_async_engine(admin)
    try:
        async with engine.connect() as connection:
            return str((await connection.execute(text("SHOW server_version"))).scalar_one())
    finally:
        await engine.dispose()


def machine(postgres: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    names = (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name"))
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    ram_kb = next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal:"))
    return {
        "cores": os.cpu_count(),
        "cpu": next(names, platform.machine()),
        "ram_gib": round(ram_kb / 1024**2, 1),
        "postgres": postgres,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


async def phases(run: Run, database_url: URL, upstream_pid: int, api_pid: int) -> dict[str, Any]:
    args, result = run.args, dict[str, Any]()
    run.log(f"preparing 2 x {args.sessions} sessions and a {LONG_SESSION:,}-message one")
    email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    account = {"email": email, "password": password}
    checked(await run.client.post(f"{run.api}/auth/register", json=account), "register")
    login = {"username": email, "password": password}
    token = checked(await run.client.post(f"{run.api}/auth/login", data=login), "login")
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    fast, slow = [await create_project(run, headers, model) for model in (FAST, SLOW)]
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    fast.sessions, slow.sessions, [short] = await asyncio.gather(
        new_sessions(run, fast, args.sessions, limit),
        new_sessions(run, slow, args.sessions, limit),
        new_sessions(run, fast, 1, limit),
    )
    long = await turn(run, fast)
    await fill_session(database_url, long, LONG_SESSION)
    grounded = await create_project(
        run, headers, FAST, name="grounded", knowledge={"enabled": True, "top_k": 4}
    )
    await fill_knowledge(database_url, grounded.id, KNOWLEDGE_CHUNKS)
    [grounded_session] = await new_sessions(run, grounded, 1, limit)

    direct_url = f"{run.upstream}/v1/chat/completions"
    for phase, project, model, latency in (("a", slow, SLOW, SLOW_MS), ("b", fast, FAST, 0)):
        run.log(f"phase {phase}: upstream {latency} ms, direct")
        script = direct_script(model, args.threads)
        direct = await load(run, f"{phase}-direct", direct_url, script, upstream_pid)
        run.log(f"phase {phase}: upstream {latency} ms, platform")
        script = platform_script(project, args.threads)
        platform_ = await load(run, f"{phase}-platform", run.api, script, api_pid, metrics=True)
        result[phase] = {
            "direct": direct,
            "platform": platform_,
            "added_ms": added_ms(direct, platform_),
        }
    result["b"]["peak_rss_mb_workers"] = [round(peak_rss_mb(p), 1) for p in workers(api_pid)]
    result["b"]["peak_rss_mb_master"] = round(peak_rss_mb(api_pid), 1)
    if args.litellm:
        run.log("phase c: LiteLLM, upstream 0 ms")
        result["c"] = await litellm_phase(run)
        rps = result["c"]["rps"]
        result["c"]["platform_ratio"] = (
            round(result["b"]["platform"]["rps"] / rps, 2) if rps else None
        )
    run.log(f"phase d: {args.history_turns} turns each on 10 and {LONG_SESSION:,} messages")
    result["d"] = await history_phase(run, fast, short, long)
    run.log(f"phase e: {args.stream_requests} streams per path")
    result["e"] = await streaming_phase(run, fast)
    run.log(
        f"phase f: {args.history_turns} turns each without and with {KNOWLEDGE_CHUNKS:,} chunks"
    )
    result["f"] = await knowledge_phase(run, fast, short, grounded, grounded_session)
    return result


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    admin = make_url(args.database_url)
    if admin.host not in LOOPBACK:
        raise BenchError(f"refusing a non-loopback database host: {admin.host}")
    postgres = await server_version(admin)
    database_url = admin.set(database=f"bench_{secrets.token_hex(6)}")
    await postgres_admin(admin, f'CREATE DATABASE "{database_url.database}"')
    processes: list[Process] = []
    limits = httpx.Limits(max_connections=2 * SETUP_CONCURRENCY + 4)
    try:
        async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT, trust_env=False) as client:
            run = Run(args, workdir, client)
            run.log("starting the upstream, migrating, starting the API")
            upstream, api = await start_servers(run, database_url, processes)
            try:
                result = await phases(run, database_url, upstream.pid, api.pid)
            except httpx.HTTPError as exc:
                raise BenchError(f"{exc!r}; the API's log:\n{tail(workdir, 'api')}") from None
            run.log("done; stopping")
    finally:
        for process in reversed(processes):
            await stop(process)
        drop = f'DROP DATABASE IF EXISTS "{database_url.database}" WITH (FORCE)'
        await postgres_admin(admin, drop)
    result["machine"] = machine(postgres)
    result["settings"] = {
        "api_workers": args.workers,
        "wrk": f"-t {args.threads} -c {args.connections} -d {args.duration}s --timeout 10s",
        "warmup_seconds": WARMUP_SECONDS,
        "sessions_per_project": args.sessions,
        "history_window": HISTORY_WINDOW,
        "history_turns": args.history_turns,
        "stream_requests": args.stream_requests,
        "stream_concurrency": STREAM_CONCURRENCY,
        "redis": args.redis,
        "litellm": litellm_version() if args.litellm else None,
        "elapsed_seconds": round(time.monotonic() - run.started, 1),
    }
    result["targets"] = targets(result)
    return result


# --- report ----------------------------------------------------------------------------------


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    a, b = result["a"], result["b"]
    checks = (
        (f"added latency p50 @{SLOW_MS} ms", a["added_ms"]["p50"], "<=", 3, "ms"),
        (f"added latency p99 @{SLOW_MS} ms", a["added_ms"]["p99"], "<=", 15, "ms"),
        ("server CPU per turn", b["platform"]["cpu_ms_per_request"], "<=", 3, "ms"),
        ("throughput / LiteLLM", result.get("c", {}).get("platform_ratio"), ">=", 1.5, "x"),
        ("long / short history, p50", result["d"]["ratio"].get("p50"), "<=", 1.10, "x"),
        ("DB round trips per turn", result["d"]["db_round_trips_per_turn"], "<=", 6, ""),
        ("knowledge on: added p50", result["f"]["added_ms"].get("p50"), "<=", 10, "ms"),
        ("knowledge on: added round trips", result["f"]["added_round_trips"], "<=", 1, ""),
        ("peak RSS per worker", max(b["peak_rss_mb_workers"], default=None), "<", 200, "MB"),
    )
    holds = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}
    return [
        {
            "target": f"{name} {op} {bound:g} {unit}".rstrip(),
            "value": value,
            "unit": unit,
            "result": "n/a" if value is None else "pass" if holds[op](value, bound) else "FAIL",
        }
        for name, value, op, bound, unit in checks
    ]


def platform_failures(result: dict[str, Any]) -> int:
    wrk = sum(int(result[phase]["platform"]["failed"]) for phase in ("a", "b"))
    streams: dict[str, int] = result["e"]["errors"]["platform"]
    return wrk + int(result["d"]["failed"]) + int(result["f"]["failed"]) + sum(streams.values())


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def print_report(result: dict[str, Any]) -> None:
    m, s, b = result["machine"], result["settings"], result["b"]
    print("## Chat load benchmark\n")
    print(
        f"- Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, PostgreSQL "
        f"{m['postgres']}, Python {m['python']}, {m['date']}"
    )
    print(
        f"- API: `uvicorn --workers {s['api_workers']}` (uvloop, httptools), Redis "
        f"{'on' if s['redis'] else 'off'}; {s['sessions_per_project']} sessions per project "
        f"of ~10 messages, history_window {s['history_window']}"
    )
    print(
        f"- Load: wrk `{s['wrk']}` after a {s['warmup_seconds']} s warm-up; LiteLLM "
        f"{s['litellm'] or 'skipped'}; the whole run took {s['elapsed_seconds']:.0f} s"
    )

    print("\n### Non-streaming turns (wrk)\n")
    latency_header = [f"{k} ms" for k in LATENCY_KEYS]
    print(row("run", "upstream", "req/s", *latency_header, "CPU ms/req", "failed"))
    print(row(*["---"] * 2, *["--:"] * 7))
    for phase, upstream in (("a", f"{SLOW_MS} ms"), ("b", "0 ms")):
        for label in ("direct", "platform"):
            r = result[phase][label]
            latency = (fmt(r["latency_ms"][k]) for k in LATENCY_KEYS)
            cpu = fmt(r["cpu_ms_per_request"], ".3f")
            print(row(label, upstream, f"{r['rps']:.0f}", *latency, cpu, r["failed"]))
        added = (f"{result[phase]['added_ms'][k]:+.2f}" for k in LATENCY_KEYS)
        print(row("**added**", upstream, "", *added, "", ""))
    if c := result.get("c"):
        latency = (fmt(c["latency_ms"][k]) for k in LATENCY_KEYS)
        cpu = fmt(c["cpu_ms_per_request"], ".3f")
        print(row("LiteLLM", "0 ms", f"{c['rps']:.0f}", *latency, cpu, c["failed"]))
    print(
        "\nCPU ms/req: the fake upstream's (direct), the API's master and workers' (platform), "
        "all LiteLLM processes' (LiteLLM)."
    )

    print("\n### Cost of a turn (upstream 0 ms)\n")
    print(row("figure", "value") + "\n" + row("---", "--:"))
    print(row("server CPU per turn", f"{fmt(b['platform']['cpu_ms_per_request'], '.3f')} ms"))
    sequential = fmt(result["d"]["db_round_trips_per_turn"], ".3f")
    print(row("DB round trips per turn (phase d: one turn at a time)", sequential))
    loaded = fmt(b["platform"]["db_round_trips_per_turn"])
    print(row("DB round trips per turn (under load; ±0.05 from turns in flight)", loaded))
    worker_rss = ", ".join(f"{mb:.0f}" for mb in b["peak_rss_mb_workers"])
    print(row("peak RSS per worker", f"{worker_rss} MB (master {b['peak_rss_mb_master']:.0f} MB)"))
    upstream_cpu = fmt(b["direct"]["cpu_ms_per_request"], ".3f")
    print(row("upstream CPU per direct request (context)", f"{upstream_cpu} ms"))
    if c:
        print(row("platform / LiteLLM throughput", f"{fmt(c['platform_ratio'])}x"))
        label = f"LiteLLM peak RSS ({c['processes']} processes)"
        print(row(label, f"{c['peak_rss_mb_total']:.0f} MB"))

    d = result["d"]
    print(
        f"\n### History length ({s['history_turns']} sequential turns each, after "
        f"{HISTORY_WARMUP} warm-up)\n"
    )
    print(row("session", "p50 ms", "p95 ms", "mean ms") + "\n" + row("---", "--:", "--:", "--:"))
    for label, key in (("10 messages", "short_ms"), (f"{LONG_SESSION:,} messages", "long_ms")):
        print(row(label, *(fmt(d[key].get(k)) for k in ("p50", "p95", "mean"))))
    ratio = d["ratio"]
    print(row("long / short", f"{fmt(ratio.get('p50'))}x", "", f"{fmt(ratio.get('mean'))}x"))

    f = result["f"]
    print(
        f"\n### Knowledge in the turn ({s['history_turns']} sequential turns each, "
        f"{KNOWLEDGE_CHUNKS:,} chunks, top_k 4)\n"
    )
    print(row("project", "p50 ms", "p95 ms", "mean ms", "DB round trips per turn"))
    print(row("---", "--:", "--:", "--:", "--:"))
    for label, key, kind in (("knowledge off", "off_ms", "off"), ("knowledge on", "on_ms", "on")):
        cells = (fmt(f[key].get(k)) for k in ("p50", "p95", "mean"))
        print(row(label, *cells, fmt(f["db_round_trips_per_turn"][kind], ".3f")))
    added = (fmt(f["added_ms"].get(k), "+.2f") for k in ("p50", "p95", "mean"))
    print(row("**added**", *added, fmt(f["added_round_trips"], "+.3f")))

    e = result["e"]
    print(
        f"\n### Streaming: time to first delta ({s['stream_requests']} streams per path, "
        f"concurrency {s['stream_concurrency']})\n"
    )
    print(row("path", *latency_header) + "\n" + row("---", *["--:"] * 4))
    for label, key, spec in (
        ("direct", "direct", ".2f"),
        ("platform", "platform", ".2f"),
        ("**added**", "added_ms", "+.2f"),
    ):
        print(row(label, *(fmt(e["first_delta"][key].get(k), spec) for k in LATENCY_KEYS)))

    print("\n### Targets\n")
    print(row("target", "value", "result") + "\n" + row("---", "--:", "---"))
    for check in result["targets"]:
        value = f"{fmt(check['value'])} {check['unit']}".rstrip()
        print(row(check["target"], value, check["result"]))
    if failures := platform_failures(result):
        streams = e["errors"]["platform"] or ""
        print(f"\nFAILED platform requests: {failures} {streams}".rstrip())


# --- entry point -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.chat_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--database-url", default=DEFAULT_DATABASE_URL, help="a Postgres server on loopback")
    add("--workers", type=int, default=2, help="API (and LiteLLM) worker processes")
    add("--threads", type=int, default=2, help="wrk threads")
    add("--connections", type=int, default=32, help="wrk connections")
    add("--duration", type=int, default=20, help="seconds per measured wrk run")
    add("--sessions", type=int, default=256, help="sessions per project (>= 4 x connections)")
    add("--history-turns", type=int, default=100, help="phase d: turns per session")
    add("--stream-requests", type=int, default=200, help="phase e: streams per path")
    add("--redis", action=argparse.BooleanOptionalAction, default=True, help=f"use {REDIS_URL}")
    add("--litellm", action=argparse.BooleanOptionalAction, default=True, help="phase c")
    add("--timeout", type=float, default=900.0, help="overall limit, seconds")
    add("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not (1 <= args.workers <= 16 and 1 <= args.threads <= args.connections <= 1024):
        parser.error("need 1 <= --workers <= 16 and 1 <= --threads <= --connections <= 1024")
    if args.sessions < 4 * args.connections:
        parser.error(
            "--sessions must be at least 4 x --connections: each wrk connection rotates "
            "over sessions of its own (a session answers one turn at a time)"
        )
    if not (1 <= args.duration <= 600 and args.history_turns >= 1 and args.stream_requests >= 1):
        parser.error("--duration must be 1..600, --history-turns and --stream-requests >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not WRK.exists():
            raise BenchError(f"{WRK} is missing: apt-get install wrk")
        if args.litellm:
            ensure_litellm()
    except BenchError as exc:
        print(f"chat_load: {exc}", file=sys.stderr)
        return 2
    result = run_bench("chat_load", bench, args)
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 1 if platform_failures(result) else 0


if __name__ == "__main__":
    sys.exit(main())
