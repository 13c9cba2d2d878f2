"""Instructions per chat turn: a figure the machine's noise cannot move.

CPU time per turn (tests/bench/chat_load.py) varies by ±15% from run to run on a shared
2-core machine. Instructions executed do not: this runs the API under valgrind's callgrind
(one uvicorn process, uvloop, httptools, Postgres, Redis, the fake upstream at 0 ms), sends
`--warmup` turns uncounted, then counts the instructions the API process executes while it
answers `--turns` turns (`--concurrency` sessions at a time), and the same for `GET /health`
as the web stack's floor (no database, no upstream: routing, middleware, a JSON response and its
access log line). Two runs of the same code agree within about 0.5%, so an A/B of a
change is one run on each side.

Needs valgrind (`apt-get install valgrind`). The API runs about 50 times slower under it: the
default 100 turns take about a minute.

    .venv/bin/python -m tests.bench.turn_instructions
    .venv/bin/python -m tests.bench.turn_instructions --turns 200 --json

User-space instructions only: the kernel's work (sockets) and the database's are not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url

from tests.bench import chat_load
from tests.bench.stream_ttfd import BenchError, postgres_admin, run_bench, spawn, stop

READY_SECONDS = 300  # the API imports and starts under valgrind


def callgrind(pid: int, *options: str) -> None:
    control = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run([control, *options, str(pid)], check=True, capture_output=True)  # noqa: S603


def instructions(out: Path) -> int:
    """The largest `totals:`/`summary:` of the dumps written so far (the last dump's)."""
    total = 0
    for path in out.parent.glob(out.name + "*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                total = max(total, int(line.split()[1]))
    return total


async def counted(pid: int, out: Path, work: Any) -> int:
    """Instructions the process executes while `work` runs (instrumented only meanwhile)."""
    for path in out.parent.glob(out.name + "*"):
        path.unlink()
    callgrind(pid, "--instr=on")
    callgrind(pid, "--zero")
    try:
        await work
        callgrind(pid, "--dump")
    finally:
        callgrind(pid, "--instr=off")
    return instructions(out)


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (apt-get install valgrind)")
    admin = make_url(args.database_url)
    if admin.host not in chat_load.LOOPBACK:
        raise BenchError(f"refusing a non-loopback database host: {admin.host}")
    database_url = admin.set(database=f"bench_{secrets.token_hex(6)}")
    await postgres_admin(admin, f'CREATE DATABASE "{database_url.database}"')
    processes = []
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), trust_env=False) as client:
            run = chat_load.Run(args, workdir, client)
            env = chat_load.api_env(run, database_url)
            uvicorn = [
                *(sys.executable, "-m", "uvicorn", "--factory", "--host", chat_load.HOST),
                *("--no-access-log", "--loop", "uvloop", "--http", "httptools"),
            ]
            port = run.upstream.rsplit(":", 1)[1]
            command = [*uvicorn, "--port", port, "tests.fake_openai:create_app"]
            processes.append(upstream := await spawn("upstream", command, env, workdir))
            migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
            processes.append(alembic := await spawn("alembic", migrate, env, workdir))
            if await alembic.wait() != 0:
                raise BenchError("migrations failed")
            out = workdir / "callgrind.out"
            valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
            command = [*valgrind, f"--callgrind-out-file={out}", *uvicorn]
            command += ["--port", run.api.rsplit(":", 1)[1], "app.main:create_app"]
            processes.append(api := await spawn("api", command, env, workdir))
            await chat_load.wait_ready(
                client, f"{run.upstream}/v1/chat/completions", upstream, "upstream"
            )
            await chat_load.wait_ready(client, f"{run.api}/ready", api, "api", READY_SECONDS)

            email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
            account = {"email": email, "password": password}
            chat_load.checked(await client.post(f"{run.api}/auth/register", json=account), "r")
            login = {"username": email, "password": password}
            token = chat_load.checked(await client.post(f"{run.api}/auth/login", data=login), "l")
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            project = await chat_load.create_project(run, headers, chat_load.FAST)
            sessions = [await chat_load.turn(run, project) for _ in range(args.concurrency)]

            async def turns(count: int) -> None:
                async def one_session(session: str) -> None:
                    for _ in range(count):
                        await chat_load.turn(run, project, session)

                await asyncio.gather(*(one_session(s) for s in sessions))

            async def health(count: int) -> None:
                for _ in range(count):
                    chat_load.checked(await client.get(f"{run.api}/health"), "health")

            per_session = max(1, args.turns // args.concurrency)
            await turns(max(1, args.warmup // args.concurrency))
            await health(args.warmup)
            turn_total = await counted(api.pid, out, turns(per_session))
            health_total = await counted(api.pid, out, health(args.turns))
    finally:
        for process in reversed(processes):
            await stop(process)
        drop = f'DROP DATABASE IF EXISTS "{database_url.database}" WITH (FORCE)'
        await postgres_admin(admin, drop)
    turns_sent = per_session * args.concurrency
    per_turn = turn_total / turns_sent
    per_health = health_total / args.turns
    return {
        "turns": turns_sent,
        "concurrency": args.concurrency,
        "instructions_per_turn": round(per_turn),
        "instructions_per_health_request": round(per_health),
        "turn_over_health": round(per_turn / per_health, 2) if per_health else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.turn_instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--database-url", default=chat_load.DEFAULT_DATABASE_URL, help="Postgres on loopback")
    add("--turns", type=int, default=100, help="counted turns (and health requests)")
    add("--warmup", type=int, default=40, help="turns (and health requests) not counted")
    add("--concurrency", type=int, default=4, help="sessions answering at a time")
    add("--timeout", type=float, default=900.0, help="overall limit, seconds")
    add("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    args.redis, args.litellm = True, False  # what chat_load.api_env reads
    if not (1 <= args.turns <= 10_000 and 0 <= args.warmup <= 10_000):
        parser.error("--turns must be 1..10000 and --warmup 0..10000")
    if not 1 <= args.concurrency <= 32:
        parser.error("--concurrency must be 1..32")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_bench("turn_instructions", bench, args)
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"## Instructions per request (callgrind, {result['turns']} turns, "
        f"{result['concurrency']} sessions at a time)\n"
    )
    print("| request | instructions |\n| --- | --: |")
    print(f"| `POST /chat` turn | {result['instructions_per_turn']:,} |")
    print(f"| `GET /health` | {result['instructions_per_health_request']:,} |")
    print(f"| turn / health | {result['turn_over_health']}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
