"""Discovery: parsing Consul and Nomad answers, the `endpoints` command and the watcher against a real Consul."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nomad_gpustack.cli import main
from nomad_gpustack.contract.metadata import TAG_CANARY
from nomad_gpustack.serving.consul import ConsulWatcher
from nomad_gpustack.serving.discovery import (
    DiscoveryError,
    Endpoint,
    build_table,
    check_marks,
    parse_consul_catalog,
    parse_consul_health,
    parse_consul_services,
    parse_nomad_registrations,
    parse_nomad_services,
    worst_health,
)
from nomad_gpustack.serving.gateway import BackgroundServer
from nomad_gpustack.settings import ConsulSettings

from ..support.components import ConsulAgent, free_port

ALLOC = "5c2f3a1e-0b7d-4e7a-9a55-1f2e3d4c5b6a"


def consul_entry(
    *,
    model: str = "qwen3-8b",
    service_id: str = f"_nomad-task-{ALLOC}-server-qwen3-8b-http",
    address: str = "10.0.0.5",
    port: int = 23456,
    statuses: tuple[str, ...] = ("passing", "passing"),
    tags: list[str] | None = None,
    meta: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One element of a `GET /v1/health/service/:name` answer, shaped like Consul 1.8's."""
    if tags is None:
        tags = ["nomadgs", "openai", f"model={model}", "backend=vLLM", "version=v0.10.0"]
    if meta is None:
        meta = {"gpustack_model": model, "gpustack_backend": "vLLM", "gpustack_backend_version": "v0.10.0",
                "nomadgs_job": f"{model}-job"}  # fmt: skip
    return {
        "Node": {"ID": "n1", "Node": "gpu-1", "Address": "10.0.0.9", "Datacenter": "dc1"},
        "Service": {"ID": service_id, "Service": model, "Tags": tags, "Address": address, "Meta": meta, "Port": port},
        "Checks": [
            {"CheckID": check_id, "Status": status, "ServiceID": "" if check_id == "serfHealth" else service_id}
            for check_id, status in zip(("serfHealth", f"service:{service_id}"), statuses, strict=False)
        ],
    }


# ----------------------------------------------------------------------------------------------------
# Parsing


def test_consul_entry_becomes_an_endpoint_with_meta_labels() -> None:
    [endpoint] = parse_consul_health([consul_entry()])
    assert endpoint == Endpoint(
        model="qwen3-8b",
        service="qwen3-8b",
        service_id=f"_nomad-task-{ALLOC}-server-qwen3-8b-http",
        address="10.0.0.5",
        port=23456,
        health="passing",
        backend="vLLM",
        version="v0.10.0",
        node="gpu-1",
        alloc_id=ALLOC,
        job_id="qwen3-8b-job",
        provider="consul",
    )
    assert endpoint.base_url == "http://10.0.0.5:23456/v1"


@pytest.mark.parametrize(
    ("statuses", "health"),
    [
        (("passing", "passing"), "passing"),
        (("passing", "warning"), "warning"),
        (("passing", "critical"), "critical"),
        (("critical", "passing"), "critical"),  # the node's own check counts too
        (("passing", "maintenance"), "critical"),  # an unknown status is no evidence of health
        ((), "passing"),  # no checks: Consul calls that passing
    ],
)
def test_health_is_the_worst_check(statuses: tuple[str, ...], health: str) -> None:
    [endpoint] = parse_consul_health([consul_entry(statuses=statuses)])
    assert endpoint.health == health


def test_labels_fall_back_to_tags_and_address_to_the_node() -> None:
    entry = consul_entry(meta={}, address="", service_id="manual-1")
    [endpoint] = parse_consul_health([entry])
    assert (endpoint.model, endpoint.backend, endpoint.version) == ("qwen3-8b", "vLLM", "v0.10.0")
    assert endpoint.address == "10.0.0.9"  # empty service address means the node's
    assert endpoint.alloc_id is None and endpoint.job_id is None


def test_services_without_the_marker_tag_or_a_port_are_left_out() -> None:
    foreign = consul_entry(tags=["openai", "model=x"])
    no_port = consul_entry(port=0)
    assert parse_consul_health([foreign, no_port, "junk", {}]) == []
    assert parse_consul_services({"consul": [], "a": ["nomadgs"], "b": ["web"], "c": None}) == ["a"]
    with pytest.raises(DiscoveryError):
        parse_consul_health({"not": "a list"})


def test_an_unpromoted_canary_is_known_by_its_canary_tag() -> None:
    """Nomad registers a canary with the group's canary_tags until its deployment is promoted
    (command/agent/consul/service_client.go serviceRegs); the compiler puts TAG_CANARY among them."""
    tags = ["nomadgs", "openai", "model=qwen3-8b", TAG_CANARY]
    [canary, stable] = parse_consul_health([consul_entry(tags=tags), consul_entry(service_id="b")])
    assert (canary.canary, stable.canary) == (True, False)
    assert canary.to_json()["canary"] is True
    [registered] = parse_nomad_registrations(
        [{"ID": "x", "ServiceName": "m", "AllocID": "a1", "Address": "10.1.0.2", "Port": 1, "Tags": tags}],
        {"a1": {"c": {"Service": "m", "Status": "success"}}},
    )
    assert registered.canary is True


def test_ipv6_addresses_are_bracketed_in_urls() -> None:
    [endpoint] = parse_consul_health([consul_entry(address="fd00::5")])
    assert endpoint.base_url == "http://[fd00::5]:23456/v1"


def test_worst_health() -> None:
    assert worst_health([]) == "passing"
    assert worst_health(["passing", "warning", "passing"]) == "warning"
    assert worst_health(["warning", "critical"]) == "critical"
    assert worst_health(["bogus"]) == "critical"


def test_nomad_registrations_take_health_from_allocation_checks() -> None:
    listing = [
        {"Namespace": "default", "Services": [{"ServiceName": "llama", "Tags": ["nomadgs", "model=llama-3b"]},
                                              {"ServiceName": "redis", "Tags": ["db"]}]},
        {"Namespace": "ml", "Services": [{"ServiceName": "embed", "Tags": ["nomadgs"]}]},
    ]  # fmt: skip
    assert parse_nomad_services(listing) == [("default", "llama"), ("ml", "embed")]

    def reg(alloc: str, port: int) -> dict[str, Any]:
        return {"ID": f"_nomad-task-{alloc}-srv-llama-http", "ServiceName": "llama", "Namespace": "default",
                "NodeID": "node-a", "JobID": "llama-job", "AllocID": alloc, "Address": "10.1.0.2", "Port": port,
                "Tags": ["nomadgs", "openai", "model=llama-3b", "backend=llama-box", "version=v0.0.140"]}  # fmt: skip

    def check(status: str, mode: str = "healthiness", service: str = "llama") -> dict[str, Any]:
        return {"Check": "llama health", "Mode": mode, "Service": service, "Status": status}

    checks = {
        "a1": {"c1": check("success"), "c2": check("failure", mode="readiness")},  # readiness does not count
        "a2": {"c1": check("failure")},
        "a3": {"c1": check("pending")},
        "a4": {"c1": check("success", service="other")},  # another service's check: none of ours, so passing
    }
    endpoints = parse_nomad_registrations([reg(a, 20000 + i) for i, a in enumerate(["a1", "a2", "a3", "a4", "a5"])],
                                          checks)  # fmt: skip
    assert [(e.alloc_id, e.health) for e in endpoints] == [
        ("a1", "passing"),
        ("a2", "critical"),
        ("a3", "critical"),  # not checked yet: no traffic
        ("a4", "passing"),
        ("a5", "critical"),  # the checks could not be read
    ]
    first = endpoints[0]
    assert (first.model, first.backend, first.version, first.provider) == ("llama-3b", "llama-box", "v0.0.140", "nomad")
    assert (first.node, first.job_id, first.base_url) == ("node-a", "llama-job", "http://10.1.0.2:20000/v1")


def test_routing_table_routes_only_passing_instances() -> None:
    endpoints = parse_consul_health(
        [
            consul_entry(model="a", service_id="a1"),
            consul_entry(model="a", service_id="a2", statuses=("passing", "critical")),
            consul_entry(model="b", service_id="b1", statuses=("passing", "warning")),
        ]
    )
    table = build_table(reversed(endpoints))
    assert [e.service_id for e in table.routes["a"]] == ["a1"]
    assert "b" not in table.routes and table.knows("b") and not table.knows("c")
    assert table.models == ["a", "b"]
    assert build_table(endpoints) == table  # order of the answers does not matter


# ----------------------------------------------------------------------------------------------------
# Real Consul


class ConsulServices:
    """Registers services in the real Consul agent through its HTTP API, and removes them afterwards."""

    def __init__(self, agent: ConsulAgent) -> None:
        self.address = agent.address
        self.client = httpx.Client(base_url=agent.address, timeout=5)
        self.ids: list[str] = []

    def register(
        self,
        model: str,
        port: int,
        *,
        service_id: str | None = None,
        status: str = "passing",
        http_check: str | None = None,
        check_timeout: str = "1s",
        tags: list[str] | None = None,
    ) -> str:
        """A service like the compiler's; TTL check in `status`, or an HTTP check every second on `http_check`
        (the compiler's default check timeout is 5s)."""
        service_id = service_id or f"{model}-{port}"
        check: dict[str, Any] = {"CheckID": f"check-{service_id}", "Name": "health"}
        if http_check:
            check |= {"HTTP": http_check, "Interval": "1s", "Timeout": check_timeout}
        else:
            check |= {"TTL": "10m", "Status": status}
        body = {
            "ID": service_id,
            "Name": model,
            "Address": "127.0.0.1",
            "Port": port,
            "Tags": ["nomadgs", "openai", f"model={model}", "backend=llama.cpp"] if tags is None else tags,
            "Meta": {"gpustack_model": model, "gpustack_backend": "llama.cpp", "gpustack_backend_version": "b6000",
                     "nomadgs_job": f"{model}-job"},
            "Check": check,
        }  # fmt: skip
        self.client.put("/v1/agent/service/register", json=body).raise_for_status()
        self.ids.append(service_id)
        return service_id

    def set_ttl(self, service_id: str, status: str) -> None:
        verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
        self.client.put(f"/v1/agent/check/{verb}/check-{service_id}").raise_for_status()

    def deregister(self, service_id: str) -> None:
        self.client.put(f"/v1/agent/service/deregister/{service_id}").raise_for_status()
        self.ids.remove(service_id)

    def close(self) -> None:
        for service_id in list(self.ids):
            self.deregister(service_id)
        self.client.close()


@pytest.fixture
def services(consul: ConsulAgent) -> Iterator[ConsulServices]:
    registry = ConsulServices(consul)
    yield registry
    registry.close()


def unique(prefix: str) -> str:
    """A model name no other test uses: the Consul agent lives for the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll a test condition; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - start


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_endpoints_lists_every_instance_with_health(
    services: ConsulServices, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    model = unique("listed")
    services.register(model, 31001, status="passing")
    services.register(model, 31002, status="critical")
    services.register(unique("foreign"), 31003, tags=["web"])  # not ours: never listed

    code, out, err = run(["endpoints", "--consul-address", services.address], capsys)
    assert code == 0, err
    lines = [line for line in out.splitlines() if model in line]
    assert len(lines) == 2
    assert "passing" in lines[0] and "http://127.0.0.1:31001/v1" in lines[0] and "llama.cpp b6000" in lines[0]
    assert "critical" in lines[1] and "http://127.0.0.1:31002/v1" in lines[1]
    assert out.splitlines()[0].split() == ["MODEL", "HEALTH", "BASE", "URL", "BACKEND", "NODE"]
    assert "foreign" not in out

    code, out, err = run(["endpoints", model, "--output", "json", "--consul-address", services.address], capsys)
    assert code == 0, err
    [entry] = json.loads(out)["models"]
    assert entry["model"] == model and entry["healthy"] == 1
    assert [(i["base_url"], i["health"], i["backend"], i["version"], i["job_id"]) for i in entry["instances"]] == [
        ("http://127.0.0.1:31001/v1", "passing", "llama.cpp", "b6000", f"{model}-job"),
        ("http://127.0.0.1:31002/v1", "critical", "llama.cpp", "b6000", f"{model}-job"),
    ]


def test_endpoints_exit_codes(
    services: ConsulServices, capsys: pytest.CaptureFixture[str], consul: ConsulAgent
) -> None:
    sick = unique("sick")
    services.register(sick, 31011, status="critical")

    code, out, err = run(["endpoints", sick, "--consul-address", consul.address], capsys)
    assert code == 1  # listed, but unhealthy
    assert "critical" in out and f"model '{sick}' has no healthy instance" in err

    code, out, err = run(["endpoints", sick + "x", "--consul-address", consul.address], capsys)
    assert code == 1 and out == ""
    assert f"no instance of model '{sick}x' is registered in Consul; did you mean '{sick}'?" in err

    code, _, err = run(["endpoints", "bad name!", "--consul-address", consul.address], capsys)
    assert code == 2 and "not a model name" in err

    code, _, err = run(["endpoints", "--consul-address", "ftp://127.0.0.1:1"], capsys)
    assert code == 2 and "http:// or https://" in err


def test_unreachable_consul_is_exit_5_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    code, out, err = run(["endpoints", "--consul-address", f"127.0.0.1:{port}"], capsys)
    assert code == 5 and out == ""
    # httpx's "All connection attempts failed" is said as its cause, in the words Nomad's messages use
    assert err == (
        f"error: cannot reach Consul at http://127.0.0.1:{port}: connection refused "
        "(set CONSUL_HTTP_ADDR or --consul-address)\n"
    )


def recording(address: str, record: Callable[[httpx.Response], Awaitable[None]]) -> ConsulSettings:
    """Settings whose clients hand every answer to `record` (the watcher makes its client from its settings)."""

    @dataclass(frozen=True)
    class Recorded(ConsulSettings):
        def httpx_client(self, *, timeout: float = 30.0, asynchronous: bool = False) -> Any:
            client = super().httpx_client(timeout=timeout, asynchronous=asynchronous)
            client.event_hooks["response"].append(record)
            return client

    return Recorded(address=address)


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait for `condition`, far less than the watcher's wait: the change itself must answer its query."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:g}s"
        await asyncio.sleep(0.01)


def test_watcher_follows_health_changes_with_blocking_queries(services: ConsulServices) -> None:
    model = unique("watched")
    first = services.register(model, 31021, status="passing")
    answers: list[tuple[str, int | None, int]] = []  # (path, index asked for or None, index answered)

    async def record(response: httpx.Response) -> None:
        url = response.request.url
        asked = url.params.get("index")
        answers.append((url.path, None if asked is None else int(asked), int(response.headers["X-Consul-Index"])))

    async def scenario() -> None:
        watcher = ConsulWatcher(recording(services.address, record), wait=30)
        await watcher.start()

        try:
            assert [e.port for e in watcher.table.routes[model]] == [31021]  # read at start
            second = await asyncio.to_thread(services.register, model, 31022, status="passing")
            await until(lambda: len(watcher.table.routes.get(model, ())) == 2, 20, "new instance")
            await asyncio.to_thread(services.set_ttl, first, "critical")
            await until(lambda: [e.port for e in watcher.table.routes[model]] == [31022], 20, "critical instance out")
            await asyncio.to_thread(services.deregister, second)
            await asyncio.to_thread(services.deregister, first)
            await until(lambda: not watcher.table.knows(model), 20, "service gone")
        finally:
            await watcher.stop()

    asyncio.run(scenario())
    health = f"/v1/health/service/{model}"
    followed = ("/v1/catalog/services", "/v1/health/state/any")
    assert [path for path, _, _ in answers[:3]] == [*followed, health], "read at start: the two indexes, then it"
    # Every later query on the two followed paths is a blocking one that resumes from the index of the answer
    # before it on the same path, and each answer comes from a change (a poller, or a query that ran out its
    # wait, gets the index it asked).
    for path in followed:
        chain = [(asked, answered) for p, asked, answered in answers if p == path]
        assert len(chain) >= 2, answers
        for (_, answered), (next_asked, _) in itertools.pairwise(chain):
            assert next_asked == answered, chain  # Consul's index never goes backwards here
        assert all(asked != answered for asked, answered in chain[1:]), chain
    # The service itself is read again after each change, never followed with a query of its own.
    reads = [asked for p, asked, _ in answers if p == health]
    assert len(reads) >= 3 and all(asked is None for asked in reads), answers


def test_watcher_follows_hundreds_of_services_with_two_queries(services: ConsulServices) -> None:
    """Past the client's pool of connections, one blocking query per service queued behind long polls, and a
    change waited for a poll's wait to run out (55 s at 150 services). Two queries follow any fleet: a change
    to any service is seen at once, well within the 300 s wait the watcher is given here."""
    count = 300
    prefix = unique("fleet")
    names = [f"{prefix}-{n}" for n in range(count)]
    ids = [services.register(name, 32000 + n, status="passing") for n, name in enumerate(names)]
    asked_with_index: set[str] = set()
    service_reads = 0

    async def record(response: httpx.Response) -> None:
        nonlocal service_reads
        if "index" in response.request.url.params:
            asked_with_index.add(response.request.url.path)
        elif response.request.url.path.startswith("/v1/health/service/"):
            service_reads += 1

    async def scenario() -> None:
        watcher = ConsulWatcher(recording(services.address, record), wait=300)
        await watcher.start()

        try:
            assert set(names) <= set(watcher.table.routes), "every service read at start"
            nonlocal service_reads
            service_reads = 0
            await asyncio.to_thread(services.set_ttl, ids[-1], "critical")
            await until(
                lambda: names[-1] not in watcher.table.routes, 30, "a critical instance of the last service out"
            )
            await asyncio.to_thread(services.register, names[7], 33007, status="passing")
            await until(lambda: len(watcher.table.routes.get(names[7], ())) == 2, 30, "a new instance of one service")
            await asyncio.to_thread(services.deregister, ids[150])
            await until(lambda: not watcher.table.knows(names[150]), 30, "a deregistered service gone")
            await asyncio.to_thread(services.set_ttl, ids[-1], "passing")
            await until(lambda: names[-1] in watcher.table.routes, 30, "the last service back")
        finally:
            await watcher.stop()

    asyncio.run(scenario())
    assert asked_with_index == {"/v1/catalog/services", "/v1/health/state/any"}
    # Only the services that changed are read again (each change may be seen by both queries): not the fleet.
    assert service_reads <= 16, f"{service_reads} services read again for 4 changes"


def test_the_catalogs_tags_in_another_order_are_no_change() -> None:
    """Consul lists a service's tags in no set order from one answer to the next (its union of the instances'
    tags is built from a map): 89 of 150 services were read again after an unrelated change."""
    first = parse_consul_catalog({"m": ["nomadgs", "openai", "model=m"], "web": ["http"]})
    again = parse_consul_catalog({"m": ["model=m", "nomadgs", "openai", "nomadgs"], "web": ["http"]})
    assert first == again == {"m": ("model=m", "nomadgs", "openai")}


def test_check_marks_move_with_health_tags_and_node_checks() -> None:
    def check(service_id: str, status: str, tags: list[str], node: str = "n1") -> dict[str, Any]:
        return {"Node": node, "CheckID": f"service:{service_id}", "Status": status, "ServiceID": service_id,
                "ServiceName": service_id.split("-")[0], "ServiceTags": tags}  # fmt: skip

    ours = ["nomadgs", "openai"]
    serf = {"Node": "n1", "CheckID": "serfHealth", "Status": "passing", "ServiceID": "", "ServiceName": ""}
    before = check_marks([serf, check("a-1", "passing", ours), check("b-1", "passing", ours, node="n2"),
                          check("web-1", "passing", [])])  # fmt: skip
    assert set(before) == {"a", "b"}, "only our services"
    after_health = check_marks([serf, check("a-1", "critical", ours), check("b-1", "passing", ours, node="n2")])
    assert after_health["a"] != before["a"] and after_health["b"] == before["b"]
    after_tags = check_marks([serf, check("a-1", "passing", [*ours, "canary"]), check("b-1", "passing", ours, "n2")])
    assert after_tags["a"] != before["a"], "a promoted canary loses its tag: read again"
    node_down = check_marks([{**serf, "Status": "critical"}, check("a-1", "passing", ours),
                             check("b-1", "passing", ours, node="n2")])  # fmt: skip
    assert node_down["a"] != before["a"] and node_down["b"] == before["b"], "a node's own check counts for its services"


def test_watcher_start_fails_plainly_when_consul_is_unreachable() -> None:
    watcher = ConsulWatcher(ConsulSettings(address=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(DiscoveryError) as caught:
        asyncio.run(watcher.start())
    assert caught.value.exit_code == 5 and "cannot reach Consul" in str(caught.value)


# ----------------------------------------------------------------------------------------------------
# Nomad's own services, from a fake Nomad HTTP API (no Nomad binary exists for this machine)


def fake_nomad() -> Starlette:
    alloc = ALLOC

    async def services(request: Request) -> JSONResponse:
        return JSONResponse([{"Namespace": "default", "Services": [{"ServiceName": "tiny", "Tags": ["nomadgs"]},
                                                                   {"ServiceName": "web", "Tags": []}]}])  # fmt: skip

    async def service(request: Request) -> JSONResponse:
        assert request.path_params["name"] == "tiny" and request.query_params["namespace"] == "default"
        return JSONResponse([{"ID": "_nomad-task-x", "ServiceName": "tiny", "Namespace": "default", "NodeID": "n1",
                              "JobID": "tiny-job", "AllocID": alloc, "Address": "10.2.0.1", "Port": 25000,
                              "Tags": ["nomadgs", "model=tiny-1b", "backend=vLLM"]}])  # fmt: skip

    async def checks(request: Request) -> JSONResponse:
        assert request.headers.get("x-nomad-token") == "secret-token"
        return JSONResponse({"abc": {"ID": "abc", "Mode": "healthiness", "Service": "tiny", "Status": "success"}})

    return Starlette(
        routes=[
            Route("/v1/services", services),
            Route("/v1/service/{name}", service),
            Route(f"/v1/client/allocation/{alloc}/checks", checks),
        ]
    )


def test_endpoints_from_nomad_services(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_TOKEN", "secret-token")
    monkeypatch.delenv("NOMAD_NAMESPACE", raising=False)
    with BackgroundServer(fake_nomad()) as nomad:
        code, out, err = run(["endpoints", "--provider", "nomad", "--address", nomad.url, "--output", "json"], capsys)
    assert code == 0, err
    [entry] = json.loads(out)["models"]
    [instance] = entry["instances"]
    assert entry["model"] == "tiny-1b" and entry["healthy"] == 1
    assert (instance["base_url"], instance["provider"], instance["alloc_id"]) == (
        "http://10.2.0.1:25000/v1", "nomad", ALLOC
    )  # fmt: skip
    assert "secret-token" not in out + err
