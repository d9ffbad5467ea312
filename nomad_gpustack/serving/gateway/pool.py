"""The upstream connection pool: keep-alive HTTP/1.1 connections to the instances."""

from __future__ import annotations

from collections.abc import AsyncIterator, Container
from typing import Any

import anyio
import httpcore
import httpx

CLOSED_UNANSWERED = "Server disconnected without sending a response"  # httpcore's words


class InstancePool(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections to the instances, for the gateway's one shared `httpx.AsyncClient`.

    Why not httpx's own pool: on every request and every response close it rescans all its connections and
    requests (quadratic in the connections kept, encode/httpcore#1035), which costs milliseconds per request
    once a few hundred streams are open, the normal state of a model gateway. Here each instance has a stack
    of idle connections: taking one and giving it back are O(1). The last used is taken first, so surplus
    connections age out after a burst. Plain http only: instances are reached on their host address.

    `prune`, called now and then, closes the idle connections that the instance closed or that sat idle too
    long, and those to instances no longer routed to: else they stay open, in CLOSE-WAIT once the instance
    is gone, one more set at every reschedule.
    """

    def __init__(self, *, keepalive_expiry: float = 4.0, max_idle_per_instance: int = 256) -> None:
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_instance = max_idle_per_instance
        self._idle: dict[tuple[bytes, int], list[Any]] = {}
        self._open: dict[Any, tuple[bytes, int]] = {}  # every connection, idle or busy, so that aclose() misses none
        self._closed = False

    @property
    def connections(self) -> int:
        """Open connections, idle or busy."""
        return len(self._open)

    def connections_to(self, origin: str) -> int:
        """Open connections, idle or busy, to the instance at `origin` (`http://host:port`)."""
        key = instance_key(origin)
        return sum(1 for k in self._open.values() if k == key)

    async def prune(self, keep: Container[tuple[bytes, int]]) -> None:
        """Close the idle connections that expired (closed by the instance, or idle too long) and those to
        instances not in `keep` (keys from `instance_key`). Busy ones are left to finish their answer."""
        doomed: list[Any] = []
        for key, stack in list(self._idle.items()):
            alive: list[Any] = []
            for connection in stack:  # in order: the last used stays on top
                (alive if key in keep and not connection.has_expired() else doomed).append(connection)
            if len(alive) == len(stack):
                continue
            stack[:] = alive  # in place: a checkout waiting on a close holds this list
            if not alive:
                del self._idle[key]
        for connection in doomed:
            await self._discard(connection)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"the gateway reaches instances over http, not {url.scheme}")
        key = (url.raw_host, url.port or 80)  # as instance_key() computes it
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        fresh = False
        for _ in range(3):
            connection, reused = await self._checkout(key, fresh)
            try:
                response = await connection.handle_async_request(core_request)
            except httpcore.ConnectionNotAvailable:
                # The connection closed between our check and its use; nothing was sent, so try another.
                await self._discard(connection)
                continue
            except (httpcore.RemoteProtocolError, httpcore.ReadError) as exc:
                await self._discard(connection)
                closed = isinstance(exc, httpcore.ReadError) or str(exc).startswith(CLOSED_UNANSWERED)
                if reused and closed:
                    # The keep-alive race: the instance closed this idle connection as the request went out
                    # (its idle timeout, or a restart), so it never read it; the close reads as an end of
                    # stream or, when the request reached the closed socket first, as a reset. Sent once more
                    # on a new connection, as HTTP clients do for a reused connection closed before any answer
                    # (Go's net/http errServerClosedIdle); a new connection that fails so is not retried.
                    fresh = True
                    continue
                raise _httpx_error(exc) from None
            except BaseException as exc:
                await self._discard(connection)
                raise _httpx_error(exc) from None
            return httpx.Response(
                status_code=response.status,
                headers=response.headers,
                stream=_PooledStream(self, key, connection, response.stream),
                extensions=response.extensions,
            )
        raise httpx.ConnectError("no usable connection to the instance")

    async def _checkout(self, key: tuple[bytes, int], fresh: bool = False) -> tuple[Any, bool]:
        """A connection to the instance, and whether it is an idle one used again (`fresh`: a new one)."""
        stack = self._idle.get(key)
        while stack and not fresh:
            connection = stack.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection, True
            await self._discard(connection)  # the server closed it, or it sat idle too long
        connection = httpcore.AsyncHTTPConnection(
            origin=httpcore.Origin(b"http", key[0], key[1]), keepalive_expiry=self.keepalive_expiry
        )
        self._open[connection] = key
        return connection, False

    async def _checkin(self, key: tuple[bytes, int], connection: Any) -> None:
        stack = self._idle.setdefault(key, [])
        if not self._closed and connection.is_idle() and len(stack) < self.max_idle_per_instance:
            stack.append(connection)
        else:
            await self._discard(connection)
            if not stack:
                self._idle.pop(key, None)  # no entry left behind for an instance that went away

    async def _discard(self, connection: Any) -> None:
        self._open.pop(connection, None)
        with anyio.CancelScope(shield=True):
            await connection.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self._idle.clear()
        for connection in list(self._open):
            await self._discard(connection)


def instance_key(origin: str) -> tuple[bytes, int]:
    """The pool's key for the instance at `origin` (`http://host:port`), as requests to it compute it."""
    url = httpx.URL(origin)
    return url.raw_host, url.port or 80


class _PooledStream(httpx.AsyncByteStream):
    """A response body that gives its connection back to the pool once closed."""

    def __init__(self, pool: InstancePool, key: tuple[bytes, int], connection: Any, stream: Any) -> None:
        self._pool = pool
        self._key = key
        self._connection = connection
        self._stream = stream
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            raise _httpx_error(exc) from None

    async def aclose(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._stream.aclose()  # an unfinished body closes the connection: it cannot be reused
        except Exception as exc:
            raise _httpx_error(exc) from None
        finally:
            await self._pool._checkin(self._key, self._connection)


def _httpx_error(exc: BaseException) -> BaseException:
    """httpx's exception for an httpcore one (they share their names), so callers see httpx errors only."""
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("httpcore"):
            mapped = getattr(httpx, cls.__name__, None)
            if isinstance(mapped, type) and issubclass(mapped, httpx.TransportError):
                return mapped(_detail(exc))
    return exc


def _detail(exc: BaseException) -> str:
    """The first words found down an exception's chain: httpcore wraps the socket's own error (say, "Connection
    reset by peer") in exceptions that have no text of their own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if str(current):
            return str(current)
        current = current.__cause__ or current.__context__
    return ""
