"""HTTP clients for tools, webhooks and MCP servers whose connections go only to addresses the
URL guard checked (`url_guard.resolve_checked`).

The request URL keeps its host name, so the `Host` header, TLS SNI and certificate checks are
the name's; only the TCP connect is pinned: a network backend looks the host up in the pins of
the calling task (`pinned_to`) and connects to those addresses, never resolving the name
again. A host with no pin (a redirect elsewhere, a pin that was never made) is not connected
to at all. Environment proxies are ignored (`trust_env=False`): a proxy would resolve the
name itself.
"""

from __future__ import annotations

import contextvars
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import httpcore
import httpcore2
import httpx
import httpx2

from src.tools.url_guard import CheckedTarget, IPAddress

_T = TypeVar("_T")
_pins: contextvars.ContextVar[Mapping[str, tuple[IPAddress, ...]] | None] = contextvars.ContextVar(
    "parley_pinned_addresses", default=None
)


@contextmanager
def pinned_to(target: CheckedTarget) -> Iterator[None]:
    """Within the block (and tasks started in it), connections to `target.host` go to its
    checked addresses."""
    pins = {**(_pins.get() or {}), _pin_key(target.host): target.addresses}
    token = _pins.set(pins)
    try:
        yield
    finally:
        _pins.reset(token)


def _pin_key(host: str) -> str:
    # httpcore hands the backend the URL's ASCII host (IDNA-encoded, lower case, IPv6 bare).
    return httpx.URL(scheme="http", host=host).raw_host.decode("ascii").lower()


class UnpinnedHost(Exception):
    """A connection to a host no check pinned: refused before any packet is sent."""


async def _connect_pinned(host: str, connect: Callable[[str], Awaitable[_T]]) -> _T:
    addresses = (_pins.get() or {}).get(host.lower())
    if not addresses:
        raise UnpinnedHost(f"{host} was not checked by the URL guard; not connecting")
    last: Exception | None = None
    for address in addresses:
        try:
            return await connect(str(address))
        except OSError as error:
            last = error
        except (httpcore.ConnectError, httpcore2.ConnectError) as error:
            last = error
    assert last is not None
    raise last


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend (for httpx), connecting to pinned addresses only."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        async def connect(address: str) -> httpcore.AsyncNetworkStream:
            return await self._inner.connect_tcp(
                address, port, timeout, local_address, socket_options
            )

        try:
            return await _connect_pinned(host, connect)
        except UnpinnedHost as error:
            raise httpcore.ConnectError(str(error)) from None

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for outbound calls")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedBackend2(httpcore2.AsyncNetworkBackend):
    """The same for httpcore2 (under httpx2, which the MCP SDK uses)."""

    def __init__(self) -> None:
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        async def connect(address: str) -> httpcore2.AsyncNetworkStream:
            return await self._inner.connect_tcp(
                address, port, timeout, local_address, socket_options
            )

        try:
            return await _connect_pinned(host, connect)
        except UnpinnedHost as error:
            raise httpcore2.ConnectError(str(error)) from None

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are not used for outbound calls")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pinned_client(ssl_context: ssl.SSLContext | None = None, **options: Any) -> httpx.AsyncClient:
    """An httpx client that never follows redirects and connects only to pinned addresses.
    `ssl_context` defaults to httpx's (certifi's CAs); `options` go to `httpx.AsyncClient`
    (not `transport`, `follow_redirects`, `trust_env`)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx takes no network backend; its transport is a thin adapter over this pool, built
    # here with the same settings and our backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
        network_backend=PinnedBackend(),
    )
    return httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, **options
    )


def pinned_client2(max_response_bytes: int, **options: Any) -> httpx2.AsyncClient:
    """The same for httpx2, and every response body is cut off with an error past
    `max_response_bytes` (the MCP SDK reads JSON responses whole). Responses are asked for
    uncompressed, so the cap bounds what is held in memory."""
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=httpx2.create_ssl_context(trust_env=False),
        network_backend=PinnedBackend2(),
    )
    headers = {"Accept-Encoding": "identity", **options.pop("headers", {})}
    return httpx2.AsyncClient(
        transport=_CappedTransport(transport, max_response_bytes),
        follow_redirects=False,
        trust_env=False,
        headers=headers,
        **options,
    )


class ResponseTooLarge(httpx2.StreamError):
    """The response body went past the byte cap; reading stopped there."""


class _CappedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, max_bytes: int) -> None:
        self._inner = inner
        self._max_bytes = max_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._max_bytes),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, max_bytes: int) -> None:
        self._inner = inner
        self._max_bytes = max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._inner:
            received += len(chunk)
            if received > self._max_bytes:
                raise ResponseTooLarge(f"the response was longer than {self._max_bytes} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


async def read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most `max_bytes` of a streamed response's (decoded) body, and whether there was
    more; reading stops there, and closing the response drops the connection."""
    parts: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        received += len(chunk)
        if received > max_bytes:
            return b"".join(parts)[:max_bytes], True
    return b"".join(parts), False
