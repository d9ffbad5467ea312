"""`nomadgs gateway`: one OpenAI-compatible address for every model, like GPUStack's `/v1`.

Requests are routed by the `model` field of their JSON body to a healthy instance of that model, taken
from a routing-table source (`ConsulWatcher` in production, `StaticSource` in tests and benchmarks).
Replicas share the load by least outstanding requests, ties broken round robin; an instance that refuses
the connection is set aside for a few seconds and the request goes to the next one. Bodies pass through as
bytes and answers are relayed chunk by chunk, so server-sent events reach the client as the model writes
them.

The gateway only ever connects to discovered instances: the upstream URL is an instance's address and port
plus the fixed path of the route, never anything taken from the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InputError, NomadgsError, Problem
from .discovery import Endpoint, RoutingTable, build_table

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("nomadgs.gateway")

# The OpenAI paths routed by the body's `model` field (GPUStack's set, rerank included).
ROUTED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/audio/speech")
DEFAULT_LISTEN = "127.0.0.1:8080"
API_KEYS_ENV = "NOMADGS_GATEWAY_API_KEYS"
MAX_BODY = 64 * 1024 * 1024  # far above any JSON request; stops a client from filling the gateway's memory
EJECT_SECONDS = 5.0  # how long an instance that refused a connection is tried last, until Consul catches up

# Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), plus those httpx and uvicorn
# set themselves (host, length, server, date).
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"expect"}
)  # fmt: skip
_DROP_REQUEST = _HOP_BY_HOP | {b"host", b"content-length"}
_DROP_REQUEST_AUTH = _DROP_REQUEST | {b"authorization"}
_DROP_RESPONSE = _HOP_BY_HOP | {b"server", b"date"}
_IDENTITY = (b"accept-encoding", b"identity")


class GatewayError(NomadgsError):
    """The gateway cannot start (its address is taken, ...)."""


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape: `{"error": {"message", "type", "code"}}`."""

    def __init__(self, status: int, message: str, type_: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "code": self.code, "param": self.param}
        return json.dumps({"error": error}, ensure_ascii=False).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        return headers

    def response(self) -> Response:
        return Response(self.body(), self.status, {k.decode(): v.decode() for k, v in self.headers()})


def bad_request(message: str, code: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


# ----------------------------------------------------------------------------------------------------
# Pure helpers: request parsing and settings.


def model_of(body: bytes) -> str:
    """The `model` field of a JSON request body; ApiError 400 when the body is not JSON or has no model."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("We could not parse the JSON body of your request.", "invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter.", "missing_model", "model")
    return model


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT` to (host, port); InputError otherwise."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text.strip())
    if not match:
        raise InputError(Problem(f"--listen '{text}' is not HOST:PORT", hint="like 127.0.0.1:8080 or [::1]:8080"))
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise InputError(Problem(f"--listen '{text}': port {port} is above 65535"))
    return host, port


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: a key must fit in an Authorization header as it is


def load_api_keys(flags: Sequence[str], keys_file: str | None, env: Mapping[str, str]) -> list[str]:
    """The accepted API keys: `--api-key` flags, one key per line of `--api-keys-file` (blank lines and `#`
    comments ignored), and the comma- or space-separated NOMADGS_GATEWAY_API_KEYS. Messages never show a key.
    """
    keys: list[str] = []
    for number, key in enumerate(flags, 1):
        if not _KEY.fullmatch(key):
            raise InputError(Problem(f"--api-key number {number} is empty or has spaces or control characters"))
        keys.append(key)
    if keys_file:
        try:
            with open(keys_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise InputError(Problem(f"cannot read the API keys file: {exc.strerror}", keys_file)) from None
        except UnicodeDecodeError:
            raise InputError(Problem("the API keys file is not UTF-8 text", keys_file)) from None
        found = 0
        for line_number, line in enumerate(lines, 1):
            key = line.strip()
            if not key or key.startswith("#"):
                continue
            if not _KEY.fullmatch(key):
                raise InputError(Problem("the key has spaces or control characters", keys_file, line_number))
            keys.append(key)
            found += 1
        if not found:
            raise InputError(Problem("the API keys file holds no key", keys_file))
    keys += [k for k in re.split(r"[,\s]+", env.get(API_KEYS_ENV, "")) if k]
    return keys


class ApiKeys:
    """Accepted keys, kept as SHA-256 digests and compared in constant time."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = tuple({hashlib.sha256(k.encode()).digest() for k in keys})

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self._digests)} keys)"  # never the keys

    def check(self, authorization: bytes | None) -> None:
        """Raise ApiError 401 unless `authorization` is `Bearer <an accepted key>`."""
        scheme, _, token = (authorization or b"").strip().partition(b" ")
        if not token or scheme.lower() != b"bearer":
            raise ApiError(
                401,
                "You didn't provide an API key. Send it in an Authorization header: 'Bearer YOUR_KEY'.",
                "invalid_request_error",
                "invalid_api_key",
            )
        digest = hashlib.sha256(token.strip()).digest()
        # Compare with every key, not stopping at a match, so timing tells nothing about which one matched.
        matched = False
        for accepted in self._digests:
            matched |= hmac.compare_digest(digest, accepted)
        if not matched:
            raise ApiError(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


# ----------------------------------------------------------------------------------------------------
# Routing.


class RouteSource(Protocol):
    """Where the gateway reads its routing table; `table` must be cheap to read on every request."""

    @property
    def table(self) -> RoutingTable: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class StaticSource:
    """A routing table set by hand: for tests, benchmarks, and gateways in front of fixed instances."""

    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        self.table = build_table(endpoints)

    def set(self, endpoints: Iterable[Endpoint]) -> None:
        self.table = build_table(endpoints)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class Balancer:
    """Orders the healthy instances of a model for one request: least outstanding requests first, equal loads
    in round-robin order, instances that recently refused a connection last (they are still tried: Consul may
    be slower to notice a recovery than a failure)."""

    def __init__(self, eject_seconds: float = EJECT_SECONDS) -> None:
        self.eject_seconds = eject_seconds
        self.inflight: dict[tuple[str, int], int] = {}
        self._ejected: dict[tuple[str, int], float] = {}
        self._turns: dict[str, int] = {}

    def order(self, model: str, instances: tuple[Endpoint, ...]) -> Sequence[Endpoint]:
        count = len(instances)
        if count == 1:
            return instances
        turn = self._turns.get(model, 0)
        self._turns[model] = turn + 1
        start = turn % count
        rotated = instances[start:] + instances[:start]
        now = time.monotonic() if self._ejected else 0.0
        # sorted() is stable: equal keys keep the rotated order, which is what makes ties round robin.
        return sorted(rotated, key=lambda e: (self._is_ejected(e, now), self.inflight.get((e.address, e.port), 0)))

    def acquire(self, endpoint: Endpoint) -> None:
        key = (endpoint.address, endpoint.port)
        self.inflight[key] = self.inflight.get(key, 0) + 1

    def release(self, endpoint: Endpoint) -> None:
        key = (endpoint.address, endpoint.port)
        left = self.inflight.get(key, 1) - 1
        if left > 0:
            self.inflight[key] = left
        else:
            self.inflight.pop(key, None)  # no entry per instance that ever existed: the table changes

    def eject(self, endpoint: Endpoint) -> None:
        self._ejected[(endpoint.address, endpoint.port)] = time.monotonic() + self.eject_seconds

    def _is_ejected(self, endpoint: Endpoint, now: float) -> bool:
        key = (endpoint.address, endpoint.port)
        until = self._ejected.get(key)
        if until is None:
            return False
        if until <= now:
            del self._ejected[key]
            return False
        return True


# ----------------------------------------------------------------------------------------------------
# The upstream connection pool.


class InstancePool(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections to the instances, for the gateway's one shared `httpx.AsyncClient`.

    Why not httpx's own pool: on every request and every response close it rescans all its connections and
    requests (quadratic in the connections kept, encode/httpcore#1035), which costs milliseconds per request
    once a few hundred streams are open, the normal state of a model gateway. Here each instance has a stack
    of idle connections: taking one and giving it back are O(1). The last used is taken first, so surplus
    connections age out after a burst. Plain http only: instances are reached on their host address.
    """

    def __init__(self, *, keepalive_expiry: float = 4.0, max_idle_per_instance: int = 256) -> None:
        import httpcore

        self._httpcore = httpcore
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_instance = max_idle_per_instance
        self._idle: dict[tuple[bytes, int], list[Any]] = {}
        self._open: set[Any] = set()  # every connection, idle or busy, so that aclose() misses none
        self._closed = False

    @property
    def connections(self) -> int:
        """Open connections, idle or busy."""
        return len(self._open)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        httpcore = self._httpcore
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"the gateway reaches instances over http, not {url.scheme}")
        key = (url.raw_host, url.port or 80)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        for _ in range(3):
            connection = await self._checkout(key)
            try:
                response = await connection.handle_async_request(core_request)
            except httpcore.ConnectionNotAvailable:
                # The connection closed between our check and its use; nothing was sent, so try another.
                await self._discard(connection)
                continue
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

    async def _checkout(self, key: tuple[bytes, int]) -> Any:
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            await self._discard(connection)  # the server closed it, or it sat idle too long
        connection = self._httpcore.AsyncHTTPConnection(
            origin=self._httpcore.Origin(b"http", key[0], key[1]), keepalive_expiry=self.keepalive_expiry
        )
        self._open.add(connection)
        return connection

    async def _checkin(self, key: tuple[bytes, int], connection: Any) -> None:
        stack = self._idle.setdefault(key, [])
        if not self._closed and connection.is_idle() and len(stack) < self.max_idle_per_instance:
            stack.append(connection)
        else:
            await self._discard(connection)
            if not stack:
                self._idle.pop(key, None)  # no entry left behind for an instance that went away

    async def _discard(self, connection: Any) -> None:
        self._open.discard(connection)
        with anyio.CancelScope(shield=True):
            await connection.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self._idle.clear()
        for connection in list(self._open):
            await self._discard(connection)


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
                return mapped(str(exc))
    return exc


# ----------------------------------------------------------------------------------------------------
# The gateway.


class Gateway:
    """The OpenAI-compatible front: routing, balancing, failover, API keys; `asgi()` is the application."""

    def __init__(
        self,
        source: RouteSource,
        *,
        api_keys: Iterable[str] = (),
        connect_timeout: float = 5.0,
        eject_seconds: float = EJECT_SECONDS,
        max_body: int = MAX_BODY,
    ) -> None:
        self.source = source
        self.keys = ApiKeys(api_keys)
        self.balancer = Balancer(eject_seconds)
        self.max_body = max_body
        self.connect_timeout = connect_timeout
        self._client: httpx.AsyncClient | None = None
        self.pool = InstancePool()

    async def start(self) -> None:
        """Start the source and the shared connection pool; calling it again does nothing."""
        await self.source.start()
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.pool,
                # No read timeout: a model may think for minutes before its first byte; a stream may pause.
                timeout=httpx.Timeout(connect=self.connect_timeout, read=None, write=60.0, pool=None),
                trust_env=False,  # proxy variables must not send model traffic elsewhere
                follow_redirects=False,
            )

    async def aclose(self) -> None:
        await self.source.stop()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()  # closes the pool's connections too
            self.pool = InstancePool()  # ready for another start()

    def asgi(self) -> Starlette:
        """The Starlette application; its lifespan starts and stops the gateway."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.aclose()

        routes = [Route(path, _Forward(self, path), methods=["POST"]) for path in ROUTED_PATHS]
        routes += [
            Route("/v1/models", self._list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self._get_model, methods=["GET"]),
            Route("/healthz", self._healthz, methods=["GET"]),
        ]
        app = Starlette(
            routes=routes,
            lifespan=lifespan,
            exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
        )
        app.state.gateway = self
        return app

    # --- models -------------------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """The models that have a healthy instance, as OpenAI model objects."""
        table = self.source.table
        out = []
        for model, instances in sorted(table.routes.items()):
            first = instances[0]
            out.append(
                {"id": model, "object": "model", "created": 0, "owned_by": "nomadgs",
                 "backend": first.backend, "version": first.version, "instances": len(instances)}
            )  # fmt: skip
        return out

    async def _list_models(self, request: Request) -> Response:
        self._authorize(request.scope)
        return JSONResponse({"object": "list", "data": self.models()})

    async def _get_model(self, request: Request) -> Response:
        self._authorize(request.scope)
        wanted = request.path_params["model"]
        for model in self.models():
            if model["id"] == wanted:
                return JSONResponse(model)
        raise _not_found(wanted)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": len(self.source.table.routes)})

    # --- forwarding ---------------------------------------------------------------------------------------

    def _authorize(self, scope: Scope) -> None:
        if self.keys:
            self.keys.check(_header(scope, b"authorization"))

    def candidates(self, model: str) -> Sequence[Endpoint]:
        """The instances to try for `model`, best first; ApiError 404 or 503 when there is none."""
        table = self.source.table
        instances = table.routes.get(model)
        if instances:
            return self.balancer.order(model, instances)
        if table.knows(model):
            raise ApiError(
                503,
                f"The model '{model}' has no healthy instance right now.",
                "server_error",
                "no_healthy_instance",
            )
        raise _not_found(model)

    async def forward(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request to a routed path (the ASGI hot path)."""
        try:
            self._authorize(scope)
            body = await _read_body(receive, self.max_body)
            model = model_of(body)
            candidates = self.candidates(model)
        except ApiError as exc:
            await _send_error(send, exc)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in (_DROP_REQUEST_AUTH if self.keys else _DROP_REQUEST)]
        if _header(scope, b"accept-encoding") is None:
            headers.append(_IDENTITY)  # else httpx asks for gzip, and the client would get bytes it cannot read
        query = scope.get("query_string")
        suffix = f"{path}?{query.decode('latin-1')}" if query else path
        # The client may leave while the model works: then stop waiting and close the upstream request, which
        # frees the model's slot instead of generating for nobody.
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            try:
                await self._exchange(model, candidates, suffix, body, headers, send)
            except ApiError as exc:
                await _send_error(send, exc)
            group.cancel_scope.cancel()

    async def _exchange(
        self,
        model: str,
        candidates: Sequence[Endpoint],
        suffix: str,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        send: Send,
    ) -> None:
        client = self._client
        if client is None:
            raise ApiError(503, "The gateway is starting.", "server_error", "starting")
        refused: list[str] = []
        for endpoint in candidates:
            request = client.build_request("POST", endpoint.origin + suffix, content=body, headers=headers)
            self.balancer.acquire(endpoint)
            try:
                try:
                    response = await client.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    # Nothing reached the instance, so another one can take the request safely.
                    self.balancer.eject(endpoint)
                    refused.append(f"{endpoint.address}:{endpoint.port} ({_reason(exc)})")
                    log.warning("model %s: %s:%s %s; trying the next instance",
                                model, endpoint.address, endpoint.port, _reason(exc))  # fmt: skip
                    continue
                except httpx.TransportError as exc:
                    # The request may have reached the model: sending it again could run it twice.
                    raise ApiError(
                        502,
                        f"The instance of '{model}' failed: {_reason(exc)}.",
                        "server_error",
                        "upstream_error",
                    ) from None
                try:
                    await _relay(response, send, model)
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                return
            finally:
                self.balancer.release(endpoint)
        raise ApiError(
            502,
            f"All {len(refused)} instances of '{model}' failed: {'; '.join(refused)}.",
            "server_error",
            "upstream_unavailable",
        )


class _Forward:
    """The ASGI endpoint of one routed path; an object, not a function, so Starlette passes the raw call."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway = gateway
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gateway.forward(self.path, scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:  # ASGI servers give header names in lower case
            return bytes(value)
    return None


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _not_found(model: str) -> ApiError:
    return ApiError(404, f"The model '{model}' does not exist.", "invalid_request_error", "model_not_found", "model")


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "The client went away.", "invalid_request_error", "client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"The request body is above {limit} bytes.", "invalid_request_error", "too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _relay(response: httpx.Response, send: Send, model: str) -> None:
    """Pass the instance's answer on as it comes: status, headers, then each chunk as soon as it arrives."""
    headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _DROP_RESPONSE]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    try:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.TransportError as exc:
        # Too late for an error answer; leaving the response incomplete makes the server cut the connection,
        # which tells the client that the answer is truncated.
        log.warning("model %s: the instance failed in the middle of its answer: %s", model, _reason(exc))
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _send_error(send: Send, error: ApiError) -> None:
    await send({"type": "http.response.start", "status": error.status, "headers": error.headers()})
    await send({"type": "http.response.body", "body": error.body(), "more_body": False})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError(404, f"Unknown path {request.url.path}.", "invalid_request_error", "unknown_url")
    elif exc.status_code == 405:
        error = ApiError(405, f"{request.method} is not allowed here.", "invalid_request_error", "method_not_allowed")
    else:
        error = ApiError(exc.status_code, str(exc.detail), "invalid_request_error", str(exc.status_code))
    response = error.response()
    response.headers.update(exc.headers or {})
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path)
    return ApiError(500, "The gateway failed unexpectedly.", "server_error", "internal_error").response()


def create_app(source: RouteSource, *, api_keys: Iterable[str] = (), **options: Any) -> Starlette:
    """A gateway application over `source` (`app.state.gateway` is the Gateway)."""
    return Gateway(source, api_keys=api_keys, **options).asgi()


# ----------------------------------------------------------------------------------------------------
# Serving.


def bind(host: str, port: int) -> socket.socket:
    """A listening socket bound by us, so that a taken port is a plain error and port 0 tells its number."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP, and
    # with Nagle on, a reused keep-alive connection waits for a delayed ACK: about 40 ms per answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def uvicorn_config(app: ASGIApp, *, log_level: str = "warning", access_log: bool = False, quiet: bool = False) -> Any:
    """The uvicorn settings of the gateway and of the servers tests start."""
    import uvicorn

    return uvicorn.Config(
        app,
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        proxy_headers=False,  # X-Forwarded-* mean nothing here, and the middleware costs time per request
        timeout_graceful_shutdown=5,
    )


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop when it is installed (it takes about a quarter off the gateway's added
    latency), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def serve(gateway: Gateway, sock: socket.socket, *, log_level: str = "info", access_log: bool = False) -> None:
    """Run the gateway until SIGINT/SIGTERM. The source starts first, so an unreachable Consul is an error
    before anything listens."""
    import uvicorn

    await gateway.start()
    server = uvicorn.Server(uvicorn_config(gateway.asgi(), log_level=log_level, access_log=access_log))
    try:
        await server.serve(sockets=[sock])
    finally:
        await gateway.aclose()


class BackgroundServer:
    """An ASGI application served by uvicorn on a thread of its own, on 127.0.0.1 and a free port by default:
    for embedding the gateway in another program, for tests and benchmarks."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._sock = bind(host, port)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn_config(app, quiet=True))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            run(self.server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start: {self._error}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
