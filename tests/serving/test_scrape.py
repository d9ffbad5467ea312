"""Prometheus scrape targets from Consul, labelled as Prometheus' own Consul discovery labels them (v2.42.0
discovery/consul/consul.go), and the gateway's HTTP service discovery that serves them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nomad_gpustack.contract.metadata import TAG_METRICS
from nomad_gpustack.serving.consul import ConsulWatcher
from nomad_gpustack.serving.gateway import StaticSource
from nomad_gpustack.serving.scrape import ScrapeTarget, aggregated_status, consul_targets, gateway_target
from nomad_gpustack.settings import ConsulSettings

from ..support.components import ConsulAgent
from .fakes import FakeBackend, gateway
from .test_discovery import ConsulServices, unique, wait_until

TAGS = ["nomadgs", "openai", "model=m", "backend=llama.cpp", TAG_METRICS]


@pytest.fixture
def services(consul: ConsulAgent) -> Iterator[ConsulServices]:
    registry = ConsulServices(consul)
    yield registry
    registry.close()


def entry(*, tags: list[str] = TAGS, service_address: str = "10.0.0.5", checks: list[Any] | None = None) -> Any:
    return {
        "Node": {"Node": "worker-1", "Address": "10.0.0.1", "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": "10.0.0.1", "wan_ipv4": "1.2.3.4"}, "Meta": {"gpu-vendor": "nvidia"}},
        "Service": {"ID": "_nomad-task-1", "Service": "m", "Tags": tags, "Address": service_address, "Port": 23456,
                    "Meta": {"metrics_path": "/metrics", "gpustack_model": "m", "odd.key-name": "x"}},
        "Checks": checks if checks is not None else [{"CheckID": "serfHealth", "Status": "passing"},
                                                      {"CheckID": "service:1", "Status": "passing"}],
    }  # fmt: skip


def test_labels_are_those_of_prometheus_consul_discovery() -> None:
    (target,) = consul_targets("m", [entry()], "dc1")
    assert target.address == "10.0.0.5:23456"
    assert target.labels == {
        "__meta_consul_service": "m",
        "__meta_consul_dc": "dc1",
        "__meta_consul_address": "10.0.0.1",
        "__meta_consul_node": "worker-1",
        "__meta_consul_namespace": "",
        "__meta_consul_partition": "",
        "__meta_consul_tags": ",nomadgs,openai,model=m,backend=llama.cpp,nomadgs-metrics,",
        "__meta_consul_service_address": "10.0.0.5",
        "__meta_consul_service_port": "23456",
        "__meta_consul_service_id": "_nomad-task-1",
        "__meta_consul_health": "passing",
        "__meta_consul_metadata_gpu_vendor": "nvidia",
        "__meta_consul_service_metadata_metrics_path": "/metrics",
        "__meta_consul_service_metadata_gpustack_model": "m",
        "__meta_consul_service_metadata_odd_key_name": "x",
        "__meta_consul_tagged_address_lan": "10.0.0.1",
        "__meta_consul_tagged_address_wan_ipv4": "1.2.3.4",
    }
    assert target.group() == {"targets": ["10.0.0.5:23456"], "labels": dict(target.labels)}


def test_the_node_address_without_a_service_address_and_ipv6_in_brackets() -> None:
    (target,) = consul_targets("m", [entry(service_address="")], "dc1")
    assert target.address == "10.0.0.1:23456" and target.labels["__meta_consul_service_address"] == ""
    (target,) = consul_targets("m", [entry(service_address="fd00::5")], "dc1")
    assert target.address == "[fd00::5]:23456"


def test_only_instances_tagged_for_metrics_are_targets() -> None:
    assert consul_targets("m", [entry(tags=["nomadgs", "openai"])], "dc1") == []
    assert consul_targets("m", "not a list", "dc1") == []


@pytest.mark.parametrize(
    ("checks", "health"),
    [
        ([], "passing"),
        ([{"CheckID": "a", "Status": "passing"}, {"CheckID": "b", "Status": "warning"}], "warning"),
        ([{"CheckID": "a", "Status": "warning"}, {"CheckID": "b", "Status": "critical"}], "critical"),
        ([{"CheckID": "_node_maintenance", "Status": "critical"}, {"CheckID": "b", "Status": "passing"}],
         "maintenance"),
        ([{"CheckID": "_service_maintenance:x", "Status": "critical"}], "maintenance"),
        ([{"CheckID": "a", "Status": "passing"}, {"CheckID": "b", "Status": "bogus"}], ""),
    ],
)  # fmt: skip
def test_health_is_consuls_aggregated_status(checks: list[Any], health: str) -> None:
    assert aggregated_status(checks) == health
    # Instances that are not passing are listed too, as Consul discovery lists them: relabelling drops them.
    (target,) = consul_targets("m", [entry(checks=checks)], "dc1")
    assert target.labels["__meta_consul_health"] == health


def test_the_gateway_lists_itself_as_its_consul_service_would_be_labelled() -> None:
    target = gateway_target("10.0.0.9", 8080, node="gw-host", datacenter="dc1", metrics_path="/metrics")
    assert target.address == "10.0.0.9:8080"
    assert target.labels["__meta_consul_service"] == "nomadgs-gateway"
    assert target.labels["__meta_consul_tags"] == ",nomadgs-gateway,nomadgs-metrics,"
    assert target.labels["__meta_consul_service_metadata_metrics_path"] == "/metrics"
    assert target.labels["__meta_consul_health"] == "passing"


def test_http_service_discovery_answers_as_prometheus_requires(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    engine = ScrapeTarget("127.0.0.1:9", {"__meta_consul_service": "m"})
    with gateway(StaticSource([a.endpoint("m")], [engine])) as (client, _):
        answer = client.get("/metrics/targets", headers={"X-Prometheus-Refresh-Interval-Seconds": "60"})
        # Prometheus' http SD: 200, application/json (discovery/http/http.go matchContentType), no null group.
        assert answer.status_code == 200
        assert re.fullmatch(r'(?i:application/json(;\s*charset=("utf-8"|utf-8))?)', answer.headers["content-type"])
        own, listed = answer.json()
        assert listed == {"targets": ["127.0.0.1:9"], "labels": {"__meta_consul_service": "m"}}
        # The gateway is where Prometheus reached it.
        assert own["targets"] == [f"{client.base_url.host}:{client.base_url.port}"]
        assert own["labels"]["__meta_consul_service"] == "nomadgs-gateway"
        assert client.get(own["labels"]["__meta_consul_service_metadata_metrics_path"]).status_code == 200
    with gateway(StaticSource([a.endpoint("m")], [engine]), metrics=False) as (client, _):
        assert client.get("/metrics/targets").json() == [listed], "no metrics: the gateway does not list itself"


def test_the_watcher_lists_the_instances_of_the_real_consul(consul: ConsulAgent, services: ConsulServices) -> None:
    model, other = unique("scrape"), unique("plain")
    services.register(model, 40001, tags=[*TAGS, "llm"], status="passing")
    services.register(model, 40002, tags=[*TAGS, "llm"], status="critical", service_id=f"{model}-sick")
    services.register(other, 40003)  # ours, but without the metrics tag
    watcher = ConsulWatcher(ConsulSettings(address=consul.address), wait=5)

    async def run() -> list[ScrapeTarget]:
        await watcher.start()
        try:
            return [t for t in watcher.scrape_targets() if t.labels["__meta_consul_service"] in (model, other)]
        finally:
            await watcher.stop()

    targets = sorted(asyncio.run(run()), key=lambda t: t.address)
    assert [t.address for t in targets] == ["127.0.0.1:40001", "127.0.0.1:40002"]
    first, sick = targets
    assert first.labels["__meta_consul_health"] == "passing" and sick.labels["__meta_consul_health"] == "critical"
    assert first.labels["__meta_consul_dc"] == "dc1" and first.labels["__meta_consul_address"] == "127.0.0.1"
    assert first.labels["__meta_consul_service_metadata_gpustack_model"] == model
    assert first.labels["__meta_consul_tags"] == "," + ",".join([*TAGS, "llm"]) + ","
    assert first.labels["__meta_consul_node"], "the agent's node name"
    assert "__meta_consul_metadata_consul_network_segment" in first.labels, "the node's meta, as Consul has it"


def test_the_gateway_follows_consul_for_its_targets(
    consul: ConsulAgent, services: ConsulServices, backends: Callable[..., FakeBackend]
) -> None:
    a = backends("A")
    model = unique("sd")
    watcher = ConsulWatcher(ConsulSettings(address=consul.address), wait=5)
    with gateway(watcher) as (client, _):

        def listed() -> set[str]:
            return {g["targets"][0] for g in client.get("/metrics/targets").json()
                    if g["labels"]["__meta_consul_service"] == model}  # fmt: skip

        assert listed() == set()
        service_id = services.register(model, a.port, tags=TAGS, http_check=f"http://127.0.0.1:{a.port}/health")
        wait_until(lambda: listed() == {f"127.0.0.1:{a.port}"}, 10, "the new instance listed")
        services.deregister(service_id)
        wait_until(lambda: listed() == set(), 10, "the instance gone")
