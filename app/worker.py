"""A worker process: `python -m app.worker`. It runs the same jobs as the API processes'
in-process workers, for scaling out (set `WORKERS_IN_API=false` on the API to leave all the work
to these). Stops on SIGTERM or SIGINT, letting running jobs finish (`SHUTDOWN_GRACE_SECONDS`)."""

from __future__ import annotations

import asyncio
import logging
import signal

from app.audit.recorder import AuditedSession
from app.core.config import get_settings
from app.core.db import create_engine, create_sessionmaker
from app.core.heap import settle_after_startup
from app.core.logging import configure_logging
from app.jobs.setup import Background

logger = logging.getLogger("app.worker")


async def main() -> None:
    settings = get_settings()
    configure_logging("DEBUG" if settings.DEBUG else settings.LOG_LEVEL, settings.LOG_FORMAT)
    engine = create_engine(settings)
    maker = create_sessionmaker(engine, AuditedSession)  # its changes are audited and evented
    background = Background(settings, maker)
    maker.configure(info=background.wake_hooks())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    name = background.worker.name
    logger.info("worker started name=%s", name)
    background.start()
    settle_after_startup()
    await stop.wait()
    await background.stop()
    await engine.dispose()
    logger.info("worker stopped name=%s", name)


if __name__ == "__main__":
    asyncio.run(main())
