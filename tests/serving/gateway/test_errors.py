"""Errors answered in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Callable

from nomad_gpustack.serving.gateway import StaticSource

from ..fakes import FakeBackend, chat, gateway


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
