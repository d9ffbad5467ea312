"""The gateway's Prometheus metrics (`GET /metrics`): what its requests met, per model and instance.

Every metric lives in a registry the Gateway owns (not prometheus_client's global one), so that several
gateways in one process (tests, an embedding program) keep their own counts. The hot path touches only
label children bound once per (model, instance) (`Upstream`) and per status code: no label tuple is built
per request. What is cheaper to read when Prometheus asks (the instances of each model, those ejected) is
read then, by a collector, and costs requests nothing.

Label `upstream` is the instance's `address:port`: not `instance`, which Prometheus sets on every series it
scrapes (the gateway's own address), and a clash would rename ours to `exported_instance`. A request that
reaches no instance has `upstream=""`, and `model=""` unless the model is one the routing table knows: model
names come from request bodies, and unknown ones must not make new series.

Several worker processes (`--workers`): when PROMETHEUS_MULTIPROC_DIR names a directory (set by the process
that forks the workers: `server.serve_workers`), prometheus_client's multiprocess mode keeps each worker's
values in files there, and `/metrics`, from whichever worker answers it, reads them all: counters and
histograms summed over every worker that ever ran (a restarted worker's counts stay), the gauges summed over
the live ones (`livesum`). The instances per model are the answering worker's view of Consul (each follows it),
the ejected ones its own: ejections are per process. Series cannot be removed from those files, so the series of
instances no longer in the table are left out of `/metrics` instead. No process_* series: they would be one
worker's, named as the gateway's.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ...contract.metadata import (
    GATEWAY_HELD,
    GATEWAY_IN_FLIGHT,
    GATEWAY_INSTANCES,
    GATEWAY_METRIC_PREFIX,
    GATEWAY_REQUESTS,
)
from ...urls import host_port

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..discovery import Endpoint, RoutingTable

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's name for it
PREFIX = GATEWAY_METRIC_PREFIX
# LLM answers take from milliseconds (an embedding) to many minutes (a long generation).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# The first token waits for the prompt's prefill, and for a slot when the engine is busy.
FIRST_BYTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
FAILURE_KINDS = ("timeout", "connection", "5xx")
# A wake-up waits for Nomad to place the model, the engine to load it and Consul to pass its check: minutes.
WAKE_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
USAGE_TAIL = 16 * 1024  # bytes at the end of an answer searched for its `usage`
_USAGE = b'"usage"'
_DECODER = json.JSONDecoder()


class Upstream:
    """The label children of one instance of one model, bound once: what a request to it updates."""

    __slots__ = (
        "_codes",
        "_requests",
        "completion_tokens",
        "duration",
        "ejections",
        "failures",
        "first_byte",
        "in_flight",
        "labels",
        "prompt_tokens",
    )

    def __init__(self, metrics: GatewayMetrics, model: str, upstream: str) -> None:
        self.labels = (model, upstream)
        self._requests = metrics.requests
        self._codes: dict[int, Any] = {}
        self.in_flight = metrics.in_flight.labels(model, upstream)
        self.duration = metrics.duration.labels(model, upstream)
        self.first_byte = metrics.first_byte.labels(model, upstream)
        self.prompt_tokens = metrics.prompt_tokens.labels(model, upstream)
        self.completion_tokens = metrics.completion_tokens.labels(model, upstream)
        self.ejections = metrics.ejections.labels(model, upstream)
        self.failures = {kind: metrics.failures.labels(model, upstream, kind) for kind in FAILURE_KINDS}

    def answered(self, code: int) -> None:
        """Count a request answered with status `code`."""
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._requests.labels(*self.labels, str(code))
        child.inc()

    def usage(self, tail: Sequence[bytes]) -> None:
        """Count the tokens of an answer's OpenAI `usage`, read from its last chunks (oldest first)."""
        found = usage_in(tail)
        if found is not None:
            prompt, completion = found
            if prompt:
                self.prompt_tokens.inc(prompt)
            if completion:
                self.completion_tokens.inc(completion)


class GatewayMetrics:
    """The gateway's metrics in a registry of their own; `upstream(endpoint)` gives an instance's children."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `_created` series beside each counter and histogram: they double the series for a start time
        # Prometheus does not need (prometheus_client's setting is process-wide; the gateway's process is ours).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self._shared = os.environ.get(MULTIPROCESS_ENV) or None
        if self._shared:
            # prometheus_client chooses where values live when it is first imported, maybe before the variable
            # was set: choose again, before any metric is made.
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
            # The metrics made below are kept in `registry` but not read from it: /metrics reads every
            # worker's files through `_exposed`.
            self._exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed, self._shared)  # type: ignore[no-untyped-call]
        else:
            self._exposed = r
        labels = ("model", "upstream")
        self.requests = Counter(
            GATEWAY_REQUESTS, "Requests to the routed OpenAI paths, by the status code the client got.",
            (*labels, "code"), registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "From the request's arrival to the end of its answer, for requests sent to an instance.",
            labels, registry=r, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.first_byte = Histogram(
            PREFIX + "time_to_first_byte_seconds",
            "From the request's arrival to the first bytes of a streamed (text/event-stream) answer's body.",
            labels, registry=r, buckets=FIRST_BYTE_BUCKETS,
        )  # fmt: skip
        self.in_flight = Gauge(
            GATEWAY_IN_FLIGHT, "Requests sent to an instance and not yet answered in full.",
            labels, registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.held = Gauge(
            GATEWAY_HELD,
            "Requests held for a model with no instance to take them, waiting for one to start.",
            ("model",), registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.scale_calls = Counter(
            PREFIX + "scale_calls",
            "Calls to Nomad's scale API for models that scale to zero, by direction (up: a request arrived at "
            "zero instances; down: idle) and outcome (scaled; conflict: the job changed meanwhile; refused: "
            "Nomad said no, e.g. a deployment in progress or a token without scale-job; failed: Nomad unreachable "
            "or erring).",
            ("model", "direction", "outcome"), registry=r,
        )  # fmt: skip
        self.wakeups = Counter(
            PREFIX + "wakeups",
            "Wake-ups of models at zero instances by outcome: scaled (this gateway scaled the group to 1), joined "
            "(its count was already above 0: another gateway or process is waking it), failed.",
            ("model", "outcome"), registry=r,
        )  # fmt: skip
        self.wake_duration = Histogram(
            PREFIX + "wake_duration_seconds",
            "From the first request held for a model at zero instances to its first instance passing its health "
            "check.",
            ("model",), registry=r, buckets=WAKE_BUCKETS,
        )  # fmt: skip
        self.failures = Counter(
            PREFIX + "upstream_failures",
            "Failures of instances: timeout (no answer in time, or a stream that went quiet), connection "
            "(refused, or broken before or during the answer), 5xx (an answer with a server error status).",
            (*labels, "kind"), registry=r,
        )  # fmt: skip
        self.ejections = Counter(
            PREFIX + "ejections", "Times an instance was taken out of rotation for failing (outlier detection).",
            labels, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            PREFIX + "prompt_tokens", "Prompt tokens, from the OpenAI usage of answers that report it.",
            labels, registry=r,
        )  # fmt: skip
        self.completion_tokens = Counter(
            PREFIX + "completion_tokens", "Completion tokens, from the OpenAI usage of answers that report it.",
            labels, registry=r,
        )  # fmt: skip
        if not self._shared:
            ProcessCollector(registry=r)
        PlatformCollector(registry=self._exposed)
        self._upstreams: dict[tuple[str, str, int], Upstream] = {}
        self._table: Callable[[], RoutingTable] | None = None
        self._refused: dict[tuple[str, int], Any] = {}

    def upstream(self, endpoint: Endpoint) -> Upstream:
        """The children of `endpoint`'s series (made on its first request)."""
        key = (endpoint.model, endpoint.address, endpoint.port)
        found = self._upstreams.get(key)
        if found is None:
            found = self._upstreams[key] = Upstream(self, endpoint.model, _where(endpoint))
        return found

    def refused(self, model: str, code: int) -> None:
        """Count a request the gateway answered itself, sent to no instance (`model` "" when not a known one)."""
        child = self._refused.get((model, code))
        if child is None:
            child = self._refused[(model, code)] = self.requests.labels(model, "", str(code))
        child.inc()

    def holding(self, model: str) -> Any:
        """The gauge of the requests held for `model`."""
        return self.held.labels(model)

    def scale_call(self, model: str, direction: str, outcome: str) -> None:
        """Count a call to Nomad's scale API."""
        self.scale_calls.labels(model, direction, outcome).inc()

    def wakeup(self, model: str, outcome: str) -> None:
        """Count a wake-up by its outcome."""
        self.wakeups.labels(model, outcome).inc()

    def woke(self, model: str, seconds: float) -> None:
        """A wake-up ended with an instance passing its check, `seconds` after its first held request."""
        self.wake_duration.labels(model).observe(seconds)

    def follow(self, table: Callable[[], RoutingTable], ejected: Callable[[], list[Endpoint]]) -> None:
        """Report the instances of each model, and those ejected, as Prometheus reads them."""
        self._exposed.register(_InstancesCollector(table, ejected))
        if self._shared:
            self._table = table

    def forget(self, table: RoutingTable, busy: Callable[[str, int], bool]) -> bool:
        """Drop the series of the instances no longer in `table` whose requests have all ended (`busy(address,
        port)` says whether one runs): each reschedule brings a new address and port, whose series must not
        pile up for the life of the gateway. False while some are left for later (still busy)."""
        current = {(e.model, e.address, e.port) for e in table.endpoints}
        if self._shared:  # nothing can be removed from the files: `exposition` leaves them out
            for key in [key for key in self._upstreams if key not in current and not busy(key[1], key[2])]:
                del self._upstreams[key]
            return True
        done = True
        for key, upstream in list(self._upstreams.items()):
            if key in current:
                continue
            if busy(key[1], key[2]):
                done = False
                continue
            del self._upstreams[key]
            for metric in (self.duration, self.first_byte, self.in_flight, self.prompt_tokens,
                           self.completion_tokens, self.ejections):  # fmt: skip
                _remove(metric, upstream.labels)
            for kind in FAILURE_KINDS:
                _remove(self.failures, (*upstream.labels, kind))
            for code in upstream._codes:
                _remove(self.requests, (*upstream.labels, str(code)))
        return done

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        if self._shared and self._table is not None:
            return generate_latest(_Routed(self._exposed, self._table))
        return generate_latest(self._exposed)


class _Nothing:
    """A metric child that counts nothing."""

    def inc(self, amount: float = 1) -> None:
        return None

    def dec(self, amount: float = 1) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None


_NOTHING: Any = _Nothing()


class _NoUpstream(Upstream):
    """An instance's children when the gateway keeps no metrics."""

    def __init__(self) -> None:  # no registry, no series
        self.labels = ("", "")
        self._codes = {}
        self.in_flight = self.duration = self.first_byte = _NOTHING
        self.prompt_tokens = self.completion_tokens = self.ejections = _NOTHING
        self.failures = dict.fromkeys(FAILURE_KINDS, _NOTHING)

    def answered(self, code: int) -> None:
        return None

    def usage(self, tail: Sequence[bytes]) -> None:
        return None


class NoMetrics(GatewayMetrics):
    """A gateway without metrics (`--no-metrics`, and the benchmark's comparison): nothing is counted."""

    def __init__(self) -> None:  # no registry: nothing to collect
        self._none = _NoUpstream()

    def upstream(self, endpoint: Endpoint) -> Upstream:
        return self._none

    def refused(self, model: str, code: int) -> None:
        return None

    def holding(self, model: str) -> Any:
        return _NOTHING

    def scale_call(self, model: str, direction: str, outcome: str) -> None:
        return None

    def wakeup(self, model: str, outcome: str) -> None:
        return None

    def woke(self, model: str, seconds: float) -> None:
        return None

    def follow(self, table: Callable[[], RoutingTable], ejected: Callable[[], list[Endpoint]]) -> None:
        return None

    def forget(self, table: RoutingTable, busy: Callable[[str, int], bool]) -> bool:
        return True

    def exposition(self) -> bytes:
        raise RuntimeError("this gateway keeps no metrics")


class _InstancesCollector(Collector):
    """Instances per model, read from the routing table when Prometheus asks (nothing per request)."""

    def __init__(self, table: Callable[[], RoutingTable], ejected: Callable[[], list[Endpoint]]) -> None:
        self._table = table
        self._ejected = ejected

    def collect(self) -> Iterator[Metric]:
        table = self._table()
        passing = GaugeMetricFamily(
            GATEWAY_INSTANCES, "Instances of the model passing their health checks (in the routing table).",
            labels=["model"],
        )  # fmt: skip
        out = GaugeMetricFamily(
            PREFIX + "instances_ejected", "Instances of the model out of rotation for failing.", labels=["model"]
        )
        ejected: dict[str, int] = {}
        for endpoint in self._ejected():
            ejected[endpoint.model] = ejected.get(endpoint.model, 0) + 1
        for model in table.models:
            passing.add_metric([model], len(table.routes.get(model, ())))
            out.add_metric([model], ejected.get(model, 0))
        yield passing
        yield out

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names not known before the first table: the registry asks collect() for them


class _Routed(Collector):
    """A registry's metrics without the series of instances no longer in the routing table (`upstream`
    not empty and not one of the table's): in multiprocess mode, where they cannot be removed."""

    def __init__(self, registry: CollectorRegistry, table: Callable[[], RoutingTable]) -> None:
        self._registry = registry
        self._table = table

    def collect(self) -> Iterator[Metric]:
        routed = {(e.model, _where(e)) for e in self._table().endpoints}
        for metric in self._registry.collect():
            metric.samples = [
                s for s in metric.samples
                if not s.labels.get("upstream") or (s.labels.get("model", ""), s.labels["upstream"]) in routed
            ]  # fmt: skip
            yield metric


def worker_gone(pid: int, directory: str) -> None:
    """Drop the live gauges of a worker process that ended (its counters stay: they are counts)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def usage_in(tail: Sequence[bytes]) -> tuple[int, int] | None:
    """(prompt, completion) tokens of the OpenAI `usage` object in the last chunks of an answer (a JSON body,
    or a stream whose last event carries it), or None. The last `"usage"` key is the answer's own: a quote
    inside a JSON string is escaped, so the text of a message cannot fake one."""
    data = tail[-1]
    at = data.rfind(_USAGE)
    if at < 0 or data.find(b"}", at) < 0:  # not in the last chunk, or cut at its end: join the last ones
        data = b"".join(tail)[-USAGE_TAIL:]
        at = data.rfind(_USAGE)
        if at < 0:
            return None
    colon = data.find(b":", at + len(_USAGE))
    if colon < 0:
        return None
    try:
        usage, _ = _DECODER.raw_decode(data[colon + 1 :].decode("utf-8", "replace").lstrip())
    except ValueError:
        return None
    if not isinstance(usage, dict):
        return None  # null in the events before the last
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) and prompt > 0 else 0,
        completion if isinstance(completion, int) and completion > 0 else 0,
    )


def _where(endpoint: Endpoint) -> str:
    return host_port(endpoint.address, endpoint.port)


def _remove(metric: Any, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never made: no request of that kind
        metric.remove(*labels)
