"""The balancer: least outstanding requests, round robin between equals, instances that failed lately last."""

from __future__ import annotations

from collections.abc import Callable

from nomad_gpustack.serving.discovery import Endpoint
from nomad_gpustack.serving.gateway import Balancer, StaticSource

from ..fakes import FakeBackend, chat, gateway


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
