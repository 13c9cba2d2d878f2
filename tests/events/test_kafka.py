"""The Kafka sink and the seed consumer against a real Kafka-protocol broker (Tansu, see
tests/kafka.py): keyed order, structured CloudEvents, consumer groups that commit only what was
printed or handled."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from app.core.config import Settings
from app.events.consume import consume, parse_args
from app.events.kafka import KafkaPublisher, KafkaPublishError, consumer_options, producer_options
from tests.kafka import BrokerUnavailable, create_topic, free_port, start_broker, stop_broker

ROOT = Path(__file__).resolve().parents[2]
# Small group timeouts: with the defaults every join or rebalance takes several seconds.
GROUP_TIMEOUTS = ("--session-timeout-ms", "1000", "--heartbeat-interval-ms", "100")
WITHIN = 30.0  # seconds any one broker interaction may take before the test fails


def kafka_settings(bootstrap: str, topic: str = "chatbot.events", **overrides: Any) -> Settings:
    return Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic, **overrides)


def envelope(project_id: str, session_id: str | None, sequence: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": f"/workspaces/ws/projects/{project_id}",
        "type": "message.created",
        "time": "2026-12-01T12:00:00Z",
        "subject": str(uuid.uuid4()),
        "datacontenttype": "application/json",
        "data": {"content": f"message {sequence} — ünïcode"},
        "workspaceid": str(uuid.uuid4()),
        "projectid": project_id,
    }
    if session_id is not None:
        event["sessionid"] = session_id
        event["sequence"] = sequence
    return event


def some_envelopes(count: int) -> list[dict[str, Any]]:
    project_id = str(uuid.uuid4())
    sessions = [str(uuid.uuid4()) for _ in range(3)]
    return [envelope(project_id, sessions[i % 3], i // 3) for i in range(count)]


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"test-events-{uuid.uuid4().hex[:12]}"
    await asyncio.wait_for(create_topic(kafka_bootstrap, name, partitions=3), WITHIN)
    return name


@pytest.fixture
async def publisher(kafka_bootstrap: str, topic: str) -> AsyncIterator[KafkaPublisher]:
    publisher = KafkaPublisher(kafka_settings(kafka_bootstrap, topic))
    yield publisher
    await publisher.stop()


async def read_all(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord]:
    """`count` records from the start of `topic`, outside any group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(WITHIN):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def committed_total(bootstrap: str, topic: str, group: str) -> int:
    """The sum of `group`'s committed offsets over `topic`'s three partitions."""
    consumer = AIOKafkaConsumer(**consumer_options(kafka_settings(bootstrap), group))
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in range(3)]
        consumer.assign(partitions)
        offsets = [await consumer.committed(partition) for partition in partitions]
    finally:
        await consumer.stop()
    return sum(offset or 0 for offset in offsets)


async def run_consumer(
    bootstrap: str, topic: str, *args: str, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    """`python -m app.events.consume ARGS` in a subprocess: (exit code, the JSON lines it
    printed, its stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.events.consume",
        *GROUP_TIMEOUTS,
        *args,
        cwd=ROOT,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "LOG_FORMAT": "text",
            **(env or {}),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), WITHIN)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    return process.returncode or 0, lines, stderr.decode()


def partition_of(key: str, partitions: int = 3) -> int:
    """Where the Java client (and aiokafka) put a key: murmur2, as consumers elsewhere expect."""
    return int(DefaultPartitioner()(key.encode(), list(range(partitions)), []))


def sessions_on_every_partition() -> list[str]:
    """Three session ids whose events land on three different partitions."""
    found: dict[int, str] = {}
    while len(found) < 3:
        session = str(uuid.uuid4())
        found.setdefault(partition_of(session), session)
    return list(found.values())


async def test_publish_keeps_each_session_in_order_on_one_partition(
    publisher: KafkaPublisher, kafka_bootstrap: str, topic: str
) -> None:
    project_id = str(uuid.uuid4())
    sessions = sessions_on_every_partition()
    envelopes = [envelope(project_id, session, n) for n in range(20) for session in sessions]
    project_event = envelope(project_id, None, 0)

    await publisher.publish(envelopes[:30])
    await publisher.publish([*envelopes[30:], project_event])  # the same producer, reused

    records = await read_all(kafka_bootstrap, topic, 61)
    sent = {event["id"]: event for event in [*envelopes, project_event]}
    sequences: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in sorted(records, key=lambda record: (record.partition, record.offset)):
        event = json.loads(record.value)
        assert event == sent[event["id"]]
        assert record.value == json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        assert dict(record.headers) == {
            "content-type": b"application/cloudevents+json",
            "ce_id": event["id"].encode(),
            "ce_type": b"message.created",
        }
        key = event.get("sessionid", event["projectid"])
        assert record.key == key.encode()
        partitions[key].add(record.partition)
        if "sequence" in event:
            sequences[key].append(event["sequence"])
    assert {session: sequences[session] for session in sessions} == {
        session: list(range(20)) for session in sessions
    }
    assert partitions == {key: {partition_of(key)} for key in [*sessions, project_id]}


async def test_consumer_prints_events_as_json_lines_and_skips_garbage(
    publisher: KafkaPublisher, kafka_bootstrap: str, topic: str
) -> None:
    envelopes = some_envelopes(7)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        key = envelopes[0]["sessionid"].encode()  # the partition of the first events
        await producer.send_and_wait(topic, b"not json", key=key)
    finally:
        await producer.stop()
    await publisher.publish(envelopes)
    group = f"g1-{uuid.uuid4().hex[:8]}"

    code, printed, stderr = await run_consumer(
        kafka_bootstrap, topic, "--max-events", "7", "--from-beginning", "--group", group
    )

    assert code == 0, stderr
    assert sorted(printed, key=lambda event: event["id"]) == sorted(
        envelopes, key=lambda event: event["id"]
    )
    assert "not a JSON event" in stderr
    assert await committed_total(kafka_bootstrap, topic, group) == 8  # the garbage, too


async def test_consumer_group_continues_after_its_committed_offset(
    publisher: KafkaPublisher, kafka_bootstrap: str, topic: str
) -> None:
    envelopes = some_envelopes(15)
    await publisher.publish(envelopes[:10])
    group = f"g2-{uuid.uuid4().hex[:8]}"
    run = ("--from-beginning", "--group", group)

    code, first, stderr = await run_consumer(kafka_bootstrap, topic, "--max-events", "5", *run)
    assert code == 0, stderr
    await publisher.publish(envelopes[10:])
    code, second, stderr = await run_consumer(kafka_bootstrap, topic, "--max-events", "10", *run)
    assert code == 0, stderr

    first_ids = {event["id"] for event in first}
    second_ids = {event["id"] for event in second}
    assert len(first_ids) == 5
    assert not first_ids & second_ids
    assert first_ids | second_ids == {event["id"] for event in envelopes}


async def test_a_failing_handler_leaves_its_event_to_be_delivered_again(
    publisher: KafkaPublisher, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    session = str(uuid.uuid4())
    envelopes = [envelope(str(uuid.uuid4()), session, n) for n in range(3)]  # one partition
    await publisher.publish(envelopes)
    recorded = tmp_path / "handled.txt"
    run = ("--from-beginning", "--group", f"g3-{uuid.uuid4().hex[:8]}")
    env = {"KAFKA_TEST_RECORD_FILE": str(recorded)}

    code, _, stderr = await run_consumer(
        kafka_bootstrap,
        topic,
        "--handler",
        "tests.events.kafka_handlers:record_async",
        *run,
        env={**env, "KAFKA_TEST_FAIL_ID": envelopes[1]["id"]},
    )
    assert code != 0
    assert f"refusing event {envelopes[1]['id']}" in stderr
    assert recorded.read_text().split() == [envelopes[0]["id"]]

    code, printed, stderr = await run_consumer(
        kafka_bootstrap,
        topic,
        "--handler",
        "tests.events.kafka_handlers:record",
        "--max-events",
        "2",
        *run,
        env=env,
    )
    assert code == 0, stderr
    assert printed == []  # a handler replaces the printing
    assert recorded.read_text().split() == [event["id"] for event in envelopes]


async def test_consumer_stops_on_sigterm_after_committing_what_it_printed(
    publisher: KafkaPublisher, kafka_bootstrap: str, topic: str
) -> None:
    envelopes = some_envelopes(2)
    await publisher.publish(envelopes)
    group = f"g4-{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.events.consume",
        *GROUP_TIMEOUTS,
        "--from-beginning",
        "--group",
        group,
        cwd=ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WITHIN):
            printed = [json.loads(await process.stdout.readline()) for _ in envelopes]
        process.terminate()
        code = await asyncio.wait_for(process.wait(), WITHIN)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert code == 0
    assert {event["id"] for event in printed} == {event["id"] for event in envelopes}
    assert await committed_total(kafka_bootstrap, topic, group) == 2


async def test_consume_in_process_prints_events(
    publisher: KafkaPublisher,
    kafka_bootstrap: str,
    topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    envelopes = some_envelopes(3)
    await publisher.publish(envelopes)
    settings = kafka_settings(kafka_bootstrap, topic)
    args = ["--from-beginning", "--max-events", "3", "--group", f"g5-{uuid.uuid4().hex[:8]}"]

    code = await asyncio.wait_for(
        consume(parse_args([*GROUP_TIMEOUTS, *args], settings), settings, asyncio.Event()), WITHIN
    )

    assert code == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {event["id"] for event in printed} == {event["id"] for event in envelopes}


def test_consumer_without_a_broker_address_exits_with_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args([], Settings(KAFKA_BOOTSTRAP_SERVERS=None))

    assert exited.value.code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err


def test_producer_options_map_sasl_and_tls() -> None:
    settings = kafka_settings(
        "kafka-1:9093, kafka-2:9093",
        KAFKA_CLIENT_ID="api-eu",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="chatbot",
        KAFKA_SASL_PASSWORD="s3cret",
        KAFKA_SSL_CAFILE=certifi.where(),
        KAFKA_ENABLE_IDEMPOTENCE=True,
    )

    options = producer_options(settings)

    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.get_ca_certs()  # certifi's bundle was loaded
    assert options.pop("request_timeout_ms") > 0
    assert options.pop("linger_ms") > 0
    assert options.pop("max_batch_size") >= 16384
    assert options == {
        "bootstrap_servers": ["kafka-1:9093", "kafka-2:9093"],
        "client_id": "api-eu",
        "acks": "all",
        "enable_idempotence": True,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "chatbot",
        "sasl_plain_password": "s3cret",
    }
    consumer = consumer_options(settings, "analytics")
    assert isinstance(consumer.pop("ssl_context"), ssl.SSLContext)
    assert consumer == {
        "bootstrap_servers": ["kafka-1:9093", "kafka-2:9093"],
        "client_id": "api-eu",
        "group_id": "analytics",
        "enable_auto_commit": False,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "chatbot",
        "sasl_plain_password": "s3cret",
    }


def test_producer_options_plaintext_has_no_tls_or_sasl() -> None:
    options = producer_options(kafka_settings("127.0.0.1:9092"))

    assert options["security_protocol"] == "PLAINTEXT"
    assert options["enable_idempotence"] is False
    assert not {"ssl_context", "sasl_mechanism", "sasl_plain_password"} & options.keys()
    with pytest.raises(ValueError, match="KAFKA_BOOTSTRAP_SERVERS"):
        producer_options(Settings(KAFKA_BOOTSTRAP_SERVERS=None))


async def test_publish_raises_when_the_broker_is_unreachable() -> None:
    closed = f"127.0.0.1:{free_port()}"
    publisher = KafkaPublisher(kafka_settings(closed), request_timeout_ms=1000)

    async with asyncio.timeout(10):
        with pytest.raises(KafkaPublishError):
            await publisher.publish(some_envelopes(3))
        assert not publisher.started  # nothing half-started is kept
        with pytest.raises(KafkaPublishError):
            await publisher.publish(some_envelopes(3))  # and the next call tries again
    await publisher.stop()


async def test_publish_raises_while_the_broker_is_away_and_recovers_after(
    kafka_bootstrap: str,
) -> None:
    try:
        process, bootstrap = start_broker()  # its own broker, to kill and bring back
    except BrokerUnavailable as error:
        pytest.skip(str(error))
    topic = f"test-events-{uuid.uuid4().hex[:12]}"
    publisher = KafkaPublisher(kafka_settings(bootstrap, topic), request_timeout_ms=1000)
    try:
        await asyncio.wait_for(create_topic(bootstrap, topic), WITHIN)
        await asyncio.wait_for(publisher.publish(some_envelopes(3)), WITHIN)
        stop_broker(process)

        async with asyncio.timeout(10):
            with pytest.raises(KafkaPublishError, match="not acknowledged"):
                await publisher.publish(some_envelopes(30))
        assert not publisher.started

        process, _ = start_broker(int(bootstrap.rsplit(":", 1)[1]))  # empty: memory storage
        await asyncio.wait_for(create_topic(bootstrap, topic), WITHIN)
        events = some_envelopes(5)
        await asyncio.wait_for(publisher.publish(events), WITHIN)
        records = await read_all(bootstrap, topic, 5)
        assert {json.loads(record.value)["id"] for record in records} == {e["id"] for e in events}
    finally:
        stop_broker(process)
        await asyncio.wait_for(publisher.stop(), WITHIN)
