"""`nomadgs gateway`: one OpenAI-compatible address for every model, like GPUStack's `/v1`.

Requests are routed by the `model` field of their JSON body to a healthy instance of that model, taken
from a routing-table source (`ConsulWatcher` in production, `StaticSource` in tests and benchmarks).
Replicas share the load by least outstanding requests, ties broken round robin; an instance that refuses
the connection is tried last for a few seconds and the request goes to the next one. Bodies pass through as
bytes and answers are relayed chunk by chunk, so server-sent events reach the client as the model writes
them. An answer that does not start in time is a 504, a stream that pauses too long is cut, and an instance
that times out or refuses connections several times in a row is ejected for a while, longer each time it
is ejected again soon after (passive outlier detection, as Envoy's): a hung GPU server can keep passing its
health check. A busy instance is not ejected, nor the last one of a model.

The modules, one job each: `app` (the Gateway and its ASGI application), `source` (where the routing table
comes from), `balancer` (which instance takes a request), `outliers` (which instances are failing, and
for how long they are out), `pool` (connections to the instances), `relay`
(a request and its answer passed through), `metrics` (what requests met, for Prometheus: GET /metrics, and
the scrape targets of GET /metrics/targets), `keys` (API keys), `errors` (OpenAI-shaped errors), `waker` (models
scaled to zero when idle and back on a request, through Nomad), `server` (listening and running,
in one process or several: `serve_workers`).
"""

from .app import MAX_BODY, ROUTED_PATHS, STREAM_IDLE_TIMEOUT, UPSTREAM_TIMEOUT, Gateway, create_app
from .balancer import Balancer
from .errors import ApiError, GatewayError
from .keys import API_KEYS_ENV, ApiKeys, load_api_keys
from .outliers import EJECT_AFTER, EJECT_FOR, MAX_MULTIPLIER, TRY_LAST_SECONDS, Ejection, Failure, OutlierDetector
from .pool import InstancePool
from .relay import model_of
from .server import (
    DEFAULT_LISTEN,
    DRAIN_TIMEOUT,
    BackgroundServer,
    bind,
    is_loopback,
    parse_listen,
    run,
    serve,
    serve_workers,
    uvicorn_config,
    worker_count,
)
from .source import RouteSource, StaticSource

__all__ = [
    "API_KEYS_ENV",
    "DEFAULT_LISTEN",
    "DRAIN_TIMEOUT",
    "EJECT_AFTER",
    "EJECT_FOR",
    "MAX_BODY",
    "MAX_MULTIPLIER",
    "ROUTED_PATHS",
    "STREAM_IDLE_TIMEOUT",
    "TRY_LAST_SECONDS",
    "UPSTREAM_TIMEOUT",
    "ApiError",
    "ApiKeys",
    "BackgroundServer",
    "Balancer",
    "Ejection",
    "Failure",
    "Gateway",
    "GatewayError",
    "InstancePool",
    "OutlierDetector",
    "RouteSource",
    "StaticSource",
    "bind",
    "create_app",
    "is_loopback",
    "load_api_keys",
    "model_of",
    "parse_listen",
    "run",
    "serve",
    "serve_workers",
    "uvicorn_config",
    "worker_count",
]
