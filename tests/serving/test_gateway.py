"""The gateway: routing, balancing, failover, streaming, API keys; with fake backends, a real Consul and a real
llama.cpp server. Every server runs on 127.0.0.1 with uvicorn on a thread of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nomad_gpustack.cli import main
from nomad_gpustack.errors import InputError
from nomad_gpustack.serving.consul import ConsulWatcher
from nomad_gpustack.serving.discovery import Endpoint
from nomad_gpustack.serving.gateway import (
    ROUTED_PATHS,
    BackgroundServer,
    Balancer,
    Gateway,
    StaticSource,
    create_app,
    load_api_keys,
    model_of,
    parse_listen,
)
from nomad_gpustack.settings import ConsulSettings

from ..support.components import ConsulAgent, free_port
from .test_discovery import ConsulServices, unique, wait_until


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def delta(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}


class FakeBackend:
    """An OpenAI-like server that says who it is. When streaming it sends "hello ", then waits for `gate`
    (when set up with one) before the rest, so a test can tell relayed chunks from a buffered answer."""

    def __init__(self, name: str, *, gate: threading.Event | None = None, answer: str | None = None) -> None:
        self.name = name
        self.gate = gate
        self.answer = answer or f"from {name}"
        self.healthy = True
        self.requests: list[dict[str, Any]] = []
        self.stream_finished = threading.Event()  # the generator ran to its end
        self.stream_closed = threading.Event()  # the generator stopped, finished or cancelled
        self.server: BackgroundServer | None = None

    def app(self) -> Starlette:
        routes = [Route(path, self._handle, methods=["POST"]) for path in ROUTED_PATHS]
        routes.append(Route("/health", self._health))
        return Starlette(routes=routes)

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok" if self.healthy else "sick"}, 200 if self.healthy else 500)

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        client = request.client.port if request.client else None
        self.requests.append(
            {"path": request.url.path, "headers": dict(request.headers), "body": body, "client": client}
        )
        if body.get("stream"):
            return StreamingResponse(self._stream(), media_type="text/event-stream")
        message = {"role": "assistant", "content": self.answer}
        return JSONResponse(
            {"object": "chat.completion", "served_by": self.name, "path": request.url.path, "model": body["model"],
             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        )  # fmt: skip

    async def _stream(self) -> AsyncIterator[str]:
        try:
            yield sse(delta("hello "))
            if self.gate is not None:
                deadline = time.monotonic() + 10
                while not self.gate.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
            for word in self.answer.split(" "):
                yield sse(delta(word + " "))
            yield sse("[DONE]")
            self.stream_finished.set()
        finally:
            self.stream_closed.set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def endpoint(self, model: str, *, health: str = "passing", service_id: str | None = None) -> Endpoint:
        return Endpoint(model=model, service=model, service_id=service_id or f"{self.name}-{model}",
                        address="127.0.0.1", port=self.port, health=health, backend="fake")  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture
def backends() -> Iterator[Callable[..., FakeBackend]]:
    """Start fake backends on demand; all are stopped at the end of the test."""
    started: list[FakeBackend] = []

    def start(name: str, **options: Any) -> FakeBackend:
        backend = FakeBackend(name, **options)
        backend.server = BackgroundServer(backend.app()).start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        if backend.server is not None:
            backend.server.stop()


@contextmanager
def gateway(source: Any, **options: Any) -> Iterator[tuple[httpx.Client, Gateway]]:
    """A gateway served by uvicorn, and a client for it."""
    app = create_app(source, **options)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client, app.state.gateway


def dead_endpoint(model: str, service_id: str) -> Endpoint:
    """An instance whose port refuses connections."""
    return Endpoint(model=model, service=model, service_id=service_id, address="127.0.0.1", port=free_port(),
                    health="passing")  # fmt: skip


def chat(client: httpx.Client, model: str, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    return client.post(path, json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, headers=headers)


# ----------------------------------------------------------------------------------------------------
# Routing and errors


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


def test_balances_replicas(backends: Callable[..., FakeBackend]) -> None:
    a, b = backends("A"), backends("B")
    with gateway(StaticSource([a.endpoint("m"), b.endpoint("m")])) as (client, _):
        served = [chat(client, "m").json()["served_by"] for _ in range(6)]
    assert sorted(served) == ["A", "A", "A", "B", "B", "B"]


def test_balancer_prefers_the_least_busy_instance() -> None:
    one, two, three = (
        Endpoint(model="m", service="m", service_id=str(i), address="10.0.0.1", port=i, health="passing")
        for i in (1, 2, 3)
    )
    balancer = Balancer()
    instances = (one, two, three)
    assert [balancer.order("m", instances)[0] for _ in range(3)] == [one, two, three]  # idle: round robin
    balancer.acquire(one)
    balancer.acquire(two)
    assert balancer.order("m", instances)[0] == three
    balancer.acquire(three)
    balancer.acquire(three)
    assert balancer.order("m", instances)[-1] == three
    balancer.eject(one)
    assert balancer.order("m", instances)[-1] == one  # refused lately: tried last, but still tried
    for endpoint in (one, two, three, three):
        balancer.release(endpoint)
    assert balancer.inflight == {}


def test_errors_are_openai_shaped(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    source = StaticSource([a.endpoint("up"), a.endpoint("down", health="critical")])
    with gateway(source) as (client, _):
        cases = [
            (chat(client, "nope"), 404, "model_not_found"),
            (chat(client, "down"), 503, "no_healthy_instance"),
            (client.post("/v1/chat/completions", content=b"{not json"), 400, "invalid_json"),
            (client.post("/v1/chat/completions", json=["a list"]), 400, "invalid_json"),
            (client.post("/v1/chat/completions", json={"messages": []}), 400, "missing_model"),
            (client.get("/v1/unknown"), 404, "unknown_url"),
            (client.get("/v1/chat/completions"), 405, "method_not_allowed"),
        ]
        for response, status, code in cases:
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == "application/json"
            error = response.json()["error"]
            assert error["code"] == code and error["message"] and error["type"]
    assert a.requests == []


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


# ----------------------------------------------------------------------------------------------------
# Failover


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
    assert len(retried) == 1  # then set aside: not tried first again within the ejection time
    assert gw.balancer.inflight == {}


def test_all_instances_failing_is_502() -> None:
    source = StaticSource([dead_endpoint("m", "one"), dead_endpoint("m", "two")])
    with gateway(source) as (client, _):
        response = chat(client, "m")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable" and "All 2 instances of 'm' failed" in error["message"]


# ----------------------------------------------------------------------------------------------------
# The upstream connection pool


def test_pool_reuses_connections_and_survives_a_restarted_instance(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")])) as (client, gw):
        for _ in range(5):
            assert chat(client, "m").status_code == 200
        assert len({r["client"] for r in a.requests}) == 1  # one kept-alive connection for all five
        assert gw.pool.connections == 1
        # The instance restarts on the same port: the idle connection is dead and must not be used.
        assert a.server is not None
        port = a.port
        a.server.stop()
        restarted = FakeBackend("A2")
        with BackgroundServer(restarted.app(), port=port):
            response = chat(client, "m")
            assert response.status_code == 200 and response.json()["served_by"] == "A2"
        assert gw.pool.connections == 1
    assert gw.pool.connections == 0  # closed with the gateway


def test_concurrent_requests_each_get_a_connection(backends: Callable[..., FakeBackend]) -> None:
    a, b = backends("A"), backends("B")
    with gateway(StaticSource([a.endpoint("m"), b.endpoint("m")])) as (client, gw):

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as parallel:
                body = {"model": "m", "stream": True, "messages": []}
                responses = await asyncio.gather(*(parallel.post("/v1/chat/completions", json=body) for _ in range(40)))
            return [r.status_code for r in responses if r.text.endswith("data: [DONE]\n\n")]

        assert asyncio.run(burst()) == [200] * 40
        assert len(a.requests) + len(b.requests) == 40 and abs(len(a.requests) - len(b.requests)) <= 10
        assert gw.balancer.inflight == {}
        assert 2 <= gw.pool.connections <= 40


# ----------------------------------------------------------------------------------------------------
# Streaming


def test_streams_chunks_without_buffering(backends: Callable[..., FakeBackend]) -> None:
    gate = threading.Event()
    slow = backends("slow", gate=gate, answer="the end")
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    # A read timeout well below the backend's own 10 s wait: a buffered answer fails here.
    timeout = httpx.Timeout(3.0)
    with (
        gateway(StaticSource([slow.endpoint("m")])) as (client, _),
        client.stream("POST", "/v1/chat/completions", json=body, timeout=timeout) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = next(lines)
        # The first chunk is here while the backend still waits for the gate: nothing was buffered.
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "hello "
        assert not slow.stream_finished.is_set()
        gate.set()
        rest = [line for line in lines if line]
    assert slow.stream_finished.is_set()
    contents = [json.loads(x.removeprefix("data: "))["choices"][0]["delta"]["content"] for x in rest[:-1]]
    assert contents == ["the ", "end "] and rest[-1] == "data: [DONE]"


def test_client_leaving_closes_the_upstream_stream(backends: Callable[..., FakeBackend]) -> None:
    gate = threading.Event()  # never set: the backend would wait 10 s for it
    slow = backends("slow", gate=gate)
    body = {"model": "m", "stream": True, "messages": []}
    with gateway(StaticSource([slow.endpoint("m")])) as (client, gw):
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            next(response.iter_lines())
        # The client left after one chunk: the gateway must drop the upstream request, freeing the model.
        wait_until(slow.stream_closed.is_set, 3, "backend stream closed")
        assert not slow.stream_finished.is_set()
        wait_until(lambda: gw.balancer.inflight == {}, 2, "request released")


# ----------------------------------------------------------------------------------------------------
# API keys


def test_api_keys(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")]), api_keys=["key-one", "key-two"]) as (client, _):
        missing = chat(client, "m")
        wrong = chat(client, "m", Authorization="Bearer key-three")
        not_bearer = chat(client, "m", Authorization="Basic key-one")
        accepted = [chat(client, "m", Authorization=f"Bearer {k}") for k in ("key-one", "key-two")]
        models_without_key = client.get("/v1/models")
        models_with_key = client.get("/v1/models", headers={"Authorization": "Bearer key-two"})
    for refused in (missing, wrong, not_bearer, models_without_key):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "key-one" not in refused.text and "key-three" not in refused.text
    assert [r.status_code for r in accepted] == [200, 200] and models_with_key.status_code == 200
    assert len(a.requests) == 2
    # The gateway's key is the gateway's: it is not passed on to the instance.
    assert all("authorization" not in r["headers"] for r in a.requests)


def test_api_key_sources(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# gateway keys\nfile-key-1\n\n  file-key-2  \n")
    env = {"NOMADGS_GATEWAY_API_KEYS": "env-a, env-b env-c"}
    assert load_api_keys(["flag-key"], str(keys_file), env) == [
        "flag-key", "file-key-1", "file-key-2", "env-a", "env-b", "env-c"
    ]  # fmt: skip
    (tmp_path / "empty").write_text("# nothing\n")
    for flags, path in (([""], None), (["two words"], None), ([], str(tmp_path / "empty")), ([], "/nonexistent")):
        with pytest.raises(InputError) as caught:
            load_api_keys(flags, path, {})
        assert "two words" not in str(caught.value)


def test_parse_listen_and_model_of() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("8080", "host", "1.2.3.4:99999", "a b:1", ":80"):
        with pytest.raises(InputError):
            parse_listen(bad)
    assert model_of(b'{"model": "m", "messages": []}') == "m"


def test_gateway_command_input_and_connection_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["gateway", "--listen", "nowhere"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert main(["gateway", "--api-keys-file", str(tmp_path / "missing")]) == 2
    assert "cannot read the API keys file" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["gateway", "--listen", f"127.0.0.1:{port}"]) == 1
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    code = main(["gateway", "--listen", f"127.0.0.1:{free_port()}", "--api-key", "sekrit-key",
                 "--consul-address", f"127.0.0.1:{free_port()}"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 5 and "cannot reach Consul" in captured.err
    assert "Traceback" not in captured.err and "sekrit-key" not in captured.err + captured.out


# ----------------------------------------------------------------------------------------------------
# With the real Consul agent


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


def test_gateway_command_serves_models_from_consul(consul: ConsulAgent, backends: Callable[..., FakeBackend]) -> None:
    """`nomadgs gateway` as a process: key from the environment, models from Consul, Ctrl-C stops it."""
    model = unique("served")
    fake = backends("F")
    registry = ConsulServices(consul)
    port = free_port()
    env = {**os.environ, "NOMADGS_GATEWAY_API_KEYS": "env-secret-1,env-secret-2", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", "gateway", "--listen", f"127.0.0.1:{port}",
         "--consul-address", consul.address],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        registry.register(model, fake.port, status="passing")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_until(lambda: _answers(client, "/healthz"), 15, "gateway listening")
            headers = {"Authorization": "Bearer env-secret-2"}
            wait_until(lambda: model in client.get("/v1/models", headers=headers).text, 5, "model listed")
            assert chat(client, model, **headers).json()["served_by"] == "F"
            assert chat(client, model).status_code == 401
    finally:
        registry.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert f"gateway: http://127.0.0.1:{port}/v1" in err and "2 API key(s) accepted" in err
    assert f"model {model}: 1 healthy instance(s) of 1" in err
    assert "env-secret" not in out + err and "Traceback" not in err


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.TransportError:
        return False


# ----------------------------------------------------------------------------------------------------
# With the real llama.cpp server


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
