"""The outbound URL guard: what `check_url` refuses when a URL is saved, and that the guarded
transport refuses the same addresses when it connects, including after DNS rebinding.

Name resolution is faked on the running loop (there is no internet here): names the test sets
answer as set, anything else goes to the real resolver as a numeric host only (plus
`localhost`, from /etc/hosts), so no test can send a DNS query.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
import pytest

from app.core.errors import ValidationFailedError
from app.core.outbound import (
    GuardedNetworkBackend,
    GuardedTransport,
    OutboundAddressRefused,
    OutboundURLRefused,
    check_url,
    outbound_client,
)

WAIT_SECONDS = 5.0


class FakeDNS:
    """Answers for the names a test sets; each answer is used once, and the last one sticks."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []

    def set(self, name: str, *answers: list[str]) -> None:
        self._answers[name] = list(answers)

    async def getaddrinfo(
        self,
        host: str | bytes,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        # anyio passes the host IDNA-encoded, as bytes.
        host = host.decode("ascii") if isinstance(host, bytes) else host
        if host not in self._answers:
            numeric_only = 0 if host == "localhost" else socket.AI_NUMERICHOST
            infos: list[tuple[Any, ...]] = await self._real(
                host, port, family=family, type=type, proto=proto, flags=flags | numeric_only
            )
            return infos
        self.lookups.append(host)
        queue = self._answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]


@pytest.fixture(autouse=True)
async def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    loop = asyncio.get_running_loop()
    fake = FakeDNS(loop.getaddrinfo)
    monkeypatch.setattr(loop, "getaddrinfo", fake.getaddrinfo)
    return fake


@dataclass
class LocalServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 that counts the connections it accepts."""

    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    state = LocalServer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_SECONDS)
            state.requests.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), WAIT_SECONDS)


async def _refused(url: str, *, allow_private: bool = False) -> OutboundURLRefused:
    with pytest.raises(OutboundURLRefused) as caught:
        await check_url(url, allow_private=allow_private)
    return caught.value


async def _get(allow_private: bool, url: str) -> httpx.Response:
    async with outbound_client(allow_private, timeout=WAIT_SECONDS) as client:
        return await asyncio.wait_for(client.get(url), WAIT_SECONDS)


@pytest.mark.parametrize(
    ("url", "address", "kind"),
    [
        ("http://127.0.0.1/", "127.0.0.1", "loopback"),
        ("http://10.1.2.3:8080/hook", "10.1.2.3", "private"),
        ("http://172.16.0.1/", "172.16.0.1", "private"),
        ("https://192.168.1.1/", "192.168.1.1", "private"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "cloud metadata"),
        ("http://100.100.100.200/", "100.100.100.200", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254", "cloud metadata"),
        ("http://[::1]/", "::1", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "::ffff:a00:1", "private"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:a9fe:a9fe", "cloud metadata"),
        ("http://[64:ff9b::7f00:1]/", "64:ff9b::7f00:1", "loopback"),
        ("http://[2002:a00:1::1]/", "2002:a00:1::1", "private"),
        ("http://[::7f00:1]/", "::7f00:1", "reserved"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),  # noqa: S104 - a URL, not a bind
        ("http://[::]/", "::", "unspecified"),
        ("http://100.64.0.1/", "100.64.0.1", "carrier-grade NAT"),
        ("http://[fe80::1]/", "fe80::1", "link-local"),
        ("http://[fc00::1]/", "fc00::1", "private"),
        ("http://[fec0::1]/", "fec0::1", "site-local"),
        ("http://224.0.0.1/", "224.0.0.1", "multicast"),
        ("http://[ff02::1]/", "ff02::1", "multicast"),
        ("http://240.0.0.1/", "240.0.0.1", "reserved"),
        # Shorthand IPv4 forms the resolver reads as numbers.
        ("http://2130706433/", "127.0.0.1", "loopback"),
        ("http://0x7f.1/", "127.0.0.1", "loopback"),
        ("http://localhost:8000/", "127.0.0.1", "loopback"),
    ],
)
async def test_refuses_non_public_addresses(url: str, address: str, kind: str) -> None:
    refused = await _refused(url)
    assert refused.code == "url_not_allowed"
    assert refused.status_code == 422
    assert f"({address}, {kind})" in refused.reason
    assert "OUTBOUND_ALLOW_PRIVATE_NETWORKS=true" in refused.reason


async def test_refuses_a_name_resolving_to_a_private_address(dns: FakeDNS) -> None:
    dns.set("intranet.test", ["10.0.0.7"])
    assert "(10.0.0.7, private)" in (await _refused("https://intranet.test/hook")).reason


async def test_refuses_a_name_when_any_of_its_addresses_is_private(dns: FakeDNS) -> None:
    dns.set("mixed.test", ["93.184.216.34", "2606:4700::1111", "192.168.0.10"])
    assert "(192.168.0.10, private)" in (await _refused("https://mixed.test/")).reason


async def test_refuses_a_name_that_does_not_resolve(dns: FakeDNS) -> None:
    dns.set("nowhere.test", [])
    assert "(nowhere.test) does not resolve" in (await _refused("https://nowhere.test/")).reason


@pytest.mark.parametrize(
    "url",
    ["http://93.184.216.34/", "https://[2606:4700::1111]:8443/hook?x=1", "https://public.test/"],
)
async def test_accepts_public_addresses(dns: FakeDNS, url: str) -> None:
    dns.set("public.test", ["93.184.216.34", "2606:4700::1111"])
    await check_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/file", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("example.com/hook", "must start with http:// or https://"),
        ("http:///hook", "has no host"),
        ("http:example.com", "has no host"),
        ("http://example.com:port/", "is not valid"),
        ("https://user:hunter2@example.com/", "must not contain a user name or password"),
        ("https://token@example.com/", "must not contain a user name or password"),
        ("https://example.com/" + "a" * 2000, "longer than 2000 characters"),
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
async def test_refuses_malformed_urls(url: str, problem: str, allow_private: bool) -> None:
    refused = await _refused(url, allow_private=allow_private)
    assert problem in refused.reason
    assert "hunter2" not in refused.message and "token" not in refused.message


async def test_allow_private_skips_the_address_checks(dns: FakeDNS) -> None:
    dns.set("intranet.test", ["10.0.0.7"])
    for url in ("http://127.0.0.1:8000/", "http://localhost/", "http://intranet.test/"):
        await check_url(url, allow_private=True)
    assert dns.lookups == []


async def test_the_refusal_is_a_field_error() -> None:
    refused = await _refused("http://10.0.0.1/")
    assert isinstance(refused, ValidationFailedError)
    assert refused.details == [{"field": "url", "message": refused.reason, "type": "value_error"}]
    assert refused.message == f"The request is invalid: url: {refused.reason}"
    with pytest.raises(OutboundURLRefused) as caught:
        await check_url("ftp://x", allow_private=False, field="channel.base_url")
    assert caught.value.details is not None
    assert caught.value.details[0]["field"] == "channel.base_url"


async def test_the_transport_refuses_a_private_address_before_connecting(
    server: LocalServer,
) -> None:
    url = f"http://127.0.0.1:{server.port}/"
    with pytest.raises(OutboundAddressRefused) as caught:
        await _get(False, url)
    assert isinstance(caught.value, httpx.ConnectError)
    assert caught.value.request.url == url
    assert (
        caught.value.reason
        == "refused: 127.0.0.1 resolves to a non-public address (127.0.0.1, loopback)"
    )
    # The same server answers an allowed client, so the refused one really never connected.
    assert (await _get(True, url)).text == "ok"
    assert server.connections == 1


async def test_the_transport_allows_private_addresses_when_told(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Environment proxies are ignored: this one does not exist.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    response = await _get(True, f"http://localhost:{server.port}/hook")
    assert response.status_code == 200
    assert server.requests[0].startswith(b"GET /hook HTTP/1.1")


async def test_dns_rebinding_is_refused_when_connecting(dns: FakeDNS, server: LocalServer) -> None:
    dns.set("rebind.test", ["93.184.216.34"], ["127.0.0.1"])
    url = f"http://rebind.test:{server.port}/"
    await check_url(url, allow_private=False)
    with pytest.raises(OutboundAddressRefused) as caught:
        await _get(False, url)
    assert caught.value.host == "rebind.test"
    assert str(caught.value.address) == "127.0.0.1"
    await asyncio.sleep(0.05)
    assert server.connections == 0
    assert dns.lookups == ["rebind.test", "rebind.test"]


class RecordingBackend(httpcore.AsyncMockBackend):
    """Records where it was asked to connect; fails for the addresses in `unreachable`."""

    def __init__(self, unreachable: set[str] | None = None) -> None:
        super().__init__([])
        self.unreachable = unreachable or set()
        self.connected: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connected.append((host, port))
        if host in self.unreachable:
            raise httpcore.ConnectError(f"{host} unreachable")
        return await super().connect_tcp(host, port, *args, **kwargs)


async def test_the_backend_connects_to_the_address_it_checked(dns: FakeDNS) -> None:
    dns.set("pinned.test", ["2606:4700::1111", "93.184.216.34"])
    inner = RecordingBackend(unreachable={"2606:4700::1111"})
    backend = GuardedNetworkBackend(allow_private=False, inner=inner)
    await asyncio.wait_for(backend.connect_tcp("pinned.test", 443, timeout=1.0), WAIT_SECONDS)
    assert inner.connected == [("2606:4700::1111", 443), ("93.184.216.34", 443)]
    assert dns.lookups == ["pinned.test"]


async def test_the_backend_reports_an_unresolvable_name_as_a_connect_error(dns: FakeDNS) -> None:
    dns.set("gone.test", [])
    backend = GuardedNetworkBackend(allow_private=False, inner=RecordingBackend())
    with pytest.raises(httpcore.ConnectError, match=r"gone\.test does not resolve"):
        await asyncio.wait_for(backend.connect_tcp("gone.test", 80, timeout=1.0), WAIT_SECONDS)


def test_the_transport_fails_closed_if_httpx_moves_its_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GuardedTransport swaps httpx's private `_pool`; a renamed attribute must not go unguarded.
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "__init__", lambda self, **kwargs: None)
    with pytest.raises(RuntimeError, match="changed"):
        GuardedTransport(allow_private=False)


async def test_the_client_neither_redirects_nor_trusts_the_environment() -> None:
    async with outbound_client(False, timeout=3.0) as client:
        assert client.follow_redirects is False
        assert client.trust_env is False
        assert client.timeout == httpx.Timeout(3.0)
