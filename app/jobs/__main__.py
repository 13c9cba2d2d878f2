"""The operator's view of the queue: `python -m app.jobs`.

    python -m app.jobs list [--status dead] [--kind KIND] [--workspace ID] [--limit N]
    python -m app.jobs retry JOB_ID [JOB_ID ...]
    python -m app.jobs retry --all-dead [--kind KIND] [--workspace ID]
    python -m app.jobs stats

`list` prints one JSON object per job (no payloads); `retry` queues dead jobs again from their
first attempt. Exit status 1 when a job named could not be retried.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import get_settings
from app.core.db import create_engine, create_sessionmaker
from app.core.pagination import PageParams
from app.jobs.schemas import JobRead
from app.jobs.stats import DuplicateJob, list_jobs, queue_stats, retry_dead
from app.models import Job

STATUSES = ("queued", "running", "done", "dead")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.jobs", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="jobs in one status, most recent first")
    listing.add_argument("--status", choices=STATUSES, default="dead")
    listing.add_argument("--kind")
    listing.add_argument("--workspace", type=uuid.UUID)
    listing.add_argument("--limit", type=int, default=50)
    retry = commands.add_parser("retry", help="queue dead jobs again")
    retry.add_argument("job_ids", nargs="*", type=uuid.UUID)
    retry.add_argument("--all-dead", action="store_true")
    retry.add_argument("--kind")
    retry.add_argument("--workspace", type=uuid.UUID)
    commands.add_parser("stats", help="queued, running and dead jobs per kind")
    options = parser.parse_args(argv)
    if options.command == "retry" and not options.job_ids and not options.all_dead:
        parser.error("name the jobs to retry, or pass --all-dead")
    return options


async def run(options: argparse.Namespace, maker: async_sessionmaker[AsyncSession]) -> int:
    if options.command == "stats":
        for kind, stats in sorted((await queue_stats(maker)).items()):
            _print({"kind": kind, **asdict(stats)})
        return 0
    async with maker() as db:
        if options.command == "list":
            jobs, _ = await list_jobs(
                db,
                status=options.status,
                workspace_id=options.workspace,
                kind=options.kind,
                params=PageParams(limit=options.limit, cursor=None),
            )
            for job in jobs:
                _print(JobRead.model_validate(job).model_dump(mode="json"))
            return 0
        ids = list(options.job_ids)
        if options.all_dead:
            dead, _ = await list_jobs(
                db,
                status="dead",
                workspace_id=options.workspace,
                kind=options.kind,
                params=PageParams(limit=10_000, cursor=None),
            )
            ids += [job.id for job in dead]
        failed = 0
        for job_id in ids:
            retried: Job | None
            try:
                retried = await retry_dead(db, job_id, workspace_id=options.workspace)
            except DuplicateJob:
                retried, reason = None, "another unfinished job does the same work"
            else:
                reason = "no dead job with this id"
            if retried is None:
                failed += 1
                _print({"id": str(job_id), "retried": False, "reason": reason}, sys.stderr)
            else:
                _print({"id": str(job_id), "kind": retried.kind, "retried": True})
        await db.commit()
    return 1 if failed else 0


def _print(line: dict[str, Any], stream: Any = None) -> None:
    print(json.dumps(line, default=str), file=stream or sys.stdout, flush=True)


async def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    engine = create_engine(get_settings())
    try:
        return await run(options, create_sessionmaker(engine))
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
