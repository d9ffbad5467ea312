"""The Nomad client against the double: request shapes, blocking reads, and errors mapped to the hierarchy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from nomad_gpustack.errors import EXIT_BAD_INPUT, EXIT_CONNECTION, EXIT_FAILURE
from nomad_gpustack.nomad.client import (
    IndexConflict,
    NomadAPI,
    NomadDenied,
    NomadError,
    NomadRejected,
    NomadUnavailable,
    TransientError,
)
from nomad_gpustack.settings import NomadSettings

from ..support.components import ROOT, free_port
from ..support.helpers import compile_yaml
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


def test_blocking_read_sends_index_and_wait_and_returns_the_new_index(nomad: NomadDouble) -> None:
    job = compile_yaml(EXAMPLE).job
    nomad.set_scenario(job["ID"], scenarios.manual())  # placed, then nothing changes until the test acts
    api = api_for(nomad)
    api.register(job, modify_index=0)
    path = f"/v1/job/{job['ID']}"

    async def read() -> tuple[int, int]:
        async with api.async_client() as http:
            _, first = await api.get(http, path)
            waiting = asyncio.create_task(api.get(http, path, index=first))
            while not any("index" in r.query for r in nomad.requests):  # the double holds it open now
                await asyncio.sleep(0.01)
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
        (403, "Permission denied", NomadDenied, EXIT_CONNECTION, "set NOMAD_TOKEN"),
        (403, "ACL token not found", NomadDenied, EXIT_CONNECTION, "not a known ACL token"),
        (400, "bad request body", NomadRejected, EXIT_BAD_INPUT, "Nomad rejected the request: bad request body"),
        (500, "No cluster leader", TransientError, EXIT_FAILURE, "Nomad answered 500: No cluster leader"),
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
