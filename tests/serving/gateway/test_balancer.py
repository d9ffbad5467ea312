"""The balancer: least outstanding requests, round robin between equals, instances that failed lately last,
ejected ones out."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from nomad_gpustack.serving.discovery import Endpoint
from nomad_gpustack.serving.gateway import Balancer, OutlierDetector, StaticSource

from ..fakes import FakeBackend, chat, dead_endpoint, gateway
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


# --- canaries -------------------------------------------------------------------------------------------------

REQUESTS = 1000
CANARY_WEIGHT = 0.1


def within_binomial(hits: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """Whether `hits` of `n` draws is within `sigmas` standard deviations of a binomial's mean."""
    mean, sd = n * p, (n * p * (1 - p)) ** 0.5
    return abs(hits - mean) <= sigmas * sd


def served_counts(client: Any, n: int) -> Counter[str]:
    return Counter(chat(client, "m").json()["served_by"] for _ in range(n))


def test_a_canary_gets_the_share_canary_weight_sets(backends: Callable[..., FakeBackend]) -> None:
    """2 stable instances and an unpromoted canary (its Consul tags carry TAG_CANARY); with --canary-weight 0.1
    the canary answers about a tenth of the requests, the stable ones the rest, evenly."""
    a, b, canary = backends("A"), backends("B"), backends("C")
    source = StaticSource([a.endpoint("m"), b.endpoint("m"), replace(canary.endpoint("m"), canary=True)])
    with gateway(source, canary_weight=CANARY_WEIGHT, rng=random.Random(16)) as (client, _):
        served = served_counts(client, REQUESTS)
    assert sum(served.values()) == REQUESTS
    assert within_binomial(served["C"], REQUESTS, CANARY_WEIGHT), served
    assert abs(served["A"] - served["B"]) <= 1, served  # round robin between the stable ones


def test_without_canary_weight_a_canary_gets_its_share_of_instances(backends: Callable[..., FakeBackend]) -> None:
    a, b, canary = backends("A"), backends("B"), backends("C")
    source = StaticSource([a.endpoint("m"), b.endpoint("m"), replace(canary.endpoint("m"), canary=True)])
    with gateway(source) as (client, _):
        served = served_counts(client, 30)
    assert served == {"A": 10, "B": 10, "C": 10}


def test_an_unhealthy_or_ejected_canary_gets_no_request(backends: Callable[..., FakeBackend]) -> None:
    """Failing its Consul check, the canary leaves the routes; refusing connections, it is ejected after
    EJECT_AFTER failures (each failed over, so no request fails), then gets nothing, even at weight 1."""
    a, b, canary = backends("A"), backends("B"), backends("C")
    stable = [a.endpoint("m"), b.endpoint("m")]
    source = StaticSource([*stable, replace(canary.endpoint("m"), canary=True)])
    with gateway(source, canary_weight=1.0, rng=random.Random(16)) as (client, gw):
        assert served_counts(client, 10) == {"C": 10}  # weight 1: the canary first, every time
        source.set([*stable, replace(canary.endpoint("m", health="critical"), canary=True)])
        assert served_counts(client, 50)["C"] == 0
        dead = replace(dead_endpoint("m", "dead-canary"), canary=True)
        source.set([*stable, dead])
        responses = [chat(client, "m") for _ in range(50)]
        assert [r.status_code for r in responses] == [200] * 50, "failed over, never failed"
        assert [e.service_id for e in gw.outliers.ejected()] == ["dead-canary"]
    assert len(canary.requests) == 10


def test_balancer_canary_weight_is_a_fraction() -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        Balancer(canary_weight=1.5)


def test_canary_weight_keeps_the_canary_as_fallback() -> None:
    """The side not drawn stays behind in the order: a request whose first choice fails still has the rest."""
    one, two = (Endpoint(model="m", service="m", service_id=str(i), address="10.0.0.1", port=i, health="passing")
                for i in (1, 2))  # fmt: skip
    canary = replace(one, service_id="c", port=3, canary=True)
    never = Balancer(canary_weight=0.0, rng=random.Random(1))
    orders = [never.order("m", (one, two, canary)) for _ in range(20)]
    assert all(order[-1] == canary and len(order) == 3 for order in orders)
    always = Balancer(canary_weight=1.0, rng=random.Random(1))
    assert all(always.order("m", (one, two, canary))[0] == canary for _ in range(20))
    assert always.order("m", (canary,)) == (canary,)  # only canaries: no choice to make
