"""The gateway itself: an ASGI application that routes each request by the `model` of its body to a healthy
instance of that model, with failover to another replica when an instance refuses the connection, and
instances that keep failing ejected for a while (see outliers.py).

The gateway only ever connects to discovered instances: the upstream URL is an instance's address and port
plus the fixed path of the route, never anything taken from the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..scrape import gateway_target
from .balancer import Balancer
from .errors import EXCEPTION_HANDLERS, ApiError, no_healthy_instance, not_found, send_error
from .keys import ApiKeys
from .metrics import CONTENT_TYPE, GatewayMetrics, NoMetrics
from .outliers import EJECT_AFTER, EJECT_FOR, TRY_LAST_SECONDS, Clock, Failure, OutlierDetector
from .pool import ConnectFailed, Connection, InstancePool, UpstreamError, UpstreamTimeout, instance_key
from .relay import (
    Body,
    BodyBudget,
    StreamCut,
    header,
    read_model,
    relay,
    request_head,
    seconds_text,
    too_large,
)

if TYPE_CHECKING:
    import random

    from starlette.types import Receive, Scope, Send

    from ..discovery import Endpoint, RoutingTable
    from .source import RouteSource
    from .waker import Waker

log = logging.getLogger("nomadgs.gateway")

# The OpenAI paths routed by the body's `model` field (GPUStack's set, rerank included).
ROUTED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/audio/speech")
MAX_BODY = 64 * 1024 * 1024  # far above any JSON request
# What the bodies read to find their model may hold, all requests together: past it a request is refused
# (503, Retry-After) rather than the gateway growing until the kernel kills it with every stream it carries.
# Most bodies hold a few kB: their model comes early, and the rest goes on to the instance as it arrives.
MAX_BUFFERED = 128 * 1024 * 1024
WRITE_TIMEOUT = 60.0  # seconds an instance may take to read what was written to it of a request
UPSTREAM_TIMEOUT = 600.0  # seconds to the first byte of an answer: a long generation may send nothing before its end
STREAM_IDLE_TIMEOUT = 120.0  # seconds between two chunks of an answer
WATCH_SECONDS = 0.5  # how often the table and the idle connections are looked at between requests
METRICS_PATH = "/metrics"
HEALTH_PATH = "/health"  # the check of the gateway's own Consul service (a gateway run as a Nomad job)
TARGETS_PATH = "/metrics/targets"  # as GPUStack's server serves its HTTP service discovery
CLIENT_LEFT = 499  # the status counted for a client that left before its answer began (nginx's code for it)


class Gateway:
    """The OpenAI-compatible front: routing, balancing, failover, API keys; `asgi()` is the application."""

    def __init__(
        self,
        source: RouteSource,
        *,
        api_keys: Iterable[str] = (),
        connect_timeout: float = 5.0,
        upstream_timeout: float | None = UPSTREAM_TIMEOUT,
        stream_idle_timeout: float | None = STREAM_IDLE_TIMEOUT,
        eject_after: int = EJECT_AFTER,
        eject_for: float = EJECT_FOR,
        try_last_seconds: float = TRY_LAST_SECONDS,
        clock: Clock | None = None,
        max_body: int = MAX_BODY,
        max_buffered: int = MAX_BUFFERED,
        metrics: bool = True,
        canary_weight: float | None = None,
        rng: random.Random | None = None,
        waker: Waker | None = None,
    ) -> None:
        """Timeouts are in seconds; None or 0 is no limit. `upstream_timeout`: from sending a request to the
        head of the answer; `stream_idle_timeout`: between two chunks of the answer. `eject_after` timeouts or
        failed connections in a row eject an instance for `eject_for` seconds, longer when it is ejected again
        soon after; 0 ejects none (see OutlierDetector). `max_body`: the largest request body (413 above);
        `max_buffered`: what the bodies read to find their model may hold together (503 past it). `metrics`:
        count requests for Prometheus (`GET /metrics`, see metrics.py). `canary_weight`: the share of requests
        that go first to the instances of an unpromoted canary (None: their share of instances; see Balancer).
        `clock` (time.monotonic) and `rng` (the canary draw) are for tests."""
        self.source = source
        self.keys = ApiKeys(api_keys)
        outliers = OutlierDetector(
            eject_after=eject_after, eject_for=eject_for, try_last_seconds=try_last_seconds, clock=clock
        )
        self.balancer = Balancer(outliers, canary_weight=canary_weight, rng=rng)
        self.outliers = outliers
        self.max_body = max_body
        self.budget = BodyBudget(max_buffered)
        self._started = False
        self.connect_timeout = connect_timeout
        self.upstream_timeout = upstream_timeout or None
        self.stream_idle_timeout = stream_idle_timeout or None
        self._watch: asyncio.Task[None] | None = None
        self._seen: RoutingTable | None = None
        self._routed: frozenset[tuple[bytes, int]] = frozenset()  # pool keys of the passing instances
        self.pool = InstancePool()
        self.metrics = GatewayMetrics() if metrics else NoMetrics()
        self.metrics.follow(lambda: self.source.table, outliers.ejected)
        self._forget = False  # whether the series of instances gone from the table are still to be dropped
        self.waker = waker

    async def start(self) -> None:
        """Start the source, the waker and the shared connection pool; calling it again does nothing."""
        await self.source.start()
        if self.waker is not None:
            try:
                await self.waker.start(self.source, self.metrics)
            except BaseException:
                await self.source.stop()
                raise
        self._started = True
        if self._watch is None:
            self._watch = asyncio.create_task(self._follow_table())

    async def aclose(self) -> None:
        if self._watch is not None:
            watch, self._watch = self._watch, None
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if self.waker is not None:
            await self.waker.stop()
        await self.source.stop()
        if self._started:
            self._started = False
            await self.pool.aclose()
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
            Route(HEALTH_PATH, self._health, methods=["GET"]),
        ]
        if not isinstance(self.metrics, NoMetrics):
            routes.append(Route(METRICS_PATH, self._metrics, methods=["GET"]))
        routes.append(Route(TARGETS_PATH, self._scrape_targets, methods=["GET"]))
        app = Starlette(
            routes=routes,
            lifespan=lifespan,
            exception_handlers=EXCEPTION_HANDLERS,
        )
        app.state.gateway = self
        return app

    # --- models -------------------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """The models that have a healthy instance, and those scaled to zero (0 instances: a request wakes
        them), as OpenAI model objects."""
        table = self.source.table
        out = []
        for model, instances in sorted(table.routes.items()):
            first = instances[0]
            out.append(
                {"id": model, "object": "model", "created": 0, "owned_by": "nomadgs",
                 "backend": first.backend, "version": first.version, "instances": len(instances)}
            )  # fmt: skip
        if self.waker is not None:
            for model, sleeper in sorted(self.waker.sleepers.items()):
                if model not in table.routes:
                    out.append(
                        {"id": model, "object": "model", "created": 0, "owned_by": "nomadgs",
                         "backend": sleeper.backend or None, "version": None, "instances": 0}
                    )  # fmt: skip
            out.sort(key=lambda m: str(m["id"]))
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
        raise not_found(wanted)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": len(self.source.table.routes)})

    async def _health(self, request: Request) -> Response:
        """200 once the gateway has read its routing table (`start()` reads Consul before anything is served,
        and a failed read keeps the last table), else 503: for a health check, open like /healthz."""
        if not self._started:
            return JSONResponse({"status": "starting"}, 503)
        return JSONResponse({"status": "ok"})

    async def _metrics(self, request: Request) -> Response:
        # Open, like /healthz: Prometheus scrapes without the clients' keys; no secret is in the series.
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    async def _scrape_targets(self, request: Request) -> Response:
        """Prometheus' HTTP service discovery (`http_sd_configs`): this gateway (unless it keeps no metrics)
        and every instance that serves metrics, labelled as Prometheus' own Consul discovery would."""
        groups = [target.group() for target in self.source.scrape_targets()]
        if not isinstance(self.metrics, NoMetrics):
            # Prometheus reaches the gateway at the address it asked this at.
            server = request.scope.get("server") or ("127.0.0.1", 0)
            host = request.url.hostname or str(server[0])
            port = request.url.port or int(server[1])
            own = gateway_target(
                host, port, node=socket.gethostname(), datacenter=self.source.datacenter, metrics_path=METRICS_PATH
            )
            groups.insert(0, own.group())
        return JSONResponse(groups)

    # --- forwarding ---------------------------------------------------------------------------------------

    def _authorize(self, scope: Scope) -> None:
        if self.keys:
            self.keys.check(header(scope, b"authorization"))

    def candidates(self, model: str) -> Sequence[Endpoint]:
        """The instances to try for `model`, best first; ApiError 404 or 503 when there is none."""
        table = self.source.table
        if table is not self._seen:
            self._observe(table)
        instances = table.routes.get(model)
        if instances:
            return self.balancer.order(model, instances)  # never empty: the outliers leave one in rotation
        if table.knows(model) or (self.waker is not None and self.waker.has_job(model)):
            raise no_healthy_instance(model)
        raise not_found(model)

    def _observe(self, table: RoutingTable) -> None:
        """Act on a new routing table: ejected instances whose state changed are no longer ejected;
        connections to the instances no longer routed to are closed by the next `_follow_table` pass."""
        self._seen = table
        self._routed = frozenset(instance_key(e.origin) for instances in table.routes.values() for e in instances)
        self._forget = True
        for endpoint in self.outliers.observe(table):
            log.info("model %s: %s changed in the routing table; no longer ejected", endpoint.model, _where(endpoint))

    async def _follow_table(self) -> None:
        """Look at the table between requests too, so that no change of it goes unseen for long, say which
        ejected instances are back, and close the idle connections that expired or lead to instances no longer
        routed to."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                table = self.source.table
                if table is not self._seen:
                    self._observe(table)
                for ejection in self.outliers.returned():
                    endpoint = ejection.endpoint
                    log.info("model %s: %s back in rotation after %s out", endpoint.model, _where(endpoint),
                             seconds_text(ejection.seconds))  # fmt: skip
                await self.pool.prune(self._routed)
                if self._forget and self._seen is not None:
                    self._forget = not self.metrics.forget(self._seen, self.balancer.busy)
            except Exception:  # one failed pass must not end the upkeep
                log.exception("gateway upkeep failed")

    def _peers(self, endpoint: Endpoint) -> tuple[Endpoint, ...]:
        """The passing instances of `endpoint`'s model in the routing table now."""
        return self.source.table.routes.get(endpoint.model, ())

    def _report(self, failure: Failure) -> None:
        """Log what a failure did to its instance when that changes where requests go."""
        endpoint, ejection = failure.endpoint, failure.ejection
        count = failure.failures
        what = f"{count} timeouts or failed connections in a row" if count > 1 else "a timeout or failed connection"
        if ejection is not None:
            self.metrics.upstream(endpoint).ejections.inc()
            again = f" (x{ejection.times}: it failed again soon after its last ejection)" if ejection.times > 1 else ""
            log.warning("model %s: %s out of rotation for %s after %s%s", endpoint.model, _where(endpoint),
                        seconds_text(ejection.seconds), what, again)  # fmt: skip
        elif failure.outcome == "kept":
            log.warning("model %s: %s kept in rotation after %s: it is the model's last instance in "
                        "rotation", endpoint.model, _where(endpoint), what)  # fmt: skip

    async def forward(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request to a routed path (the ASGI hot path)."""
        start = perf_counter()
        model = ""
        body: Body | None = None
        waker = self.waker
        try:
            try:
                # The key first: a client without one gets no byte of its body read or held.
                self._authorize(scope)
                body = await read_model(receive, self.budget, self.max_body, _declared(scope))
                model = body.model
                if waker is not None and waker.knows(model):
                    await self._forward_waking(waker, path, body, scope, receive, send, start)
                    return
                candidates = self.candidates(model)
            except ApiError as exc:
                # Only models the table knows get series of their own: a body can name anything.
                self.metrics.refused(model if model and self.source.table.knows(model) else "", exc.status)
                await send_error(send, exc)
                return
            await self._guarded(candidates, path, body, scope, receive, send, start)
        finally:
            if body is not None and body.held:
                self.budget.give(body.held)
                body.held = 0

    async def _guarded(
        self,
        candidates: Sequence[Endpoint] | None,
        path: str,
        body: Body,
        scope: Scope,
        receive: Receive,
        send: Send,
        start: float,
    ) -> None:
        """`_exchange`, stopped when the client leaves: the model may work for a while, and a request cut at
        the instance frees its slot instead of generating for nobody. (`candidates` None: held for a waking
        model, looked up once it is awake.)"""
        watch = _ClientWatch(receive)
        try:
            if body.complete:
                watch.start()  # else once the rest of the body is read: `receive` is the body's until then
            if candidates is None:
                waker = self.waker
                assert waker is not None
                if waker.must_hold(body.model, self.source.table):
                    try:
                        await waker.hold(body.model)
                    except ApiError as exc:
                        self.metrics.refused(body.model, exc.status)
                        raise
                candidates = self.candidates(body.model)
            query = scope.get("query_string")
            target = path.encode() + b"?" + query if query else path.encode()
            await self._exchange(candidates, target, body, scope, receive, send, start, watch)
        except ApiError as exc:
            await send_error(send, exc)
        except (asyncio.CancelledError, _ClientLeft):
            if not watch.left:
                raise
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
        finally:
            watch.stop()

    async def _forward_waking(
        self, waker: Waker, path: str, body: Body, scope: Scope, receive: Receive, send: Send, start: float
    ) -> None:
        """`forward` for a model that may be at zero instances: the request counts as activity (no scale-down
        while it runs) and, when the model has no passing instance, is held until it wakes (a client that
        leaves while held stops waiting; the wake goes on for the others)."""
        waker.begin(body.model)
        try:
            await self._guarded(None, path, body, scope, receive, send, start)
        finally:
            waker.end(body.model)

    async def _exchange(
        self,
        candidates: Sequence[Endpoint],
        target: bytes,
        body: Body,
        scope: Scope,
        receive: Receive,
        send: Send,
        start: float,
        watch: _ClientWatch,
    ) -> None:
        """Send the request to the first candidate that takes it and relay its answer; `start`: when the
        request arrived (perf_counter), for the metrics."""
        model = body.model
        if not self._started:
            self.metrics.refused(model, 503)
            raise ApiError(503, "The gateway is starting.", "server_error", "starting")
        for endpoint in candidates:
            sent = self.balancer.acquire(endpoint)
            upstream = self.metrics.upstream(endpoint)
            upstream.in_flight.inc()
            code = CLIENT_LEFT  # until an answer or an error is sent: the client may leave first
            connection: Connection | None = None
            try:
                try:
                    connection = await self._request(endpoint, target, body, scope, receive, watch)
                except ConnectFailed as exc:
                    # Nothing reached the instance, so another one can take the request safely.
                    code = 0  # not this instance's request: the next one takes it
                    upstream.failures["connection"].inc()
                    log.warning("model %s: %s %s; trying the next instance", model, _where(endpoint), exc)
                    self._report(self.outliers.failed(endpoint, self._peers(endpoint)))
                    continue
                except UpstreamTimeout as exc:
                    # Not retried elsewhere: the instance may be working on it (or hang), a second run costs.
                    if str(exc):  # it does not even read the request
                        waited = f"in time ({exc} for {seconds_text(WRITE_TIMEOUT)})"
                    else:
                        waited = f"within {seconds_text(self.upstream_timeout)}"
                    code = 504
                    upstream.failures["timeout"].inc()
                    failure = self.outliers.timed_out(endpoint, sent, self._peers(endpoint))
                    busy = " (busy: it is answering other requests; not counted as a failure)"
                    log.warning("model %s: %s did not answer %s%s", model, _where(endpoint), waited,
                                busy if failure.outcome == "busy" else "")  # fmt: skip
                    self._report(failure)
                    raise ApiError(
                        504,
                        f"The instance of '{model}' did not answer {waited}.",
                        "server_error",
                        "upstream_timeout",
                    ) from None
                except UpstreamError as exc:
                    # The request may have reached the model: sending it again could run it twice.
                    code = 502
                    upstream.failures["connection"].inc()
                    log.warning("model %s: %s failed before answering: %s", model, _where(endpoint), exc)
                    raise ApiError(
                        502,
                        f"The instance of '{model}' failed before answering: {exc}.",
                        "server_error",
                        "upstream_error",
                    ) from None
                except ApiError as exc:  # the body the client kept sending was too large
                    code = exc.status
                    raise
                code = connection.status
                if code >= 500:
                    upstream.failures["5xx"].inc()
                self.outliers.answered(endpoint)
                try:
                    relayed = await relay(connection, send, self.stream_idle_timeout)
                except StreamCut as cut:
                    upstream.failures["timeout" if cut.timed_out else "connection"].inc()
                    log.warning("model %s: %s stopped in the middle of its answer, which is cut: %s",
                                model, _where(endpoint), cut)  # fmt: skip
                    if cut.timed_out:
                        self._report(self.outliers.failed(endpoint, self._peers(endpoint)))
                else:
                    watch.stop()  # the answer is whole: the client may go
                    self.outliers.succeeded(endpoint)
                    if relayed.first_chunk is not None and _is_event_stream(connection):
                        upstream.first_byte.observe(relayed.first_chunk - start)
                    if code < 300:
                        upstream.usage(relayed.tail)
                return
            finally:
                if connection is not None:
                    self.pool.checkin(connection)  # kept for the next request only if its answer was read whole
                if code:
                    upstream.answered(code)
                    upstream.duration.observe(perf_counter() - start)
                upstream.in_flight.dec()
                self.balancer.release(endpoint)  # last: a request no longer in the balancer is counted in full
        # Nothing reached any instance: the same outage as when Consul already calls them all critical.
        self.metrics.refused(model, 503)
        raise no_healthy_instance(model, "none of its instances could be reached")

    async def _request(
        self, endpoint: Endpoint, target: bytes, body: Body, scope: Scope, receive: Receive, watch: _ClientWatch
    ) -> Connection:
        """Send the request to the instance and wait for the head of its answer: the connection, answered."""
        key = instance_key(endpoint.origin)
        host = b"%s:%d" % (endpoint.address.encode("idna"), endpoint.port)
        fresh = False
        while True:
            connection = await self.pool.checkout(key, self.connect_timeout, fresh=fresh)
            reused = connection.exchanges > 0
            try:
                await self._send_body(connection, host, target, body, scope, receive, watch)
                await connection.head(self.upstream_timeout)
                return connection
            except UpstreamError as exc:
                self.pool.checkin(connection)  # closed: not kept
                if reused and exc.unanswered and body.complete:
                    # The keep-alive race: the instance closed this idle connection as the request went out
                    # (its idle timeout, or a restart), so it never read it. Sent once more on a new
                    # connection, as HTTP clients do for a reused connection closed before any answer (Go's
                    # net/http errServerClosedIdle); a new connection that fails so is not retried, nor a
                    # request whose body went on from the client as it came (it cannot be sent twice).
                    fresh = True
                    continue
                raise
            except BaseException:
                self.pool.checkin(connection)
                raise

    async def _send_body(
        self,
        connection: Connection,
        host: bytes,
        target: bytes,
        body: Body,
        scope: Scope,
        receive: Receive,
        watch: _ClientWatch,
    ) -> None:
        """Write the request: its head, the part of the body read to find the model, then the rest of the
        body as the client sends it (with the client's Content-Length, else in chunks), never more than the
        socket's buffers ahead of the instance."""
        declared = None if body.complete else _declared(scope)
        chunked = not body.complete and declared is None
        if chunked:
            framing = b"transfer-encoding: chunked\r\n"
        else:
            framing = b"content-length: %d\r\n" % (len(body.head) if declared is None else declared)
        head = request_head(scope, target, host, framing, drop_authorization=bool(self.keys))
        first = _chunk(body.head) if chunked and body.head else body.head
        if len(first) < 65536:
            connection.send(head + first)
        else:
            connection.send(head)
            connection.write(first)
        if body.complete:
            return
        await connection.drain(WRITE_TIMEOUT)
        self.budget.give(body.held)  # it went on: the socket's own buffer is bounded by the drain
        body.held = 0
        size = len(body.head)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                watch.left = True
                raise _ClientLeft
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise too_large(self.max_body)
            more = message.get("more_body", False)
            if chunk:
                connection.write(_chunk(chunk) if chunked else chunk)
            if not more:
                break
            await connection.drain(WRITE_TIMEOUT)
        if chunked:
            connection.write(b"0\r\n\r\n")
        watch.start()


class _ClientLeft(Exception):
    """The client went away while its body was being passed on."""


class _ClientWatch:
    """Cancels the request's task when the client disconnects: ASGI says so only through `receive()`, which
    belongs to the body until it is read whole."""

    __slots__ = ("_task", "_watch", "left", "receive")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self._task = asyncio.current_task()
        self._watch: asyncio.Task[None] | None = None
        self.left = False

    def start(self) -> None:
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._wait())

    async def _wait(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.left = True
                if self._task is not None:
                    self._task.cancel()
                return

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None


def _declared(scope: Scope) -> int | None:
    """The request's Content-Length (uvicorn has checked that it is a number), or None."""
    value = header(scope, b"content-length")
    return int(value) if value is not None else None


def _chunk(data: bytes | bytearray) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _is_event_stream(connection: Connection) -> bool:
    for key, value in connection.headers:
        if key.lower() == b"content-type":
            return value.startswith(b"text/event-stream")
    return False


def _where(endpoint: Endpoint) -> str:
    return f"{endpoint.address}:{endpoint.port}"


class _Forward:
    """The ASGI endpoint of one routed path; an object, not a function, so Starlette passes the raw call."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway = gateway
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gateway.forward(self.path, scope, receive, send)


def create_app(source: RouteSource, *, api_keys: Iterable[str] = (), **options: Any) -> Starlette:
    """A gateway application over `source` (`app.state.gateway` is the Gateway)."""
    return Gateway(source, api_keys=api_keys, **options).asgi()
