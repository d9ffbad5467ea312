"""The upstream connection pool: reuse, a restarted instance, concurrent requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from nomad_gpustack.serving.gateway import BackgroundServer, StaticSource

from ..fakes import FakeBackend, chat, gateway


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
