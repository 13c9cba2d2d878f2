"""The one guard every tenant-configured URL goes through (webhooks; channels and documents next).

Two checks, because one is not enough. `check_url` refuses a URL when it is saved, with an error
the tenant can act on. `GuardedTransport` repeats the address check for every connection it opens
and connects to the very address it checked, so a name that resolves to a public address when it
is saved and to 127.0.0.1 when it is called (DNS rebinding) is still refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from app.core.errors import ValidationFailedError

MAX_URL_LENGTH = 2000
ALLOWED_SCHEMES = frozenset({"http", "https"})
# check_url runs inside an API request: a resolver that does not answer must not hold it long.
RESOLVE_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance-metadata endpoints hand out cloud credentials, so the error names them. All but Azure's
# platform address (168.63.129.16, a public one) fall in ranges refused anyway.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class OutboundURLRefused(ValidationFailedError):
    """A tenant-supplied URL the guard refuses: a 422 about one field, like `field_error`."""

    code = "url_not_allowed"

    def __init__(self, reason: str, *, field: str = "url") -> None:
        super().__init__(
            f"The request is invalid: {field}: {reason}",
            details=[{"field": field, "message": reason, "type": "value_error"}],
        )
        self.reason = reason
        self.field = field


class OutboundAddressRefused(httpx.ConnectError):
    """A connection a `GuardedTransport` refused because `host` resolved to `address`.

    An `httpx.ConnectError`, so code that handles failed deliveries handles it; `reason` is safe
    to log (it names the host, never the URL and so never credentials in it).
    """

    def __init__(self, host: str, address: IPAddress, kind: str) -> None:
        self.host = host
        self.address = address
        self.kind = kind
        self.reason = f"refused: {host} resolves to a non-public address ({address}, {kind})"
        super().__init__(self.reason)


def non_public_kind(address: IPAddress) -> str | None:
    """What kind of non-public address this is ("loopback", "private", ...); None if public."""
    if address in _METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(address, ipaddress.IPv6Address):
        # These IPv6 forms reach the IPv4 host they carry, so that host is what counts.
        if address.ipv4_mapped is not None:
            return non_public_kind(address.ipv4_mapped)
        if address in _NAT64_PREFIX:
            return non_public_kind(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None and (kind := non_public_kind(address.sixtofour)):
            return kind
        if address.is_site_local:  # deprecated, but Python 3.11 calls fec0::/10 global
            return "site-local"
    # The specific kinds first: is_private is also true of loopback, link-local and 0.0.0.0.
    # Multicast needs its own test because Python counts 224.0.0.0/4 and ff00::/8 as global;
    # is_reserved catches the IPv4-compatible ::a.b.c.d forms (::/8), which 3.11 calls global.
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", address in _SHARED_ADDRESS_SPACE),
        ("reserved", address.is_reserved),
        ("private", address.is_private or not address.is_global),
    )
    return next((kind for kind, matches in checks if matches), None)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order; an IP literal is itself.

    Raises `OSError` (`socket.gaierror`) or `UnicodeError` (an over-long label) when it does not
    resolve.
    """
    with contextlib.suppress(ValueError):
        return [ipaddress.ip_address(host)]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(
        dict.fromkeys(
            ipaddress.ip_address(str(sockaddr[0]))
            for family, _type, _proto, _name, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)
        )
    )
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no IPv4 or IPv6 address")
    return addresses


def _refusal_message(address: IPAddress, kind: str) -> str:
    return (
        f"The URL's host resolves to a non-public address ({address}, {kind}); such addresses "
        "are refused unless OUTBOUND_ALLOW_PRIVATE_NETWORKS=true."
    )


def _host_and_port(url: str, field: str) -> tuple[str, int]:
    """The host and port `url` connects to, as httpcore will see them, or OutboundURLRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise OutboundURLRefused(
            f"The URL is longer than {MAX_URL_LENGTH} characters.", field=field
        )
    try:
        # httpx's own parser, so the host checked is the host the client will connect to.
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise OutboundURLRefused("The URL is not valid.", field=field) from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise OutboundURLRefused("The URL must start with http:// or https://.", field=field)
    if not parsed.raw_host:
        raise OutboundURLRefused("The URL has no host.", field=field)
    if parsed.userinfo:
        raise OutboundURLRefused("The URL must not contain a user name or password.", field=field)
    return parsed.raw_host.decode("ascii"), parsed.port or (443 if parsed.scheme == "https" else 80)


async def check_url(url: str, *, allow_private: bool, field: str = "url") -> None:
    """Refuse a tenant-configured URL unless it may be called: http(s), a host, no credentials,
    and (unless `allow_private`, i.e. OUTBOUND_ALLOW_PRIVATE_NETWORKS) a host whose every address
    is public. Raises `OutboundURLRefused` (422, `url_not_allowed`, a detail for `field`).
    """
    host, port = _host_and_port(url, field)
    if allow_private:
        return
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            addresses = await resolve(host, port)
    except (OSError, UnicodeError):  # socket.gaierror and TimeoutError are OSErrors
        raise OutboundURLRefused(
            f"The URL's host ({host}) does not resolve.", field=field
        ) from None
    for address in addresses:
        if (kind := non_public_kind(address)) is not None:
            raise OutboundURLRefused(_refusal_message(address, kind), field=field)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves each host itself, refuses the connection if any
    address is not public, and otherwise connects to the checked addresses (as IP literals, so
    nothing resolves the name a second time). TLS still verifies the URL's host name: httpcore
    passes it to `start_tls` as `server_hostname`. asyncio only (it resolves on the running loop).
    """

    def __init__(
        self, *, allow_private: bool, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._allow_private = allow_private
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._allow_private:
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(deadline - loop.time(), 0.0)

        *fallbacks, last = await self._checked_addresses(host, port, within=timeout)
        for address in fallbacks:
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return await self._inner.connect_tcp(
                    str(address), port, remaining(), local_address, socket_options
                )
        return await self._inner.connect_tcp(
            str(last), port, remaining(), local_address, socket_options
        )

    async def _checked_addresses(
        self, host: str, port: int, *, within: float | None
    ) -> list[IPAddress]:
        try:
            async with asyncio.timeout(within):
                addresses = await resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        for address in addresses:
            if (kind := non_public_kind(address)) is not None:
                raise OutboundAddressRefused(host, address, kind)
        return addresses

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every TCP connection goes through `GuardedNetworkBackend`.

    It never uses a proxy (a proxy would connect on our behalf, unchecked). Give it to a client
    built with `trust_env=False` and `follow_redirects=False`, as `outbound_client` does.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        # httpx 0.28 takes no network backend, so the pool it built is replaced by one that
        # has ours. `_pool` is private: if it ever moves, fail here rather than send through an
        # unguarded pool (tests/core/test_outbound.py covers both).
        if type(getattr(self, "_pool", None)) is not httpcore.AsyncConnectionPool:
            raise RuntimeError("httpx.AsyncHTTPTransport changed; update app/core/outbound.py")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(allow_private=allow_private),
        )


def outbound_client(settings_allow_private: bool, timeout: float) -> httpx.AsyncClient:
    """A client for tenant-configured URLs (`settings_allow_private` is
    OUTBOUND_ALLOW_PRIVATE_NETWORKS): the guarded transport; `trust_env=False`, so no proxy,
    netrc or certificate settings from the environment; and no redirects, since a 3xx is the
    endpoint's answer (a followed redirect would still be checked when it connects).
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=settings_allow_private),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
