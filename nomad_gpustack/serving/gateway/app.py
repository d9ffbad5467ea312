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

import anyio
import httpx
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
from .pool import InstancePool, instance_key
from .relay import (
    StreamCut,
    cancel_on_disconnect,
    header,
    model_of,
    read_body,
    reason,
    relay,
    seconds_text,
    upstream_headers,
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
MAX_BODY = 64 * 1024 * 1024  # far above any JSON request; stops a client from filling the gateway's memory
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
        metrics: bool = True,
        canary_weight: float | None = None,
        rng: random.Random | None = None,
        waker: Waker | None = None,
    ) -> None:
        """Timeouts are in seconds; None or 0 is no limit. `upstream_timeout`: from sending a request to the
        head of the answer; `stream_idle_timeout`: between two chunks of the answer. `eject_after` timeouts or
        failed connections in a row eject an instance for `eject_for` seconds, longer when it is ejected again
        soon after; 0 ejects none (see OutlierDetector). `metrics`: count requests for Prometheus (`GET /metrics`,
        see metrics.py). `canary_weight`: the share of requests that go first to the instances of an unpromoted
        canary (None: their share of instances; see Balancer). `clock` (time.monotonic) and `rng` (the canary
        draw) are for tests."""
        self.source = source
        self.keys = ApiKeys(api_keys)
        outliers = OutlierDetector(
            eject_after=eject_after, eject_for=eject_for, try_last_seconds=try_last_seconds, clock=clock
        )
        self.balancer = Balancer(outliers, canary_weight=canary_weight, rng=rng)
        self.outliers = outliers
        self.max_body = max_body
        self.connect_timeout = connect_timeout
        self.upstream_timeout = upstream_timeout or None
        self.stream_idle_timeout = stream_idle_timeout or None
        self._client: httpx.AsyncClient | None = None
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
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.pool,
                # No read timeout here: the time to the first byte and the pauses of a stream have limits of
                # their own (upstream_timeout, stream_idle_timeout), which one read timeout cannot tell apart.
                timeout=httpx.Timeout(connect=self.connect_timeout, read=None, write=60.0, pool=None),
                trust_env=False,  # proxy variables must not send model traffic elsewhere
                follow_redirects=False,
            )
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
        if self._client is None:
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
        if table.knows(model):
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
        waker = self.waker
        try:
            self._authorize(scope)
            body = await read_body(receive, self.max_body)
            model = model_of(body)
            if waker is not None and waker.knows(model):
                await self._forward_waking(waker, model, path, body, scope, receive, send, start)
                return
            candidates = self.candidates(model)
        except ApiError as exc:
            # Only models the table knows get series of their own: a body can name anything.
            self.metrics.refused(model if model and self.source.table.knows(model) else "", exc.status)
            await send_error(send, exc)
            return
        headers = upstream_headers(scope, drop_authorization=bool(self.keys))
        query = scope.get("query_string")
        suffix = f"{path}?{query.decode('latin-1')}" if query else path
        # The client may leave while the model works: then stop waiting and close the upstream request, which
        # frees the model's slot instead of generating for nobody.
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_on_disconnect, receive, group.cancel_scope)
            try:
                await self._exchange(model, candidates, suffix, body, headers, send, start)
            except ApiError as exc:
                await send_error(send, exc)
            group.cancel_scope.cancel()

    async def _forward_waking(
        self,
        waker: Waker,
        model: str,
        path: str,
        body: bytes,
        scope: Scope,
        receive: Receive,
        send: Send,
        start: float,
    ) -> None:
        """`forward` for a model that may be at zero instances: the request counts as activity (no scale-down
        while it runs) and, when the model has no passing instance, is held until it wakes."""
        waker.begin(model)
        try:
            headers = upstream_headers(scope, drop_authorization=bool(self.keys))
            query = scope.get("query_string")
            suffix = f"{path}?{query.decode('latin-1')}" if query else path
            async with anyio.create_task_group() as group:
                # A client that leaves while held stops waiting (the wake goes on for the others).
                group.start_soon(cancel_on_disconnect, receive, group.cancel_scope)
                try:
                    if waker.must_hold(model, self.source.table):
                        try:
                            await waker.hold(model)
                        except ApiError as exc:
                            self.metrics.refused(model, exc.status)
                            raise
                    candidates = self.candidates(model)
                    await self._exchange(model, candidates, suffix, body, headers, send, start)
                except ApiError as exc:
                    await send_error(send, exc)
                group.cancel_scope.cancel()
        finally:
            waker.end(model)

    async def _exchange(
        self,
        model: str,
        candidates: Sequence[Endpoint],
        suffix: str,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        send: Send,
        start: float,
    ) -> None:
        """Send the request to the first candidate that takes it and relay its answer; `start`: when the
        request arrived (perf_counter), for the metrics."""
        client = self._client
        if client is None:
            self.metrics.refused(model, 503)
            raise ApiError(503, "The gateway is starting.", "server_error", "starting")
        for endpoint in candidates:
            request = client.build_request("POST", endpoint.origin + suffix, content=body, headers=headers)
            sent = self.balancer.acquire(endpoint)
            upstream = self.metrics.upstream(endpoint)
            upstream.in_flight.inc()
            code = CLIENT_LEFT  # until an answer or an error is sent: the client may leave first
            try:
                try:
                    with anyio.fail_after(self.upstream_timeout):
                        response = await client.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    # Nothing reached the instance, so another one can take the request safely.
                    code = 0  # not this instance's request: the next one takes it
                    upstream.failures["connection"].inc()
                    log.warning("model %s: %s %s; trying the next instance", model, _where(endpoint), reason(exc))
                    self._report(self.outliers.failed(endpoint, self._peers(endpoint)))
                    continue
                except (TimeoutError, httpx.TimeoutException) as exc:
                    # Not retried elsewhere: the instance may be working on it (or hang), a second run costs.
                    if isinstance(exc, TimeoutError):
                        waited = f"within {seconds_text(self.upstream_timeout)}"
                    else:  # httpx's write timeout: the instance does not even read the request
                        waited = f"in time ({reason(exc)})"
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
                except httpx.TransportError as exc:
                    # The request may have reached the model: sending it again could run it twice.
                    code = 502
                    upstream.failures["connection"].inc()
                    log.warning("model %s: %s failed before answering: %s", model, _where(endpoint), reason(exc))
                    raise ApiError(
                        502,
                        f"The instance of '{model}' failed before answering: {reason(exc)}.",
                        "server_error",
                        "upstream_error",
                    ) from None
                code = response.status_code
                if code >= 500:
                    upstream.failures["5xx"].inc()
                self.outliers.answered(endpoint)
                try:
                    relayed = await relay(response, send, self.stream_idle_timeout)
                except StreamCut as cut:
                    upstream.failures["timeout" if cut.timed_out else "connection"].inc()
                    log.warning("model %s: %s stopped in the middle of its answer, which is cut: %s",
                                model, _where(endpoint), cut)  # fmt: skip
                    if cut.timed_out:
                        self._report(self.outliers.failed(endpoint, self._peers(endpoint)))
                else:
                    self.outliers.succeeded(endpoint)
                    if relayed.first_chunk is not None and response.headers.get("content-type", "").startswith(
                        "text/event-stream"
                    ):
                        upstream.first_byte.observe(relayed.first_chunk - start)
                    if code < 300:
                        upstream.usage(relayed.tail)
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                return
            finally:
                if code:
                    upstream.answered(code)
                    upstream.duration.observe(perf_counter() - start)
                upstream.in_flight.dec()
                self.balancer.release(endpoint)  # last: a request no longer in the balancer is counted in full
        # Nothing reached any instance: the same outage as when Consul already calls them all critical.
        self.metrics.refused(model, 503)
        raise no_healthy_instance(model, "none of its instances could be reached")


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
