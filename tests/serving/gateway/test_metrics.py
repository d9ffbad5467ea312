"""The gateway's Prometheus metrics: what its requests met, per model and instance, in the text format
Prometheus reads (checked by promtool where it is installed)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nomad_gpustack.serving.gateway import Gateway, StaticSource
from nomad_gpustack.serving.gateway.metrics import usage_in

from ..fakes import FakeBackend, chat, dead_endpoint, gateway
from ..test_discovery import wait_until

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def value(gw: Gateway, name: str, **labels: str) -> float | None:
    """A sample, once every request the gateway took has ended (the client has its answer a moment before the
    gateway counts it)."""
    wait_until(lambda: not gw.balancer.inflight, 10, "the gateway's requests ended")
    return gw.metrics.registry.get_sample_value(name, labels)


def in_flight(gw: Gateway, **labels: str) -> float | None:
    return gw.metrics.registry.get_sample_value("nomadgs_gateway_requests_in_flight", labels)


def where(backend: FakeBackend) -> str:
    return f"127.0.0.1:{backend.port}"


def scraped(client: httpx.Client, gw: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of GET /metrics, parsed as Prometheus' text format."""
    wait_until(lambda: not gw.balancer.inflight, 10, "the gateway's requests ended")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_requests_are_counted_by_model_instance_and_status(backends: Callable[..., FakeBackend]) -> None:
    a, b = backends("A"), backends("B")
    with gateway(StaticSource([a.endpoint("m"), b.endpoint("other")])) as (client, gw):
        for _ in range(3):
            assert chat(client, "m").status_code == 200
        assert chat(client, "other").status_code == 200
        body = {"model": "m", "messages": [], "status": 500}
        assert client.post("/v1/chat/completions", json=body).status_code == 500
        samples = scraped(client, gw)
    requests = "nomadgs_gateway_requests_total"
    assert samples[(requests, frozenset({("model", "m"), ("upstream", where(a)), ("code", "200")}))] == 3
    assert samples[(requests, frozenset({("model", "m"), ("upstream", where(a)), ("code", "500")}))] == 1
    assert samples[(requests, frozenset({("model", "other"), ("upstream", where(b)), ("code", "200")}))] == 1
    count = "nomadgs_gateway_request_duration_seconds_count"
    assert samples[(count, frozenset({("model", "m"), ("upstream", where(a))}))] == 4
    five = frozenset({("model", "m"), ("upstream", where(a)), ("kind", "5xx")})
    assert samples[("nomadgs_gateway_upstream_failures_total", five)] == 1
    # Nothing runs now; each model's passing instances are read from the routing table.
    assert samples[("nomadgs_gateway_requests_in_flight", frozenset({("model", "m"), ("upstream", where(a))}))] == 0
    assert samples[("nomadgs_gateway_instances", frozenset({("model", "m")}))] == 1


def test_requests_no_instance_took_have_no_upstream_and_unknown_models_no_series_of_their_own(
    backends: Callable[..., FakeBackend],
) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("up"), a.endpoint("down", health="critical")])) as (client, gw):
        for name in ("no-such-model", "another-invented-one"):
            assert chat(client, name).status_code == 404
        assert chat(client, "down").status_code == 503
        assert client.post("/v1/chat/completions", content=b"not json").status_code == 400
        assert value(gw, "nomadgs_gateway_requests_total", model="", upstream="", code="404") == 2
        assert value(gw, "nomadgs_gateway_requests_total", model="down", upstream="", code="503") == 1
        assert value(gw, "nomadgs_gateway_requests_total", model="", upstream="", code="400") == 1
        text = client.get("/metrics").text
    assert "no-such-model" not in text and "invented" not in text


def test_streams_report_their_first_byte_and_answers_their_tokens(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A", usage=USAGE)
    with gateway(StaticSource([a.endpoint("m")])) as (client, gw):
        assert chat(client, "m").json()["usage"] == USAGE
        stream = client.post("/v1/chat/completions", json={"model": "m", "stream": True, "messages": []})
        assert stream.status_code == 200 and '"usage": {"prompt_tokens": 11' in stream.text
        labels = {"model": "m", "upstream": where(a)}
        assert value(gw, "nomadgs_gateway_time_to_first_byte_seconds_count", **labels) == 1, "the stream only"
        assert value(gw, "nomadgs_gateway_prompt_tokens_total", **labels) == 22
        assert value(gw, "nomadgs_gateway_completion_tokens_total", **labels) == 14
        first = value(gw, "nomadgs_gateway_time_to_first_byte_seconds_sum", **labels)
        whole = value(gw, "nomadgs_gateway_request_duration_seconds_sum", **labels)
        assert first is not None and whole is not None and 0 < first < whole


def test_answers_without_usage_count_no_tokens(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")])) as (client, gw):
        chat(client, "m")
        client.post("/v1/chat/completions", json={"model": "m", "stream": True, "messages": []})
        assert value(gw, "nomadgs_gateway_prompt_tokens_total", model="m", upstream=where(a)) == 0


def test_requests_in_flight_per_instance(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    labels = {"model": "m", "upstream": where(a)}
    with gateway(StaticSource([a.endpoint("m")])) as (client, gw), ThreadPoolExecutor(2) as pool:
        held = pool.submit(client.post, "/v1/chat/completions", json={"model": "m", "messages": [], "hold": True})
        assert a.holding.wait(10)
        assert in_flight(gw, **labels) == 1
        a.release.set()
        assert held.result(10).status_code == 200
        assert value(gw, "nomadgs_gateway_requests_in_flight", **labels) == 0


def test_a_client_that_leaves_before_the_answer_is_counted_as_499(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    labels = {"model": "m", "upstream": where(a)}
    with gateway(StaticSource([a.endpoint("m")])) as (client, gw):
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json={"model": "m", "messages": [], "hold": True}, timeout=0.5)
        wait_until(lambda: value(gw, "nomadgs_gateway_requests_total", code="499", **labels) == 1, 10, "counted")
        assert value(gw, "nomadgs_gateway_requests_in_flight", **labels) == 0
        a.release.set()


def test_failures_by_kind_and_ejections(backends: Callable[..., FakeBackend]) -> None:
    live = backends("live")
    dead = dead_endpoint("m", "a-dead")  # sorted first: tried first while in rotation
    options = {"eject_after": 2, "try_last_seconds": 0.0, "upstream_timeout": 0.5}
    with gateway(StaticSource([dead, live.endpoint("m", service_id="b-live")]), **options) as (client, gw):
        answers = [chat(client, "m").status_code for _ in range(6)]
        assert answers == [200] * 6, "refused connections are retried on the live instance"
        held = client.post("/v1/chat/completions", json={"model": "m", "messages": [], "hold": True})
        assert held.status_code == 504
        live.release.set()
    gone = {"model": "m", "upstream": f"127.0.0.1:{dead.port}"}
    assert value(gw, "nomadgs_gateway_upstream_failures_total", kind="connection", **gone) == 2
    assert value(gw, "nomadgs_gateway_ejections_total", **gone) == 1
    assert value(gw, "nomadgs_gateway_requests_total", code="200", **gone) is None, "it answered nothing"
    up = {"model": "m", "upstream": where(live)}
    assert value(gw, "nomadgs_gateway_upstream_failures_total", kind="timeout", **up) == 1
    assert value(gw, "nomadgs_gateway_requests_total", code="504", **up) == 1
    assert value(gw, "nomadgs_gateway_requests_total", code="200", **up) == 6


def test_held_requests_are_declared_for_scale_to_zero(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")])) as (client, gw):
        text = client.get("/metrics").text
        assert "# TYPE nomadgs_gateway_requests_held gauge" in text
        gw.metrics.held.labels("m").inc()  # what scale to zero will do
        assert value(gw, "nomadgs_gateway_requests_held", model="m") == 1


def test_each_gateway_has_its_own_registry(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    source = StaticSource([a.endpoint("m")])
    with gateway(source) as (first, gw1), gateway(source) as (second, gw2):
        chat(first, "m")
        chat(first, "m")
        chat(second, "m")
        assert value(gw1, "nomadgs_gateway_requests_total", model="m", upstream=where(a), code="200") == 2
        assert value(gw2, "nomadgs_gateway_requests_total", model="m", upstream=where(a), code="200") == 1


def test_series_of_instances_that_left_are_dropped_once_their_requests_ended(
    backends: Callable[..., FakeBackend],
) -> None:
    a, b = backends("A"), backends("B")
    source = StaticSource([a.endpoint("m"), b.endpoint("m")])
    with gateway(source) as (client, _), ThreadPoolExecutor(2) as pool:
        for _ in range(4):
            chat(client, "m")
        held = pool.submit(client.post, "/v1/chat/completions", json={"model": "m", "messages": [], "hold": True})
        assert a.holding.wait(5) or b.holding.wait(5)
        busy, idle = (a, b) if a.holding.is_set() else (b, a)
        source.set([])  # both left the table (rescheduled elsewhere)
        wait_until(lambda: where(idle) not in client.get("/metrics").text, 10, "the idle one's series dropped")
        assert where(busy) in client.get("/metrics").text, "kept while its request runs"
        busy.release.set()
        assert held.result(10).status_code == 200
        wait_until(lambda: where(busy) not in client.get("/metrics").text, 10, "dropped once its request ended")


def test_without_metrics_there_is_no_metrics_path(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")]), metrics=False) as (client, _):
        assert chat(client, "m").status_code == 200
        assert client.get("/metrics").status_code == 404


def test_promtool_accepts_the_gateways_metrics(backends: Callable[..., FakeBackend], promtool: str) -> None:
    a = backends("A", usage=USAGE)
    with gateway(StaticSource([a.endpoint("m"), dead_endpoint("m", "z-dead")])) as (client, _):
        for _ in range(3):
            chat(client, "m")
        client.post("/v1/chat/completions", json={"model": "m", "stream": True, "messages": []})
        chat(client, "unknown")
        text = client.get("/metrics").text
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", "no lint remark either"


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ((b'{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}, "id": "x"}',), (3, 4)),
        ((b'data: {"usage": null}\n\n', b'data: {"choices": [], "usage": {"prompt_tokens": 5,', b' "completion_tokens'
          b'": 6}}\n\ndata: [DONE]\n\n'), (5, 6)),
        ((b'data: {"choices": [], "usage": null}\n\ndata: [DONE]\n\n',), None),
        ((b'{"choices": [{"message": {"content": "the \\"usage\\": {\\"prompt_tokens\\": 9}"}}]}',), None),
        ((b'{"usage": {"prompt_tokens": "many", "completion_tokens": -2}}',), (0, 0)),
        ((b'{"usage": {"prompt_tokens": 3',), None),
        ((b"",), None),
    ],
    ids=["json", "stream split over chunks", "null", "usage inside a message", "not numbers", "cut", "empty"],
)  # fmt: skip
def test_usage_is_read_from_the_end_of_an_answer(tail: tuple[bytes, ...], expected: tuple[int, int] | None) -> None:
    assert usage_in(tail) == expected


def test_the_stream_usage_of_a_real_answer_shape_is_found() -> None:
    # llama.cpp's last streamed event (build 11669): usage and timings after the choices.
    event = {"choices": [{"finish_reason": "stop", "index": 0, "delta": {}}], "created": 1, "id": "chatcmpl-x",
             "model": "smollm2-135m", "object": "chat.completion.chunk",
             "usage": {"completion_tokens": 8, "prompt_tokens": 42, "total_tokens": 50},
             "timings": {"prompt_n": 42, "predicted_n": 8}}  # fmt: skip
    text = f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()
    assert usage_in((text[:40], text[40:90], text[90:])) == (42, 8)


def test_a_threaded_burst_counts_every_request(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")])) as (client, gw), ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: chat(client, "m").status_code, range(40)))
        assert statuses == [200] * 40
        assert value(gw, "nomadgs_gateway_requests_total", model="m", upstream=where(a), code="200") == 40
        assert value(gw, "nomadgs_gateway_requests_in_flight", model="m", upstream=where(a)) == 0
