"""The Nomad client against the double: request shapes, blocking reads, and errors mapped to the hierarchy."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nomad_gpustack.errors import EXIT_BAD_INPUT, EXIT_CONNECTION, EXIT_FAILURE
from nomad_gpustack.nomad import client as client_module
from nomad_gpustack.nomad import runner
from nomad_gpustack.nomad.client import (
    IndexConflict,
    JobRefused,
    NomadAPI,
    NomadDenied,
    NomadError,
    NomadRejected,
    NomadUnavailable,
    NotNomad,
    TransientError,
    multierror_lines,
)
from nomad_gpustack.nomad.responses import JobStub
from nomad_gpustack.settings import NomadSettings

from ..support.components import ROOT, free_port
from ..support.helpers import answering, compile_yaml, static_files
from ..support.nomad_double import NomadDouble, scenarios

EXAMPLE = (ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml").read_text()


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble() as double:
        double.default_scenario = scenarios.manual()
        yield double


def api_for(nomad: NomadDouble, retry_for: float = 60.0, **settings: str) -> NomadAPI:
    return NomadAPI(NomadSettings(address=nomad.address, **settings), retry_for=retry_for)  # type: ignore[arg-type]


def test_register_plan_and_read_back(nomad: NomadDouble) -> None:
    job = compile_yaml(EXAMPLE).job
    api = api_for(nomad)
    assert api.job(job["ID"]) is None, "a missing job is None, not an error"
    plan = api.plan(job)
    assert plan.Diff is not None and plan.Diff.Type == "Added"
    registered = api.register(job, modify_index=plan.JobModifyIndex)
    assert registered.EvalID
    stub = api.job(job["ID"])
    assert stub is not None and stub.Version == 0 and stub.Meta["nomadgs_managed"] == "true"
    assert api.latest_evaluation(job["ID"]) == registered.EvalID
    (body,) = [json.loads(r.body) for r in nomad.requests if r.method == "POST" and r.path == f"/v1/job/{job['ID']}"]
    assert body["EnforceIndex"] is True and body["JobModifyIndex"] == 0
    plan_body = next(json.loads(r.body) for r in nomad.requests if r.path.endswith("/plan"))
    assert plan_body["Diff"] is True, "plans ask for the field diff"


def test_register_with_a_stale_index_is_a_conflict(nomad: NomadDouble) -> None:
    job = compile_yaml(EXAMPLE).job
    api = api_for(nomad)
    api.register(job, modify_index=0)
    with pytest.raises(IndexConflict) as caught:
        api.register(job, modify_index=0)
    assert "changed since it was planned" in str(caught.value) and caught.value.exit_code == EXIT_FAILURE


def test_namespace_and_region_go_on_every_request(nomad: NomadDouble) -> None:
    job = compile_yaml(EXAMPLE).job
    api = api_for(nomad, namespace="inference", region="eu")
    api.register(job, modify_index=0)

    async def read() -> None:
        async with api.async_client() as http:
            await api.allocations(http, job["ID"])

    asyncio.run(read())
    scoped = [r for r in nomad.requests if r.path.startswith("/v1/job/")]
    assert scoped and all(r.query.get("namespace") == ["inference"] for r in scoped), scoped
    assert all(r.query.get("region") == ["eu"] for r in scoped)
    assert f"inference/{job['ID']}" in nomad.jobs


def test_a_refused_token_is_said_to_be_unknown_or_without_the_capability() -> None:
    """Nomad answers an unknown token as a missing capability, 403 Permission denied (nomad/auth/auth.go
    Authenticate); the double does too: nomadgs says both causes, and never the token."""
    with NomadDouble(acl_tokens={"right-token": "read"}) as nomad:
        api = api_for(nomad, retry_for=0, token="wrong-token-123")
        with pytest.raises(NomadDenied) as caught:
            api.job("anything")
    message = str(caught.value)
    assert message.startswith("Nomad refused the request (Permission denied): the token is unknown to this cluster")
    assert "lacks the capability" in message and "check NOMAD_TOKEN" in message
    assert "wrong-token-123" not in message and caught.value.exit_code == EXIT_CONNECTION


def test_blocking_read_sends_index_and_wait_and_returns_the_new_index(nomad: NomadDouble) -> None:
    job = compile_yaml(EXAMPLE).job
    nomad.set_scenario(job["ID"], scenarios.manual())  # placed, then nothing changes until the test acts
    api = api_for(nomad)
    api.register(job, modify_index=0)
    path = f"/v1/job/{job['ID']}"

    async def read() -> tuple[int, int]:
        async with api.async_client() as http:
            _, first = await api.get(http, path, JobStub)
            waiting = asyncio.create_task(api.get(http, path, JobStub, index=first))
            await asyncio.to_thread(nomad.wait_for_held, path, 30)  # the double holds it open now (a loaded CI box)
            nomad.modify_job(job["ID"])
            _, second = await asyncio.wait_for(waiting, 30)
            return first, second

    first, second = asyncio.run(read())
    assert second > first > 0
    blocking = [r for r in nomad.requests if "index" in r.query]
    assert blocking[-1].query["index"] == [str(first)] and blocking[-1].query["wait"] == ["5m"]


@pytest.mark.parametrize(
    ("status", "body", "kind", "code", "words"),
    [
        (403, "Permission denied", NomadDenied, EXIT_CONNECTION, "no token was sent: set NOMAD_TOKEN"),
        (403, "ACL token not found", NomadDenied, EXIT_CONNECTION, "not a known ACL token"),
        (400, "bad request body", NomadRejected, EXIT_BAD_INPUT, "Nomad rejected the request: bad request body"),
        (500, "No cluster leader", NomadUnavailable, EXIT_CONNECTION, "unavailable: it answered 500: No cluster"),
    ],
)
def test_error_statuses_map_to_the_hierarchy(
    nomad: NomadDouble, status: int, body: str, kind: type[NomadError], code: int, words: str
) -> None:
    nomad.faults.fail(r"^/v1/job/", status=status, body=body, count=2)
    api = api_for(nomad, retry_for=0)  # no time to retry a 500
    with pytest.raises(kind) as caught:
        api.job("anything")
    assert caught.value.exit_code == code and words in str(caught.value)

    async def watch_read() -> None:
        async with api.async_client() as http:
            await api.allocations(http, "anything")

    with pytest.raises(kind):  # the httpx side maps the same statuses the same way
        asyncio.run(watch_read())


def test_unreachable_nomad_is_exit_5_with_the_address() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    api = NomadAPI(NomadSettings(address=address))
    with pytest.raises(NomadUnavailable) as caught:
        api.job("x")
    assert caught.value.exit_code == EXIT_CONNECTION
    assert f"cannot reach Nomad at {address}: connection refused" in str(caught.value)
    assert isinstance(caught.value, TransientError), "unreachable is retried before it is reported"


def test_a_token_is_sent_as_a_header_and_never_in_the_url() -> None:
    with NomadDouble(acl_tokens={"s3cret": "management"}) as nomad:
        api = api_for(nomad, token="s3cret")
        assert api.job("missing") is None
        (request,) = nomad.requests
        assert "s3cret" not in request.path + json.dumps(request.query)
        assert "s3cret" not in repr(api.settings)


def test_reads_retry_passing_failures_and_say_how_long_they_tried(nomad: NomadDouble) -> None:
    heard: list[str] = []
    api = NomadAPI(NomadSettings(address=nomad.address), retry_for=60, on_retry=heard.append)
    nomad.faults.fail(r"^/v1/job/", status=500, body="No cluster leader", count=2)
    nomad.faults.drop(r"^/v1/job/", count=1)
    assert api.job("missing") is None, "two 500s and a dropped connection, then the answer"
    assert len(heard) == 3 and "No cluster leader; trying again in" in heard[0]

    async def plain_read() -> None:
        async with api.async_client() as http:
            await api.allocations(http, "missing")

    nomad.faults.fail(r"/allocations$", status=503, body="rpc error: eof", count=1)
    asyncio.run(plain_read())
    assert "rpc error: eof" in heard[-1], "the httpx reads retry too"

    impatient = NomadAPI(NomadSettings(address=nomad.address), retry_for=1.0)
    nomad.faults.fail(r"^/v1/jobs$", status=500, body="No cluster leader", count=1000)
    with pytest.raises(TransientError, match=r"No cluster leader \(tried \d+ times over [01]s\)"):
        impatient.jobs()


def test_an_address_that_never_answered_is_not_retried() -> None:
    heard: list[str] = []
    api = NomadAPI(NomadSettings(address=f"http://127.0.0.1:{free_port()}"), on_retry=heard.append)
    with pytest.raises(NomadUnavailable, match="connection refused"):
        api.job("x")
    assert heard == [], "connection refused from an address that never answered fails at once"


def test_writes_are_not_retried(nomad: NomadDouble) -> None:
    job = compile_yaml(EXAMPLE).job
    api = api_for(nomad)
    nomad.faults.fail(rf"^/v1/job/{job['ID']}$", status=500, body="No cluster leader", method="POST")
    with pytest.raises(TransientError):
        api.register(job, modify_index=0)
    assert sum(1 for r in nomad.requests if r.method == "POST") == 1


def _every_call(api: NomadAPI, job: Any) -> dict[str, Callable[[], object]]:
    """Every call of the client that reads an answer of Nomad, by name."""

    def async_call(read: Callable[[Any], Awaitable[object]]) -> Callable[[], object]:
        async def run() -> object:
            async with api.async_client() as http:
                return await read(http)

        return lambda: asyncio.run(run())

    return {
        "validate": lambda: api.validate(job),
        "plan": lambda: api.plan(job),
        "register": lambda: api.register(job, modify_index=0),
        "job": lambda: api.job("x"),
        "latest_evaluation": lambda: api.latest_evaluation("x"),
        "jobs": api.jobs,
        "stop": lambda: api.stop("x"),
        "versions": lambda: api.versions("x"),
        "deployment": lambda: api.deployment("x"),
        "promote": lambda: api.promote("d"),
        "revert": lambda: api.revert("x", 0, prior_version=1),
        "evaluation": async_call(lambda http: api.evaluation(http, "e")),
        "allocations": async_call(lambda http: api.allocations(http, "x")),
        "latest_deployment": async_call(lambda http: api.latest_deployment(http, "x")),
        "allocation": async_call(lambda http: api.allocation(http, "a")),
        "nodes": async_call(api.nodes),
        "node": async_call(lambda http: api.node(http, "n")),
    }


@pytest.mark.parametrize("call", list(_every_call(NomadAPI(NomadSettings()), {"ID": "j"})))
def test_json_of_another_shape_is_not_nomad(call: str) -> None:
    """A server that answers JSON of its own to every request is not Nomad: said at once, as for a web page."""
    job = compile_yaml(EXAMPLE).job
    with answering(200, "application/json", '{"unexpected": "shape"}') as address:
        api = NomadAPI(NomadSettings(address=address))
        with pytest.raises(NotNomad) as caught:
            _every_call(api, job)[call]()
    message = str(caught.value)
    assert message.startswith(f"{address} is not a Nomad HTTP API (the answer to /v1/"), message
    assert message.endswith("); check NOMAD_ADDR or --address") and caught.value.exit_code == EXIT_CONNECTION


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"unexpected": "shape"}', "the answer to /v1/job/x has no 'ID'"),
        ('[{"ID": "x"}]', "the answer to /v1/job/x is not an object"),
        ('{"ID": "x", "Version": "two"}', "'Version' in the answer to /v1/job/x is not a whole number"),
        ("this is not JSON", "the answer to /v1/job/x is not JSON"),
        ('{"ID": "x"', "the answer to /v1/job/x is not JSON"),  # cut short: the raw bytes fail to parse
        ("", "the answer to /v1/job/x is not JSON"),
    ],
)
def test_what_does_not_fit_is_said_in_plain_words(body: str, words: str) -> None:
    with answering(200, "application/json", body) as address:
        api = NomadAPI(NomadSettings(address=address))
        with pytest.raises(NotNomad, match=f"^{address} is not a Nomad HTTP API \\({words}\\);"):
            api.job("x")

        async def read() -> None:
            async with api.async_client() as http:
                await api.get(http, "/v1/job/x", JobStub)

        with pytest.raises(NotNomad, match=f"\\({words}\\);"):
            asyncio.run(read())


def test_a_plain_web_server_is_not_nomad_and_is_asked_once(tmp_path: Path) -> None:
    """`python3 -m http.server` answers a POST with 501: not an outage of Nomad, so not retried."""
    job = compile_yaml(EXAMPLE).job
    with static_files(tmp_path) as (address, received):
        api = NomadAPI(NomadSettings(address=address))
        with pytest.raises(NotNomad, match=r"\(501 text/html on /v1/validate/job\)"):
            api.validate(job)
        assert received == ["POST /v1/validate/job"]
    with answering(405, "text/plain", "Method Not Allowed") as address:
        api = NomadAPI(NomadSettings(address=address))
        with pytest.raises(NotNomad, match=r"\(405 text/plain on /v1/job/x\)"):
            api.job("x")


class FakeClock:
    """`time` for the client and the runner: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(client_module, "time", fake)
    monkeypatch.setattr(runner, "time", fake)
    return fake


def test_retries_keep_to_the_deadline(nomad: NomadDouble, clock: FakeClock) -> None:
    """A read retries a 5xx for `retry_for` seconds, but never waits past the deadline (--timeout)."""
    nomad.faults.fail(r"^/v1/job/", status=500, body="No cluster leader", count=1000)
    api = NomadAPI(NomadSettings(address=nomad.address), retry_for=60, deadline=clock.now + 5)
    with pytest.raises(NomadUnavailable, match=r"it answered 500: No cluster leader \(tried \d+ times over [0-5]s\)"):
        api.job("x")
    assert 0 < sum(clock.slept) <= 5, clock.slept
    assert len(nomad.requests) == len(clock.slept) + 1


def test_register_resends_keep_to_the_deadline(nomad: NomadDouble, clock: FakeClock) -> None:
    """The resends of a register whose answer was lost wait no longer than the deadline either."""
    compiled = compile_yaml(EXAMPLE)
    nomad.faults.fail(rf"^/v1/job/{compiled.job_id}$", status=500, body="No cluster leader", count=1000)
    api = NomadAPI(NomadSettings(address=nomad.address), deadline=clock.now + 1)

    class Notes:
        def info(self, message: str) -> None:
            pass

        warning = info

    with pytest.raises(NomadUnavailable) as caught:
        runner.register(api, compiled, 0, Notes())
    assert sum(clock.slept) <= 1, clock.slept
    posts = [r for r in nomad.requests if r.method == "POST"]
    assert len(posts) == len(clock.slept) + 1 < runner.REGISTER_ATTEMPTS
    assert caught.value.exit_code == EXIT_CONNECTION


def test_a_job_nomad_refuses_is_final(nomad: NomadDouble) -> None:
    """Nomad refuses an invalid job at plan and register with a 500 listing the problems: bad input, at once."""
    job = copy.deepcopy(compile_yaml(EXAMPLE).job)
    group = job["TaskGroups"][0]
    task = group["Tasks"][-1]
    task["Resources"]["CPU"] = 0
    task["Resources"]["MemoryMB"] = 1
    api = api_for(nomad)
    for call in (lambda: api.plan(job), lambda: api.register(job, modify_index=0)):
        with pytest.raises(JobRefused) as caught:
            call()
        assert caught.value.exit_code == EXIT_BAD_INPUT
        prefix = f"Task group {group['Name']} validation failed: Task {task['Name']} validation failed: "
        assert caught.value.problems == (
            f"{prefix}minimum CPU value is 1; got 0",
            f"{prefix}minimum MemoryMB value is 10; got 1",
        )
    assert [r.method for r in nomad.requests] == ["POST", "POST"], "neither was retried"


def test_multierror_lines_keep_nomads_words() -> None:
    text = (
        "3 errors occurred:\n\t* Missing job name\n\t* Task group web validation failed: 2 errors occurred:\n"
        "\t* Missing tasks for task group\n\t* Task group count can't be negative\n\n\n"
        "\t* total count was greater than configured job_max_count: 3 > 2\n\n"
    )
    assert multierror_lines(text) == [
        "Missing job name",
        "Task group web validation failed: Missing tasks for task group",
        "Task group web validation failed: Task group count can't be negative",
        "total count was greater than configured job_max_count: 3 > 2",
    ]
    assert multierror_lines("No cluster leader") is None
    assert multierror_lines("rpc error: 1 error occurred:\n\t* Missing job ID\n\n") == ["rpc error: Missing job ID"]


def test_the_watch_side_says_why_nomad_cannot_be_reached() -> None:
    """httpx's `All connection attempts failed` is said as the cause underneath it, as python-nomad's side says it."""
    address = f"http://127.0.0.1:{free_port()}"
    api = NomadAPI(NomadSettings(address=address))

    async def read() -> None:
        async with api.async_client() as http:
            await api.allocations(http, "x")

    with pytest.raises(NomadUnavailable) as caught:
        asyncio.run(read())
    assert str(caught.value) == f"cannot reach Nomad at {address}: connection refused (set NOMAD_ADDR or --address)"
