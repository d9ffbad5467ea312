"""Scale to zero and back in the gateway, against the Nomad double: held requests and one scale call, the hold
timeout, the bound on held requests, idle models scaled to 0, a 403 in words, two gateways racing, and two
gateways sharing their last activity through the real Consul (one that sees no traffic leaves the model alone).

Consul's part is played by `Follower`: it publishes the fake backend as the model's one instance in the gateway's
StaticSource while the double has a running allocation of the job (and the test opened its gate), as Consul
would once the instance's check passes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import hcl2
import httpx
import pytest

from nomad_gpustack.serving.gateway import Gateway, GatewayError, StaticSource
from nomad_gpustack.serving.gateway.activity import PREFIX
from nomad_gpustack.serving.gateway.waker import CAPABILITIES, HOLD_TIMEOUT, MAX_HELD, Waker
from nomad_gpustack.settings import ConsulSettings, NomadSettings

from ...support.components import ROOT
from ...support.hcl_reader import OPTIONS
from ...support.helpers import compile_yaml, http_json, wait_until
from ...support.helpers import sleepy_job as helpers_sleepy_job
from ...support.nomad_double import NomadDouble
from ..fakes import FakeBackend, gateway

EXAMPLE = (ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml").read_text()


def sleepy_job(idle_after: str = "1m", count: int = 0) -> dict[str, Any]:
    """The example deployment with `nomad.scaling` at min 0, compiled; its idle time shortened for the test."""
    return helpers_sleepy_job(EXAMPLE, idle_after, count)


def register(double: NomadDouble, job: dict[str, Any]) -> None:
    status, answer = http_json("PUT", f"{double.address}/v1/jobs", {"Job": job})
    assert status == 200, answer


def running(double: NomadDouble, job_id: str) -> int:
    return sum(
        1
        for a in double.allocations.values()
        if a["JobID"] == job_id and a["DesiredStatus"] == "run" and a["ClientStatus"] == "running"
    )


def count(double: NomadDouble, job_id: str) -> int:
    return int(double.jobs[f"default/{job_id}"]["TaskGroups"][0]["Count"])


def scale_posts(double: NomadDouble, job_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.body)
        for r in double.requests
        if r.method in ("POST", "PUT") and r.path == f"/v1/job/{job_id}/scale"
    ]


def events(double: NomadDouble, job_id: str, group: str) -> list[dict[str, Any]]:
    status, answer = http_json("GET", f"{double.address}/v1/job/{job_id}/scale")
    assert status == 200
    return list(answer["TaskGroups"][group]["Events"] or [])


class Follower(threading.Thread):
    """Consul's stand-in: the backend is the model's instance while the job has a running allocation and the
    gate is open (the test decides when the instance "passes its check")."""

    def __init__(
        self, double: NomadDouble, job_id: str, model: str, backend: FakeBackend, source: StaticSource
    ) -> None:
        super().__init__(daemon=True)
        self.double, self.job_id, self.model, self.backend, self.source = double, job_id, model, backend, source
        self.gate = threading.Event()
        self.done = threading.Event()

    def _state(self) -> bool:
        return self.gate.is_set() and running(self.double, self.job_id) > 0

    def run(self) -> None:
        self.published: bool | None = None
        while not self.done.is_set():
            with self.double.cluster.state.cond:  # woken by every change of Nomad's state, and by open()
                self.double.cluster.state.cond.wait_for(self._changed, 0.2)
            now = self._state()
            if now != self.published:
                self.published = now
                self.source.set([self.backend.endpoint(self.model)] if now else [])

    def _changed(self) -> bool:
        return self._state() != self.published or self.done.is_set()

    def open(self) -> None:
        self.gate.set()
        with self.double.cluster.state.cond:
            self.double.cluster.state.cond.notify_all()


@pytest.fixture
def double() -> Iterator[NomadDouble]:
    with NomadDouble() as running_double:
        yield running_double


@contextmanager
def sleepy_gateway(
    double: NomadDouble, backend: FakeBackend, job: dict[str, Any], *, token: str | None = None, **options: Any
) -> Iterator[tuple[httpx.Client, Gateway, Follower]]:
    model = job["Meta"]["gpustack_model"]
    source = StaticSource()
    follower = Follower(double, job["ID"], model, backend, source)
    follower.start()
    waker = Waker(NomadSettings(address=double.address, token=token), **options)
    try:
        with gateway(source, waker=waker) as (client, gw):
            yield client, gw, follower
    finally:
        follower.done.set()
        follower.join(5)


def ask(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return client.post("/v1/chat/completions", json=body, timeout=60)


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """A sample of the gateway's /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            found = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if found == want:
                return float(value)
    return 0.0


def test_defaults_match_the_cli() -> None:
    from nomad_gpustack.cli.endpoint_cmds import gateway as command
    from nomad_gpustack.durations import SECOND, parse_duration

    defaults = {p.name: p.default for p in command.params}
    assert parse_duration(str(defaults["hold_timeout"])) / SECOND == HOLD_TIMEOUT
    assert defaults["max_held"] == MAX_HELD


def test_twenty_held_requests_cause_one_scale_call_and_are_all_answered(
    double: NomadDouble, backends: Callable[..., FakeBackend]
) -> None:
    job = sleepy_job()
    register(double, job)
    model, group = job["Meta"]["gpustack_model"], job["TaskGroups"][0]["Name"]
    with sleepy_gateway(double, backends("A"), job) as (client, gw, follower), ThreadPoolExecutor(20) as pool:
        # Nomad is followed by one blocking query on the job list, filtered to the jobs nomadgs compiled.
        double.wait_for_held("/v1/jobs", timeout=10)
        (listing,) = {
            tuple(r.query.get("filter", [])) for r in double.requests if r.method == "GET" and r.path == "/v1/jobs"
        }
        assert listing == ('Meta.nomadgs_managed == "true"',)
        # The model at 0 is listed, with 0 instances.
        assert [(m["id"], m["instances"]) for m in client.get("/v1/models").json()["data"]] == [(model, 0)]
        answers = [pool.submit(ask, client, model) for _ in range(20)]
        assert gw.waker is not None
        wait_until(lambda: gw.waker is not None and gw.waker.held(model) == 20, 30, "20 requests held")
        assert metric(client, "nomadgs_gateway_requests_held", model=model) == 20
        double.wait_for(lambda d: running(d, job["ID"]) == 1, 30)  # scaled and placed; not routed yet
        follower.open()  # the instance passes its check
        results = [a.result() for a in answers]
        assert [r.status_code for r in results] == [200] * 20
        assert {r.json()["served_by"] for r in results} == {"A"}
        assert metric(client, "nomadgs_gateway_requests_held", model=model) == 0
        assert metric(client, "nomadgs_gateway_scale_calls_total", model=model, direction="up", outcome="scaled") == 1
        assert metric(client, "nomadgs_gateway_wakeups_total", model=model, outcome="scaled") == 1
    # Besides the job list, only the scale endpoint was asked about the job (no watch per job).
    paths = {r.path for r in double.requests if r.path.startswith("/v1/job")}
    assert paths == {"/v1/jobs", f"/v1/job/{job['ID']}/scale"}
    (post,) = scale_posts(double, job["ID"])
    assert post["Count"] == 1 and post["Target"] == {"Job": job["ID"], "Group": group}
    assert post["Meta"]["nomadgs_reason"] == "request" and model in post["Message"]
    assert count(double, job["ID"]) == 1
    assert events(double, job["ID"], group)[0]["Meta"]["nomadgs_reason"] == "request"


def test_a_request_held_too_long_is_a_503_with_retry_after(
    double: NomadDouble, backends: Callable[..., FakeBackend]
) -> None:
    job = sleepy_job()
    register(double, job)
    model = job["Meta"]["gpustack_model"]
    with sleepy_gateway(double, backends("A"), job, hold_timeout=0.5) as (client, _, _):  # the gate never opens
        response = ask(client, model)
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    error = response.json()["error"]
    assert error["code"] == "model_starting" and "scaled to zero" in error["message"]


def test_a_model_whose_job_runs_without_a_passing_instance_is_unavailable_not_unknown(
    double: NomadDouble, backends: Callable[..., FakeBackend]
) -> None:
    """While a model's instances are all down (a crash, a distributed replica restarting as a whole, when Nomad
    deregisters the leader's service), Consul no longer lists it: the job list still does, so the answer is 503
    no_healthy_instance (try again), not 404 model_not_found. A model no job runs stays 404."""
    job: dict[str, Any] = compile_yaml(EXAMPLE).job  # type: ignore[assignment]
    register(double, job)
    model = job["Meta"]["gpustack_model"]
    with sleepy_gateway(double, backends("A"), job) as (client, _, _):  # the gate never opens: no instance
        down, unknown = ask(client, model), ask(client, "no-such-model")
    assert down.status_code == 503 and down.json()["error"]["code"] == "no_healthy_instance"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_more_held_requests_than_max_held_are_refused_with_429(
    double: NomadDouble, backends: Callable[..., FakeBackend]
) -> None:
    job = sleepy_job()
    register(double, job)
    model = job["Meta"]["gpustack_model"]
    with (
        sleepy_gateway(double, backends("A"), job, max_held=2) as (client, gw, follower),
        ThreadPoolExecutor(2) as pool,
    ):
        held = [pool.submit(ask, client, model) for _ in range(2)]
        wait_until(lambda: gw.waker is not None and gw.waker.held(model) == 2, 30, "2 requests held")
        refused = ask(client, model)
        follower.open()
        assert [h.result().status_code for h in held] == [200, 200]
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "too_many_waiting"


def ended(gw: Gateway, model: str) -> None:
    """Wait until the gateway counts no request in flight: a request ends after its answer is sent, and the
    clock must move only once it has."""
    waker = gw.waker
    assert waker is not None
    wait_until(lambda: waker.active(model) == 0, 10, "the requests to end")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_model_is_scaled_to_zero_but_never_with_a_request_in_flight(
    double: NomadDouble, backends: Callable[..., FakeBackend]
) -> None:
    job = sleepy_job(idle_after="1s", count=1)
    register(double, job)
    model, group = job["Meta"]["gpustack_model"], job["TaskGroups"][0]["Name"]
    backend = backends("A")
    clock = FakeClock()
    with sleepy_gateway(double, backend, job, clock=clock) as (client, gw, follower), ThreadPoolExecutor(1) as pool:
        follower.open()
        double.wait_for(lambda d: running(d, job["ID"]) == 1, 30)
        wait_until(lambda: [m["instances"] for m in client.get("/v1/models").json()["data"]] == [1], 30, "routed")
        # Nomad blocks scaling while a deployment runs: the test's clock jumps only after the first one ended.
        double.wait_for(lambda d: all(x["Status"] != "running" for x in d.deployments.values()), 60)
        waker = gw.waker
        assert waker is not None
        slow = pool.submit(ask, client, model, hold=True)  # in flight until the backend is released
        assert backend.holding.wait(10)
        clock.now += 3600  # an hour without a new request, but one is in flight
        passes = waker.idle_passes
        wait_until(lambda: waker.idle_passes >= passes + 2, 10, "two idle checks")
        assert count(double, job["ID"]) == 1 and not scale_posts(double, job["ID"])
        backend.release.set()
        assert slow.result().status_code == 200
        ended(gw, model)
        clock.now += 2  # the request ended 2 s ago
        double.wait_for(lambda d: count(d, job["ID"]) == 0, 30)
        double.wait_for(lambda d: running(d, job["ID"]) == 0, 30)
        down = {"model": model, "direction": "down", "outcome": "scaled"}
        # Counted when Nomad's answer is back, which may be after the double changed the count.
        wait_until(lambda: metric(client, "nomadgs_gateway_scale_calls_total", **down) == 1, 10, "the call counted")
    (post,) = scale_posts(double, job["ID"])
    assert post["Count"] == 0 and post["Meta"]["nomadgs_reason"] == "idle" and "no request" in post["Message"]
    assert events(double, job["ID"], group)[0]["Meta"]["nomadgs_idle_after"] == "1s"


def test_a_403_is_explained_with_the_token_and_the_capabilities(
    backends: Callable[..., FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    job = sleepy_job()
    model = job["Meta"]["gpustack_model"]
    with (
        caplog.at_level("ERROR", "nomadgs.gateway"),
        NomadDouble(acl_tokens={"admin": "management", "reader": "read"}) as double,
    ):
        http = httpx.Client(headers={"X-Nomad-Token": "admin"})
        assert http.put(f"{double.address}/v1/jobs", json={"Job": job}).status_code == 200
        # No token: the job list itself is refused, before the gateway listens.
        waker = Waker(NomadSettings(address=double.address))
        with pytest.raises(GatewayError) as refused:
            asyncio.run(Gateway(StaticSource(), waker=waker).start())
        text = str(refused.value)
        assert "no token" in text and "list-jobs, read-job, scale-job" in text and "namespace 'default'" in text
        assert "examples/acl/nomadgs-gateway.policy.hcl" in text
        # A token that may read but not scale: the held request is answered in words.
        with sleepy_gateway(double, backends("A"), job, token="reader") as (client, _, _):
            response = ask(client, model)
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "403" in message and "NOMAD_TOKEN" in message and "scale-job" in message
    assert "scale job" in caplog.text and "list-jobs, read-job, scale-job" in caplog.text


def test_two_gateways_racing_to_wake_a_model_scale_it_once(
    double: NomadDouble, backends: Callable[..., FakeBackend]
) -> None:
    job = sleepy_job()
    register(double, job)
    model, group = job["Meta"]["gpustack_model"], job["TaskGroups"][0]["Name"]
    # Both gateways read the count (0) before either scales: each read is answered once both were made.
    both_read = threading.Barrier(2)
    double.after_request("GET", rf"/v1/job/{job['ID']}/scale", lambda: both_read.wait(20), count=2)
    backend = backends("A")
    with ExitStack() as stack, ThreadPoolExecutor(20) as pool:
        one = stack.enter_context(sleepy_gateway(double, backend, job))
        two = stack.enter_context(sleepy_gateway(double, backend, job))
        answers = [pool.submit(ask, client, model) for client, _, _ in (one, two) for _ in range(10)]
        double.wait_for(lambda d: running(d, job["ID"]) == 1, 30)
        one[2].open()
        two[2].open()
        assert [a.result().status_code for a in answers] == [200] * 20
        scaled = [metric(c, "nomadgs_gateway_wakeups_total", model=model, outcome="scaled") for c, _, _ in (one, two)]
        joined = [metric(c, "nomadgs_gateway_wakeups_total", model=model, outcome="joined") for c, _, _ in (one, two)]
        # The loser's call is refused: by the check-and-set (conflict), or, when the winner's deployment is
        # already open, as Nomad blocks scaling during a deployment (refused); either way it joins.
        lost = [
            sum(
                metric(c, "nomadgs_gateway_scale_calls_total", model=model, direction="up", outcome=outcome)
                for outcome in ("conflict", "refused")
            )
            for c, _, _ in (one, two)
        ]
    assert sorted(scaled) == [0, 1] and sorted(joined) == [0, 1] and sorted(lost) == [0, 1]
    # Two calls were sent, one was refused: one scaling event, one new job version.
    assert [p["Count"] for p in scale_posts(double, job["ID"])] == [1, 1]
    assert [e["Count"] for e in events(double, job["ID"], group)] == [1]
    assert count(double, job["ID"]) == 1 and double.jobs[f"default/{job['ID']}"]["Version"] == 1


def policy_capabilities() -> list[str]:
    """The capabilities the shipped ACL policy grants on the default namespace."""
    text = (ROOT / "examples" / "acl" / "nomadgs-gateway.policy.hcl").read_text()
    document = hcl2.loads(text, serialization_options=OPTIONS)
    ((namespace,),) = [list(block.items()) for block in document["namespace"]]
    assert namespace[0] == "default"
    return list(namespace[1]["capabilities"])


def test_the_shipped_acl_policy_is_what_the_gateway_needs(backends: Callable[..., FakeBackend]) -> None:
    capabilities = policy_capabilities()
    assert sorted(capabilities) == sorted(CAPABILITIES)  # what a 403 tells to grant
    job = sleepy_job(idle_after="1s")
    model = job["Meta"]["gpustack_model"]
    clock = FakeClock()
    with NomadDouble(acl_tokens={"admin": "management", "gateway": " ".join(capabilities)}) as double:
        http = httpx.Client(headers={"X-Nomad-Token": "admin"})
        assert http.put(f"{double.address}/v1/jobs", json={"Job": job}).status_code == 200
        with sleepy_gateway(double, backends("A"), job, token="gateway", clock=clock) as (client, _, follower):
            follower.open()
            assert ask(client, model).status_code == 200  # woken: list, read, scale up
            # Nomad blocks scaling while the deployment the wake opened runs: wait for its end.
            double.wait_for(lambda d: all(x["Status"] != "running" for x in d.deployments.values()), 60)
            clock.now += 3600
            double.wait_for(lambda d: count(d, job["ID"]) == 0, 30)  # scaled down
    # Without any one of them, Nomad refuses something the gateway does.
    for missing in capabilities:
        rest = " ".join(c for c in capabilities if c != missing)
        with NomadDouble(acl_tokens={"admin": "management", "gateway": rest}) as double:
            http = httpx.Client(headers={"X-Nomad-Token": "admin"})
            assert http.put(f"{double.address}/v1/jobs", json={"Job": job}).status_code == 200
            try:
                with sleepy_gateway(double, backends("B"), job, token="gateway", hold_timeout=5) as (client, _, f):
                    f.open()
                    status = ask(client, model).status_code
            except RuntimeError as exc:  # the server did not start: its lifespan failed
                assert "did not start" in str(exc)
                status = 0  # could not even list the jobs
        assert status != 200, f"{missing} is not needed"


# --- several gateways in front of one model: their last activity shared through the real Consul -------------


@pytest.fixture
def kv(consul: Any) -> Iterator[ConsulSettings]:
    """The session's real Consul, without any activity record of an earlier test."""
    settings = ConsulSettings(address=consul.address)
    assert httpx.delete(f"{consul.address}/v1/kv/{PREFIX}", params={"recurse": "true"}).status_code == 200
    yield settings
    httpx.delete(f"{consul.address}/v1/kv/{PREFIX}", params={"recurse": "true"})


def records(consul: ConsulSettings, model: str) -> dict[str, float]:
    """The activity records of `model` in Consul: gateway ID -> time."""
    answer = httpx.get(f"{consul.address}/v1/kv/{PREFIX}{model}/", params={"recurse": "true"})
    if answer.status_code == 404:
        return {}
    return {e["Key"].rsplit("/", 1)[1]: float(base64.b64decode(e["Value"]).decode()) for e in answer.json()}


def ready(double: NomadDouble, job: dict[str, Any], *gateways: tuple[httpx.Client, Gateway, Follower]) -> None:
    """The job's one instance runs, every gateway routes to it, and its deployment is over (Nomad blocks scaling
    while one runs)."""
    for _, _, follower in gateways:
        follower.open()
    double.wait_for(lambda d: running(d, job["ID"]) == 1, 30)
    for client, _, _ in gateways:
        wait_until(lambda c=client: [m["instances"] for m in c.get("/v1/models").json()["data"]] == [1], 30, "routed")
    double.wait_for(lambda d: all(x["Status"] != "running" for x in d.deployments.values()), 60)


def passes(gw: Gateway, n: int = 2) -> None:
    """Wait for `n` more passes of the gateway's idle check (the last one saw the clock as it is now)."""
    waker = gw.waker
    assert waker is not None
    start = waker.idle_passes
    wait_until(lambda: waker.idle_passes >= start + n, 20, f"{n} idle checks")


Gateways = tuple[httpx.Client, Gateway, "Follower"]


@contextmanager
def two_idle_gateways(
    double: NomadDouble, backends: Callable[..., FakeBackend], kv: ConsulSettings
) -> Iterator[tuple[dict[str, Any], FakeClock, Gateways, Gateways]]:
    """A model running at 1 that scales to zero after 1s, behind two gateways sharing Consul's KV and one clock
    (the hosts' clocks: one, as NTP keeps them within far less than idle_after); both ready."""
    job = sleepy_job(idle_after="1s", count=1)
    register(double, job)
    backend = backends("A")
    clock = FakeClock()
    options: dict[str, Any] = {"clock": clock, "wall": clock, "consul": kv}
    with ExitStack() as stack:
        one = stack.enter_context(sleepy_gateway(double, backend, job, **options))
        two = stack.enter_context(sleepy_gateway(double, backend, job, **options))
        ready(double, job, one, two)
        yield job, clock, one, two


def test_a_gateway_without_traffic_leaves_alone_a_model_another_serves(
    double: NomadDouble, backends: Callable[..., FakeBackend], kv: ConsulSettings
) -> None:
    with two_idle_gateways(double, backends, kv) as (job, clock, one, two):
        model = job["Meta"]["gpustack_model"]
        # Traffic through gateway one only, for 5 times idle_after: gateway two sees none at all.
        for _ in range(12):
            clock.now += 0.4
            assert ask(one[0], model).status_code == 200
            passes(two[1])
        assert count(double, job["ID"]) == 1 and not scale_posts(double, job["ID"])
        # Gateway one's record holds its last request (each came an interval after the one before); two's, written
        # as it looked, holds its start: its own last activity.
        assert one[1].waker is not None and one[1].waker.activity is not None
        assert two[1].waker is not None and two[1].waker.activity is not None
        found = records(kv, model)
        assert found[one[1].waker.activity.id] == pytest.approx(clock.now, abs=0.001)
        assert found[two[1].waker.activity.id] <= 1000.4
        ended(one[1], model)
        # Both quiet: gateway one's own idle time passes, and it alone may and does scale the model to zero...
        clock.now += 1.1
        double.wait_for(lambda d: count(d, job["ID"]) == 0, 30)
        # ...once: gateway two finds it at 0 already, however long the quiet lasts.
        for _ in range(3):
            clock.now += 2
            passes(one[1])
            passes(two[1])
    # One scaling event: a second gateway judging at the same tick is refused by Nomad's check-and-set.
    assert [e["Count"] for e in events(double, job["ID"], "inference")] == [0]
    assert 1 <= len(scale_posts(double, job["ID"])) <= 2
    assert records(kv, model) == {}  # deleted after the scale to zero, and as the gateways stopped


def test_a_request_in_flight_at_another_gateway_keeps_the_model_up(
    double: NomadDouble, backends: Callable[..., FakeBackend], kv: ConsulSettings
) -> None:
    with two_idle_gateways(double, backends, kv) as (job, clock, one, two), ThreadPoolExecutor(1) as pool:
        model = job["Meta"]["gpustack_model"]
        backend = one[2].backend
        slow = pool.submit(ask, one[0], model, hold=True)  # in flight at gateway one until released
        assert backend.holding.wait(10)
        # Five times idle_after, in steps shorter than the records' margin (time passes for both gateways at once):
        # gateway one's record follows while its request goes on.
        for _ in range(12):
            clock.now += 0.4
            passes(one[1])
            passes(two[1])
        assert count(double, job["ID"]) == 1 and not scale_posts(double, job["ID"])
        backend.release.set()
        assert slow.result().status_code == 200
        ended(one[1], model)
        clock.now += 1.1
        double.wait_for(lambda d: count(d, job["ID"]) == 0, 30)
    # Both gateways judge at the same tick and may both read the count before either scales: Nomad's check-and-set
    # on the job's modify index lets one scale through and refuses the other (no second scaling event).
    assert 1 <= len(scale_posts(double, job["ID"])) <= 2
    assert [e["Count"] for e in events(double, job["ID"], "inference")] == [0]


def test_activity_is_written_at_most_once_per_interval_whatever_the_traffic(
    double: NomadDouble, backends: Callable[..., FakeBackend], kv: ConsulSettings
) -> None:
    job = sleepy_job(idle_after="1m", count=1)  # a write at most every 15 s
    register(double, job)
    model = job["Meta"]["gpustack_model"]
    clock = FakeClock()
    with sleepy_gateway(double, backends("A"), job, clock=clock, wall=clock, consul=kv) as (client, gw, follower):
        ready(double, job, (client, gw, follower))
        assert gw.waker is not None and gw.waker.activity is not None
        writes: list[str] = []

        async def counted(request: httpx.Request) -> None:
            if request.method == "PUT":
                writes.append(request.url.path)

        gw.waker.activity._http.event_hooks["request"].append(counted)
        key = f"/v1/kv/{PREFIX}{model}/{gw.waker.activity.id}"
        for step, written in ((0, 1), (10, 1), (6, 2), (0, 2), (30, 3)):
            clock.now += step
            for _ in range(25):
                assert ask(client, model).status_code == 200
            wait_until(lambda: records(kv, model).get(gw.waker.activity.id) is not None, 10, "the record")  # type: ignore[union-attr]
            assert writes == [key] * written, (step, writes)
        # The last write holds the time of the first request after a quiet spell (unix seconds, as written).
        assert records(kv, model) == {gw.waker.activity.id: clock.now}
