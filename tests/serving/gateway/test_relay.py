"""Relaying: the model read from the body, answers streamed chunk by chunk, a client leaving mid-stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import httpx
import pytest

from nomad_gpustack.serving.gateway import ApiError, StaticSource, model_of
from nomad_gpustack.serving.gateway.relay import ModelScan

from ..fakes import FakeBackend, gateway
from ..test_discovery import wait_until


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


def test_model_of() -> None:
    assert model_of(b'{"model": "m", "messages": []}') == "m"


def test_the_model_is_found_in_a_body_read_piece_by_piece_without_reading_past_it() -> None:
    body = json.dumps({"messages": [{"role": "user", "content": 'a "quoted" \\ {model} ]'}], "model": "m\u00e9",
                       "rest": "x" * 1000}).encode()  # fmt: skip
    scan, buffer = ModelScan(), bytearray()
    for start in range(0, len(body), 3):  # cut anywhere: in strings, escapes, keys
        buffer += body[start : start + 3]
        model = scan.feed(buffer)
        if model is not None:
            break
    assert model == "mé" and len(buffer) < 200  # found before the rest was read


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", "invalid_json"), (b'["a list"]', "invalid_json"), (b'{"a": 1', "invalid_json"),
     (b'{"messages": []}', "missing_model"), (b'{"model": 5}', "missing_model"), (b'{"model": ""}', "missing_model"),
     (b'{"a": {"model": "inner"}}', "missing_model")],
)  # fmt: skip
def test_model_of_refuses_what_is_not_an_object_with_a_model(body: bytes, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        model_of(body)
    assert refused.value.status == 400 and refused.value.code == code
