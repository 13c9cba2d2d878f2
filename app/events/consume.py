"""Read the event topic: `python -m app.events.consume [--handler module:function]`.

Without a handler, each event is printed as one JSON line on stdout. Offsets are committed only
after an event was printed or handled (at least once: consumers deduplicate by the event's `id`).
A message that is not a JSON object is logged and skipped; a handler that raises stops the process
with exit code 1 and leaves that message uncommitted, so it is delivered again. Stops on SIGTERM
or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.events.kafka import consumer_options

logger = logging.getLogger("app.events.consume")

Handler = Callable[[dict[str, Any]], object]
EXIT_HANDLER_FAILED = 1
EXIT_KAFKA_FAILED = 1
POLL_MS = 500


class HandlerFailed(Exception):
    """The handler raised; the message it was given stays uncommitted."""


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.events.consume", description=__doc__)
    parser.add_argument("--group", default="chatbot-events", help="consumer group id")
    parser.add_argument("--topic", default=settings.KAFKA_TOPIC)
    parser.add_argument(
        "--bootstrap",
        default=settings.KAFKA_BOOTSTRAP_SERVERS,
        help="host:port[,host:port...] (default: KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--handler",
        type=load_handler,
        help="module:function called with each event (a dict); sync or async",
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="a group without committed offsets starts at the oldest event, not the newest",
    )
    parser.add_argument("--max-events", type=int, help="stop after this many events")
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=3_000)
    options = parser.parse_args(argv)
    if not options.bootstrap:
        parser.error("no Kafka to read from: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS")
    if options.max_events is not None and options.max_events < 1:
        parser.error("--max-events must be at least 1")
    return options


def load_handler(spec: str) -> Handler:
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise argparse.ArgumentTypeError(f"{spec!r} is not module:function")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise argparse.ArgumentTypeError(f"cannot load {spec!r}: {error}") from error
    if not callable(handler):
        raise argparse.ArgumentTypeError(f"{spec!r} is not callable")
    return handler  # type: ignore[no-any-return]


def decode(record: ConsumerRecord) -> dict[str, Any] | None:
    """The envelope, or None (logged) for a message that is not a JSON object."""
    try:
        event = json.loads(record.value)
    except (TypeError, ValueError):
        event = None
    if not isinstance(event, dict):
        logger.warning(
            "skipping a message that is not a JSON event partition=%s offset=%s",
            record.partition,
            record.offset,
        )
        return None
    return event


async def deliver(event: dict[str, Any], handler: Handler | None) -> None:
    if handler is None:
        sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return
    try:
        if inspect.iscoroutinefunction(handler):
            await handler(event)
        else:
            # In a thread, so a slow handler cannot starve the group's heartbeats.
            outcome = await asyncio.to_thread(handler, event)
            if inspect.isawaitable(outcome):
                await outcome
    except Exception as error:
        raise HandlerFailed(f"the handler failed on event {event.get('id')}") from error


async def commit(consumer: AIOKafkaConsumer, to_commit: dict[TopicPartition, int]) -> None:
    if not to_commit:
        return
    try:
        await consumer.commit(to_commit)
    except KafkaError as error:
        # E.g. a rebalance took the partitions away. Not fatal: uncommitted events are read
        # again (here, or by the partitions' new owner), which at least once allows.
        logger.warning("commit failed, those events will be delivered again: %r", error)
    to_commit.clear()


@dataclass
class Progress:
    """What one run has delivered, and the offsets still to commit."""

    limit: int | None
    delivered: int = 0
    # Per partition, the offset after the last message delivered or skipped.
    to_commit: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.delivered == self.limit


async def consume(options: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    """Read until `stop` is set or `--max-events` were delivered; the process's exit code."""
    consumer = await start_consumer(options, settings)
    progress = Progress(limit=options.max_events)
    try:
        while not stop.is_set() and not progress.finished:
            batches = await consumer.getmany(timeout_ms=POLL_MS)
            for partition, records in batches.items():
                for record in records:
                    if stop.is_set() or progress.finished:
                        return 0
                    event = decode(record)
                    if event is not None:
                        await deliver(event, options.handler)
                        progress.delivered += 1
                    progress.to_commit[partition] = record.offset + 1
            await commit(consumer, progress.to_commit)
        return 0
    except HandlerFailed:
        logger.exception("stopping: the event stays uncommitted and will be delivered again")
        return EXIT_HANDLER_FAILED
    finally:
        await commit(consumer, progress.to_commit)
        await consumer.stop()


async def start_consumer(options: argparse.Namespace, settings: Settings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        options.topic,
        **consumer_options(
            settings.model_copy(update={"KAFKA_BOOTSTRAP_SERVERS": options.bootstrap}),
            options.group,
        ),
        auto_offset_reset="earliest" if options.from_beginning else "latest",
        session_timeout_ms=options.session_timeout_ms,
        heartbeat_interval_ms=options.heartbeat_interval_ms,
    )
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def run(options: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await consume(options, settings, stop)
    except KafkaError as error:
        logger.error("cannot read from Kafka at %s: %r", options.bootstrap, error)
        return EXIT_KAFKA_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    settings = get_settings()
    configure_logging("DEBUG" if settings.DEBUG else settings.LOG_LEVEL, settings.LOG_FORMAT)
    # Bad options exit with code 2 (argparse's) before anything connects.
    options = parse_args(argv, settings)
    return asyncio.run(run(options, settings))


if __name__ == "__main__":
    sys.exit(main())
