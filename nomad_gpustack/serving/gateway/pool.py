"""The upstream connection pool: keep-alive HTTP/1.1 connections to the instances, on asyncio protocols with
httptools' C parser for the answers (uvicorn parses the clients' requests with it).

Why not httpx here: on a request that only passes bytes through, httpx, httpcore, h11 and anyio were most of
the gateway's CPU time (bench/gateway_bench.py, profiled with py-spy): a request object, a response object,
a pure-Python parser, a cancel scope per read. Here a connection is one protocol object: the answer's head
arrives in a future, its body as the bytes read from the socket, which are passed on as they are. httpx stays
where it serves (Consul, Nomad, `nomadgs chat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import urllib.parse
from collections.abc import Container

import httptools

READ_HIGH_WATER = 256 * 1024  # bytes of an answer read and not yet passed on, past which reading pauses
CLOSED_UNANSWERED = "the instance closed the connection without sending a response"


class ConnectFailed(Exception):
    """No connection could be made: nothing reached the instance, another one can take the request."""


class UpstreamError(Exception):
    """The connection broke, or the instance's answer is not HTTP: the request may have reached the model.
    `unanswered`: not a byte of an answer came (then a kept-alive connection is the keep-alive race)."""

    def __init__(self, message: str, *, unanswered: bool = False) -> None:
        super().__init__(message)
        self.unanswered = unanswered


class UpstreamTimeout(Exception):
    """The instance did not answer, or did not read the request, in time."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to an instance, with one exchange at a time on it."""

    def __init__(self, pool: InstancePool, key: tuple[bytes, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._keep_alive = False
        self._framed = False  # the answer has a length or chunks: else it ends with the connection
        self._head: asyncio.Future[None] | None = None
        self._body: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self.complete = False  # the whole answer was read
        self.answered = False  # a byte of an answer came
        self.closed = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self.last_read = 0.0
        self.exchanges = 0  # requests sent on it: more than none, and it is a kept-alive connection used again

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass of asyncio's

    def data_received(self, data: bytes) -> None:
        self.answered = True
        self.last_read = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - the gateway never asks for an upgrade
            self._fail(UpstreamError("the instance switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the instance's answer is not valid HTTP ({exc})"))

    def eof_received(self) -> bool | None:
        return None  # close our side too: no half-open connection left behind

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._lost(self)
        if self._head is not None and not self.complete:  # in the middle of an exchange
            if exc is None and self.status and not self._framed:
                self.complete = True  # an answer without a length or chunks ends with its connection
                self._wake()
            elif exc is None:
                what = "the instance closed the connection in the middle of its answer"
                self._fail(UpstreamError(what if self.answered else CLOSED_UNANSWERED, unanswered=not self.answered))
            else:
                self._fail(UpstreamError(_broke("reading", exc), unanswered=not self.answered))
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(self.error or UpstreamError("the connection closed"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- httptools callbacks ------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self.headers = []
            self._framed = False
            return
        self.status = status
        if status in (204, 304):
            self._framed = True
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:
            self._keep_alive = self._parser.should_keep_alive()  # only known inside the callback
            self.complete = True
            self._wake()

    # --- the exchange -------------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes) -> None:
        """Start an exchange: write the request's head (and body, or its first part)."""
        assert self.transport is not None
        self.status = 0
        self.headers = []
        self._framed = False
        self.complete = self.answered = self._keep_alive = False
        self._head = self.loop.create_future()
        self.exchanges += 1
        self.last_read = self.loop.time()
        self.transport.write(data)

    def write(self, data: bytes | bytearray) -> None:
        """More of the request's body."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self, timeout: float | None) -> None:
        """Wait until the instance has taken what was written, up to `timeout` seconds (UpstreamTimeout)."""
        if not self._write_paused:
            return
        if self.error is not None:
            raise self.error
        self._drained = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        except TimeoutError:
            raise UpstreamTimeout("it did not read the request") from None
        finally:
            self._drained = None

    async def head(self, timeout: float | None) -> None:
        """Wait for the head of the answer (status, headers); UpstreamTimeout after `timeout` seconds."""
        head = self._head
        assert head is not None
        if head.done():
            head.result()
            return
        timer = self.loop.call_later(timeout, _expire, head) if timeout else None
        try:
            await head
        except TimeoutError:
            raise UpstreamTimeout() from None  # no words: the caller says how long it waited
        finally:
            if timer is not None:
                timer.cancel()

    async def read(self, idle_timeout: float | None) -> bytes | None:
        """The answer's body read since the last call, as it came off the socket; None at its end. UpstreamError
        when the connection breaks, UpstreamTimeout when nothing comes for `idle_timeout` seconds."""
        while True:
            if self._body:
                data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self._buffered = 0
                if self._read_paused and self.transport is not None:
                    self._read_paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            waiter = self._waiter = self.loop.create_future()
            timer = self.loop.call_at(self.last_read + idle_timeout, _expire, waiter) if idle_timeout else None
            try:
                await waiter
            except TimeoutError:
                if self.loop.time() - self.last_read < (idle_timeout or 0):
                    continue  # data came meanwhile
                raise UpstreamTimeout("nothing sent") from None
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def reusable(self) -> bool:
        return self.complete and self._keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()  # at once: a request cut in the middle must stop at the instance too
        self.closed = True


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _broke(doing: str, exc: BaseException) -> str:
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"the connection broke while {doing} ({detail})" if detail else f"the connection broke while {doing}"


class InstancePool:
    """Keep-alive HTTP/1.1 connections to the instances.

    Each instance has a stack of idle connections: taking one and giving it back are O(1). The last used is
    taken first, so surplus connections age out after a burst. A connection the instance closes leaves the
    pool at once (its protocol hears of it), so none stays in CLOSE-WAIT. Plain http only: instances are
    reached on their host address.

    `prune`, called now and then, closes the idle connections that sat idle too long, and those to instances
    no longer routed to: else they stay open, one more set at every reschedule.
    """

    def __init__(self, *, keepalive_expiry: float = 4.0, max_idle_per_instance: int = 256) -> None:
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_instance = max_idle_per_instance
        self._idle: dict[tuple[bytes, int], list[Connection]] = {}
        self._open: dict[Connection, tuple[bytes, int]] = {}  # every connection, idle or busy
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
        """Close the idle connections that expired and those to instances not in `keep` (keys from
        `instance_key`). Busy ones are left to finish their answer."""
        now = asyncio.get_running_loop().time()
        for key, stack in list(self._idle.items()):
            doomed = [c for c in stack if key not in keep or now - c.idle_since > self.keepalive_expiry]
            for connection in doomed:
                self._discard(connection)

    async def checkout(self, key: tuple[bytes, int], timeout: float | None, *, fresh: bool = False) -> Connection:
        """An idle connection to the instance, or a new one (`fresh`: always new); ConnectFailed."""
        stack = self._idle.get(key)
        if stack and not fresh:
            now = asyncio.get_running_loop().time()
            while stack:
                connection = stack.pop()
                if not connection.closed and now - connection.idle_since <= self.keepalive_expiry:
                    return connection
                self._discard(connection)
        loop = asyncio.get_running_loop()
        host = key[0].decode("ascii")
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(lambda: Connection(self, key), host, key[1])
        except TimeoutError:
            raise ConnectFailed(f"cannot connect (no answer within {timeout:g}s)") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect ({exc.strerror or exc})") from None
        protocol.transport = transport  # uvloop may call connection_made only after this returns
        self._open[protocol] = key
        return protocol

    def checkin(self, connection: Connection) -> None:
        """Give a connection back after its exchange: kept when it can carry another, else closed."""
        if self._closed or not connection.reusable():
            self._discard(connection)
            return
        stack = self._idle.setdefault(connection.key, [])
        if len(stack) >= self.max_idle_per_instance:
            self._discard(connection)
            return
        connection.idle_since = connection.loop.time()
        stack.append(connection)

    def _discard(self, connection: Connection) -> None:
        connection.close()
        self._lost(connection)

    def _lost(self, connection: Connection) -> None:
        """Forget a connection that closed."""
        self._open.pop(connection, None)
        stack = self._idle.get(connection.key)
        if stack is not None:
            with contextlib.suppress(ValueError):
                stack.remove(connection)
            if not stack:
                del self._idle[connection.key]

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()


@functools.lru_cache(maxsize=4096)  # on every request: the instances' origins are few and change seldom
def instance_key(origin: str) -> tuple[bytes, int]:
    """The pool's key for the instance at `origin` (`http://host:port`), as requests to it compute it."""
    url = urllib.parse.urlsplit(origin)
    return (url.hostname or "").encode("idna"), url.port or 80
