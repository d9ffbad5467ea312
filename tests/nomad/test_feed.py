"""The watcher's feed: a fleet's long polls hand each watch its share only when the share changed, and each
object is validated once per version (its ModifyIndex)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from nomad_gpustack.nomad.client import NomadAPI, NotNomad
from nomad_gpustack.nomad.feed import Feed, Versions, blocking_pace
from nomad_gpustack.nomad.responses import Allocation, Deployment, Evaluation
from nomad_gpustack.settings import NomadSettings

from ..support.components import ROOT
from ..support.helpers import compile_yaml
from ..support.nomad_double import NomadDouble, scenarios

EXAMPLE = (ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml").read_text()


class Heard:
    """A watch as the feed sees it: records every share it is handed."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.allocations: list[list[Allocation]] = []
        self.deployments: list[list[Deployment]] = []

    def on_allocations(self, allocations: list[Allocation]) -> None:
        self.allocations.append(allocations)

    def on_deployments(self, deployments: list[Deployment]) -> None:
        self.deployments.append(deployments)

    def on_evaluations(self, evaluations: list[Evaluation]) -> None:
        return None

    def on_failure(self, exc: Exception) -> None:
        raise AssertionError(f"the feed failed: {exc}")


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble() as double:
        double.default_scenario = scenarios.manual()  # placed, then nothing changes until the test acts
        yield double


def two_jobs(nomad: NomadDouble) -> tuple[NomadAPI, str, str]:
    api = NomadAPI(NomadSettings(address=nomad.address))
    base = compile_yaml(EXAMPLE).job
    for job_id in ("busy", "quiet"):
        api.register({**copy.deepcopy(base), "ID": job_id, "Name": job_id}, modify_index=0)
    nomad.wait_for(lambda n: len(n.allocations) == 2 * base["TaskGroups"][0]["Count"])
    return api, "busy", "quiet"


async def until(predicate: Any, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def follow_both(
    api: NomadAPI, busy: str, quiet: str, act: Callable[[Feed, Heard, Heard], Awaitable[None]]
) -> tuple[Heard, Heard]:
    """A feed with a watch of each job: `act` runs once both have heard the first answers; what they heard."""
    async with api.async_client() as http:
        feed = Feed(api, http, note=lambda message: None)
        heard = Heard(busy), Heard(quiet)
        for subscriber in heard:
            feed.subscribe(subscriber)
        await until(lambda: all(h.allocations for h in heard))
        await act(feed, *heard)
        await feed.close()
        return heard


def test_a_watch_is_handed_its_share_only_when_it_changed(nomad: NomadDouble) -> None:
    """Changes to one job wake the fleet's query for every job; the other job's watch hears nothing new."""
    api, busy, quiet = two_jobs(nomad)
    busy_alloc = next(a["ID"] for a in nomad.allocations.values() if a["JobID"] == busy)

    async def act(feed: Feed, heard_busy: Heard, heard_quiet: Heard) -> None:
        for n in range(3):  # three client updates, each its own write
            nomad.update_allocation(busy_alloc, task_events=[{"Type": "Driver", "DisplayMessage": f"step {n}"}])
            await until(lambda n=n: any(f"step {n}" in _messages(a) for a in heard_busy.allocations))

    heard_busy, heard_quiet = asyncio.run(follow_both(api, busy, quiet, act))
    assert len(heard_busy.allocations) >= 4, "the first answer, then each change of its allocation"
    assert len(heard_quiet.allocations) == 1, "its allocations never changed: handed once"
    assert len(heard_quiet.deployments) == 1


def test_a_refresh_reads_the_jobs_that_ask_and_hands_them_their_share_with_the_resources(nomad: NomadDouble) -> None:
    api, busy, quiet = two_jobs(nomad)

    async def act(feed: Feed, heard_busy: Heard, heard_quiet: Heard) -> None:
        await feed.refresh(quiet)

    before = len(nomad.requests)
    heard_busy, heard_quiet = asyncio.run(follow_both(api, busy, quiet, act))
    assert len(heard_quiet.allocations) == 2, "handed again, unchanged as it is"
    assert all(a.AllocatedResources for a in heard_quiet.allocations[1]), "the refresh asks for the ports"
    assert len(heard_busy.allocations) == 1, "a job that did not ask is not handed the refresh"
    refresh = [r for r in nomad.requests[before:] if r.path == "/v1/allocations" and "resources" in r.query]
    assert [r.query["filter"] for r in refresh] == [[f"JobID matches `^({quiet})$`"]], "read for the job that asked"


def _messages(allocations: list[Allocation]) -> str:
    return " ".join(e.DisplayMessage for a in allocations for t in a.TaskStates.values() for e in t.Events)


def test_an_object_is_validated_once_per_version() -> None:
    api = NomadAPI(NomadSettings(address="http://127.0.0.1:4646"))  # nothing is sent: shaping only
    versions = Versions(api, "/v1/allocations", Allocation)
    first = versions.shaped([{"ID": "a", "JobID": "j", "ModifyIndex": 5, "ClientStatus": "pending"}])
    again = versions.shaped([{"ID": "a", "JobID": "j", "ModifyIndex": 5, "ClientStatus": "pending"}])
    assert again[0] is first[0], "the same ID at the same ModifyIndex: the model made before"
    moved = versions.shaped([{"ID": "a", "JobID": "j", "ModifyIndex": 6, "ClientStatus": "running"}])
    assert moved[0] is not first[0] and moved[0].ClientStatus == "running"
    with pytest.raises(NotNomad, match="/v1/allocations"):
        versions.shaped([{"ID": "b", "JobID": "j", "ModifyIndex": 7, "ClientStatus": ["not", "text"]}])
    with pytest.raises(NotNomad, match="/v1/allocations"):
        versions.shaped(["not an object"])


def test_the_pace_of_the_long_polls_grows_with_the_fleet_up_to_a_bound() -> None:
    assert blocking_pace(1) < 0.01, "one job's watch is not slowed"
    assert blocking_pace(120) > blocking_pace(10) > blocking_pace(1)
    assert blocking_pace(100_000) == 1.0
