"""Handlers for the consumer tests (`--handler tests.events.kafka_handlers:record`): each appends
the event's id to the file KAFKA_TEST_RECORD_FILE names, and raises instead for the event whose
id is KAFKA_TEST_FAIL_ID."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any


def record(event: dict[str, Any]) -> None:
    if event["id"] == os.environ.get("KAFKA_TEST_FAIL_ID"):
        raise RuntimeError(f"refusing event {event['id']}")
    with Path(os.environ["KAFKA_TEST_RECORD_FILE"]).open("a") as file:
        file.write(event["id"] + "\n")


async def record_async(event: dict[str, Any]) -> None:
    await asyncio.sleep(0)
    record(event)
