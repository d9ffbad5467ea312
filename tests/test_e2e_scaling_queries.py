"""Every query the compiler writes into a scaling policy, evaluated by a real Prometheus on series the test made.

The gateway's series come from the gateway's own metrics code (`GatewayMetrics`, its exposition served as the
gateway serves `/metrics`); the engines' from expositions with each engine's exact metric names, labelled
`model` as examples/prometheus relabels them from the Consul service. Each query is asked as the Autoscaler's
Prometheus APM asks it (nomad-autoscaler `plugins/builtin/apm/prometheus/plugin/plugin.go`): a range query over
the check's `query_window`, one point a second, of which the target-value strategy reads the last
(`plugins/builtin/strategy/target-value/plugin/plugin.go`); a result of more than one series is an error there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nomad_gpustack.durations import SECOND, parse_duration
from nomad_gpustack.serving.discovery import Endpoint, build_table
from nomad_gpustack.serving.gateway.metrics import CONTENT_TYPE, GatewayMetrics

from .support.helpers import compile_yaml, wait_until
from .support.prometheus import PrometheusServer

pytestmark = pytest.mark.e2e


@contextmanager
def exposition(body: Callable[[], bytes]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering every GET with `body()` in Prometheus' text format; its address."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def scaling_check(deployment: dict[str, Any]) -> dict[str, Any]:
    """The metric check of the compiled job's scaling policy (in_flight or queue)."""
    policy = compile_yaml(deployment).job["TaskGroups"][0]["Scaling"]["Policy"]
    (metric,) = [c for c in policy["check"] if next(iter(c)) in ("in_flight", "queue")]
    ((body,),) = metric.values()
    return dict(body)


def as_the_autoscaler_asks(prometheus: PrometheusServer, check: dict[str, Any]) -> float | None:
    """The value the target-value strategy gets: the last point of a range query over the check's window."""
    now = time.time()
    window = parse_duration(check["query_window"]) / SECOND
    data = prometheus.api("query_range", query=check["query"], start=str(now - window), end=str(now), step="1")
    assert data["resultType"] == "matrix", data
    streams = data["result"]
    assert len(streams) <= 1, f"the Autoscaler refuses a query of {len(streams)} series: {streams}"
    return float(streams[0]["values"][-1][1]) if streams else None


def endpoint(model: str, port: int) -> Endpoint:
    return Endpoint(model=model, service=model, service_id=f"{model}-{port}", address="127.0.0.1", port=port,
                    health="passing")  # fmt: skip


BUSY, IDLE, ASLEEP = "busy", "idle", "asleep"  # models of the gateway, with scale to zero


def test_every_compiled_query_gives_the_load_prometheus_scraped(prometheus: PrometheusServer) -> None:
    gateway = GatewayMetrics()
    table = build_table([endpoint(BUSY, 9001), endpoint(BUSY, 9002), endpoint(IDLE, 9003)])
    gateway.follow(lambda: table, list)
    first, second = gateway.upstream(table.routes[BUSY][0]), gateway.upstream(table.routes[BUSY][1])
    first.in_flight.inc(3)
    second.in_flight.inc(5)
    gateway.held.labels(BUSY).set(2)
    gateway.upstream(table.routes[IDLE][0]).answered(200)  # once, before any scrape: no increase in the window
    gateway.held.labels(ASLEEP).set(3)  # at zero replicas (no instance), three requests held

    vllm_a = b'vllm:num_requests_waiting{model_name="vm",engine="0"} 3\nvllm:num_requests_waiting{model_name="vm",engine="1"} 1\n'  # noqa: E501
    vllm_b = b'vllm:num_requests_waiting{model_name="vm",engine="0"} 2\n'
    sglang = b'sglang:num_queue_reqs{model_name="sm"} 5\n'
    llama = b"# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 2\n"
    with (
        exposition(gateway.exposition) as gateway_address,
        exposition(lambda: vllm_a) as vllm_a_address,
        exposition(lambda: vllm_b) as vllm_b_address,
        exposition(lambda: sglang) as sglang_address,
        exposition(lambda: llama) as llama_address,
    ):
        engines = [
            {"targets": [vllm_a_address], "labels": {"model": "vm", "backend": "vLLM"}},
            {"targets": [vllm_b_address], "labels": {"model": "vm", "backend": "vLLM"}},
            {"targets": [sglang_address], "labels": {"model": "sm", "backend": "SGLang"}},
            {"targets": [llama_address], "labels": {"model": "lm", "backend": "llama.cpp"}},
        ]
        prometheus.start({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "nomadgs-gateway", "static_configs": [{"targets": [gateway_address]}]},
                {"job_name": "nomadgs-engines", "static_configs": engines},
            ],
        })  # fmt: skip
        wait_until(lambda: prometheus.value("count(up == 1)") == 5, 60, "Prometheus scraping every target")

        def settles(check: dict[str, Any], expected: float, what: str) -> None:
            wait_until(lambda: as_the_autoscaler_asks(prometheus, check) == expected, 60, what)

        # In flight per ready replica at the gateway: (3 + 5 in flight + 2 held) / 2 instances.
        busy = {"name": BUSY, "local_path": "m.gguf", "backend": "llama.cpp", "nomad": {"scaling": {"max": 4}}}
        settles(scaling_check(busy), 5.0, "(3 + 5 + 2) / 2 requests per replica")
        # A model the gateway has never seen: 0, not an empty answer (which would stop the whole evaluation).
        unknown = {**busy, "name": "never-asked"}
        assert as_the_autoscaler_asks(prometheus, scaling_check(unknown)) == 0.0

        # Scale to zero: a replica nobody asked anything in the window counts 0 (the Autoscaler may scale it to
        # 0 with the gateway), one at zero replicas counts only its held requests (3, over one replica).
        asleep = {**busy, "nomad": {"scaling": {"min": 0, "max": 4, "idle_after": "15m"}}}
        assert "[14m]" in scaling_check(asleep)["query"]
        settles(scaling_check({**asleep, "name": IDLE}), 0.0, "an idle replica at 0")
        settles(scaling_check({**asleep, "name": ASLEEP}), 3.0, "three held requests of a model at zero")
        # A request answered within the window: at least one request counted, so the replica stays.
        idle_check = scaling_check({**asleep, "name": IDLE})
        gateway.upstream(table.routes[IDLE][0]).answered(200)
        settles(idle_check, 1.0, "a replica asked within idle_after kept at one request")
        settles(scaling_check({**asleep, "name": "never-asked"}), 0.0, "a model never asked at 0")

        # The engines' queues, per replica: vLLM's two replicas (3 + 1 over its two engines, and 2) average 3.
        queue = {"metric": "queue", "min": 1, "max": 4}
        vm = {"name": "vm", "huggingface_repo_id": "o/r", "backend": "vLLM", "nomad": {"scaling": queue}}
        settles(scaling_check(vm), 3.0, "vLLM's waiting requests per replica")
        sm = {"name": "sm", "huggingface_repo_id": "o/r", "backend": "SGLang", "nomad": {"scaling": queue}}
        settles(scaling_check(sm), 5.0, "SGLang's queued requests")
        lm = {"name": "lm", "local_path": "m.gguf", "backend": "llama.cpp", "nomad": {"scaling": queue}}
        settles(scaling_check(lm), 2.0, "llama.cpp's deferred requests")
        assert as_the_autoscaler_asks(prometheus, scaling_check({**vm, "name": "nothing-here"})) == 0.0
