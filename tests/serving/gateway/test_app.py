"""The gateway application: routing by model, the model list, failover; with fake backends, a real Consul and
a real llama.cpp server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace

import pytest

from nomad_gpustack.serving.consul import ConsulWatcher
from nomad_gpustack.serving.discovery import Endpoint
from nomad_gpustack.serving.gateway import ROUTED_PATHS, StaticSource
from nomad_gpustack.settings import ConsulSettings

from ...support.components import ConsulAgent
from ..fakes import FakeBackend, chat, dead_endpoint, gateway
from ..test_discovery import ConsulServices, unique, wait_until


def test_routes_each_path_by_model(backends: Callable[..., FakeBackend]) -> None:
    a, b = backends("A"), backends("B")
    source = StaticSource([a.endpoint("model-a"), b.endpoint("model-b")])
    with gateway(source) as (client, _):
        for path in ROUTED_PATHS:
            for model, name in (("model-a", "A"), ("model-b", "B")):
                response = chat(client, model, path)
                assert response.status_code == 200, response.text
                assert response.json()["served_by"] == name and response.json()["path"] == path
    assert len(a.requests) == len(b.requests) == len(ROUTED_PATHS)
    # The body reaches the instance as the client sent it.
    assert a.requests[0]["body"] == {"model": "model-a", "messages": [{"role": "user", "content": "hi"}]}


def test_models_lists_models_with_healthy_instances(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    source = StaticSource([a.endpoint("m1"), a.endpoint("m1", service_id="x"), a.endpoint("m2", health="critical")])
    with gateway(source) as (client, _):
        listing = client.get("/v1/models").json()
        assert listing["object"] == "list"
        assert [(m["id"], m["object"], m["instances"]) for m in listing["data"]] == [("m1", "model", 2)]
        assert client.get("/v1/models/m1").json()["id"] == "m1"
        assert client.get("/v1/models/m2").status_code == 404
        # The table is read on every request: a change shows at once.
        source.set([a.endpoint("m2")])
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["m2"]
        assert chat(client, "m1").status_code == 404


def test_refused_connection_fails_over_to_another_replica(
    backends: Callable[..., FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    live = backends("live")
    # Sorted first in the table, the dead instance is the first one tried.
    source = StaticSource([dead_endpoint("m", "a-dead"), live.endpoint("m", service_id="b-live")])
    with caplog.at_level(logging.WARNING, "nomadgs.gateway"), gateway(source) as (client, gw):
        responses = [chat(client, "m") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert {r.json()["served_by"] for r in responses} == {"live"}
    assert len(live.requests) == 4
    retried = [r for r in caplog.records if "trying the next instance" in r.getMessage()]
    assert len(retried) == 1  # then tried last: not tried first again for a few seconds
    assert gw.balancer.inflight == {}


def test_unreachable_instances_are_the_same_503_as_no_healthy_instance() -> None:
    """One outage, one answer: before Consul notices that the only instances died, and after."""
    dead = [dead_endpoint("m", "one"), dead_endpoint("m", "two")]
    source = StaticSource(dead)
    with gateway(source) as (client, _):
        unreachable = chat(client, "m")
        source.set([replace(e, health="critical") for e in dead])  # Consul noticed
        unhealthy = chat(client, "m")
    for response in (unreachable, unhealthy):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("no_healthy_instance", "server_error")
        assert error["message"].startswith("The model 'm' has no healthy instance right now")
    assert "none of its instances could be reached" in unreachable.json()["error"]["message"]


def test_follows_consul_health_checks(
    consul: ConsulAgent, backends: Callable[..., FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    model = unique("replicated")
    a, b = backends("A"), backends("B")
    registry = ConsulServices(consul)
    try:
        for backend in (a, b):
            registry.register(model, backend.port, http_check=f"http://127.0.0.1:{backend.port}/health")
        watcher = ConsulWatcher(ConsulSettings(address=consul.address), wait=30)
        with caplog.at_level(logging.WARNING, "nomadgs.gateway"), gateway(watcher) as (client, gw):

            def healthy() -> set[int]:
                return {e.port for e in gw.source.table.routes.get(model, ())}

            wait_until(lambda: healthy() == {a.port, b.port}, 5, "both instances passing")
            assert {chat(client, model).json()["served_by"] for _ in range(6)} == {"A", "B"}

            assert a.server is not None
            a.server.stop()  # A dies: its check turns critical, and Consul's answer removes it from the table
            took = wait_until(lambda: healthy() == {b.port}, 5, "dead instance out of the table")
            caplog.clear()
            assert {chat(client, model).json()["served_by"] for _ in range(6)} == {"B"}
            assert not [r for r in caplog.records if "trying the next instance" in r.getMessage()]

            b.healthy = False  # B still answers, but its health check fails: no traffic for it either
            wait_until(lambda: chat(client, model).status_code == 503, 5, "unhealthy instance out")
            b.healthy = True
            wait_until(lambda: chat(client, model).status_code == 200, 5, "recovered instance back")
    finally:
        registry.close()
    assert took < 4.0


@pytest.mark.e2e
def test_streams_from_llama_cpp_through_the_gateway(llama_server: str) -> None:
    port = int(llama_server.rsplit(":", 1)[1])
    llama = Endpoint(model="smollm2-135m", service="smollm2", service_id="smollm2-1", address="127.0.0.1",
                     port=port, health="passing", backend="llama.cpp")  # fmt: skip
    body = {"model": "smollm2-135m", "stream": True, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}  # fmt: skip
    with gateway(StaticSource([llama]), api_keys=["k"]) as (client, _):
        headers = {"Authorization": "Bearer k"}
        assert [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]] == ["smollm2-135m"]
        with client.stream("POST", "/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
            assert response.status_code == 200
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert len(events) > 3 and text.strip()
