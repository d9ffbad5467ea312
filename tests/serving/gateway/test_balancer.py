"""The balancer: least outstanding requests, round robin between equals, instances that failed lately last,
ejected ones out."""

from __future__ import annotations

from collections.abc import Callable

from nomad_gpustack.serving.discovery import Endpoint
from nomad_gpustack.serving.gateway import Balancer, OutlierDetector, StaticSource

from ..fakes import FakeBackend, chat, gateway
from .test_outliers import Clock


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
    clock = Clock()
    balancer = Balancer(OutlierDetector(clock=clock, try_last_seconds=5.0))
    instances = (one, two, three)
    assert [balancer.order("m", instances)[0] for _ in range(3)] == [one, two, three]  # idle: round robin
    balancer.acquire(one)
    balancer.acquire(two)
    assert balancer.order("m", instances)[0] == three
    balancer.acquire(three)
    balancer.acquire(three)
    assert balancer.order("m", instances)[-1] == three
    balancer.outliers.failed(one, instances)
    assert balancer.order("m", instances)[-1] == one  # refused lately: tried last, but still tried
    clock.advance(5.0)
    assert balancer.order("m", instances)[-1] == three  # no longer: the busiest is last again
    for endpoint in (one, two, three, three):
        balancer.release(endpoint)
    assert balancer.inflight == {}


def test_balancer_leaves_ejected_instances_out() -> None:
    one, two = (
        Endpoint(model="m", service="m", service_id=str(i), address="10.0.0.1", port=i, health="passing")
        for i in (1, 2)
    )
    clock = Clock()
    balancer = Balancer(OutlierDetector(clock=clock, eject_after=1, eject_for=30.0))
    assert balancer.outliers.failed(one, (one, two)).outcome == "ejected"
    assert [balancer.order("m", (one, two)) for _ in range(2)] == [(two,), (two,)]
    clock.advance(30.0)
    assert {balancer.order("m", (one, two))[0] for _ in range(2)} == {one, two}
