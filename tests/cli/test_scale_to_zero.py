"""The words of `status`, `endpoints` and `submit` for a model the gateway scales to zero and back, and what
registering such a job again keeps.

Such a job is the example deployment with `nomad.scaling: {min: 0, idle_after: 15m}`; a plain one at
`replicas: 0` beside it has no scaling block.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nomad_gpustack.compile.build import Compiled
from nomad_gpustack.contract.metadata import META_IDLE_AFTER, META_SCALE_GROUP
from nomad_gpustack.nomad.responses import PlanResponse
from nomad_gpustack.nomad.rollout import NOTHING_TO_RUN, Assessment
from nomad_gpustack.nomad.runner import Registration
from nomad_gpustack.nomad.verdict import headline
from nomad_gpustack.nomad.watcher import WatchResult

from ..support.components import ROOT
from ..support.helpers import compile_yaml, http_json, nomadgs
from ..support.nomad_double import NomadDouble

EXAMPLE = (ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml").read_text()


def deployment(count: int, sleepy: bool = True, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {**yaml.safe_load(EXAMPLE), "replicas": count, **extra}
    if sleepy:
        data["nomad"] = {**data["nomad"], "scaling": {"min": 0, "max": 2, "idle_after": "15m"}}
    return data


def compiled(count: int, sleepy: bool = True) -> Compiled:
    result = compile_yaml(deployment(count, sleepy))
    assert (META_IDLE_AFTER in result.job["Meta"]) is sleepy
    assert result.job["Meta"].get(META_SCALE_GROUP, result.job["TaskGroups"][0]["Name"]) == "inference"
    return result


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble() as double:
        yield double


def register(nomad: NomadDouble, job: Any) -> None:
    status, answer = http_json("PUT", f"{nomad.address}/v1/jobs", {"Job": job})
    assert status == 200, answer


def test_status_shows_a_model_scaled_to_zero_as_idle_scaled_to_zero(nomad: NomadDouble) -> None:
    sleepy = compiled(count=1)
    job_id = sleepy.job_id
    register(nomad, sleepy.job)
    nomad.wait_for(lambda d: any(a["ClientStatus"] == "running" for a in d.allocations.values()), 30)
    nomad.wait_for(lambda d: all(x["Status"] != "running" for x in d.deployments.values()), 60)
    group = sleepy.job["TaskGroups"][0]["Name"]
    status, answer = http_json(
        "POST", f"{nomad.address}/v1/job/{job_id}/scale", {"Count": 0, "Target": {"Group": group}, "Message": "idle"}
    )
    assert status == 200, answer
    nomad.wait_for(lambda d: not any(a["DesiredStatus"] == "run" for a in d.allocations.values()), 30)
    # A plain job at replicas: 0 beside it stays "idle".
    plain = compiled(count=0, sleepy=False)
    plain.job["ID"] = plain.job["Name"] = "plain-zero"
    plain.job["Meta"]["gpustack_model"] = "plain-zero"
    register(nomad, plain.job)
    env = {"NOMAD_ADDR": nomad.address}
    run = nomadgs("status", "--output", "json", env=env)
    assert run.code == 0, run.err
    found = {m["job"]: m["status"] for m in json.loads(run.out)}
    assert found == {job_id: "idle (scaled to zero)", "plain-zero": "idle"}
    run = nomadgs("status", job_id, env=env)
    assert run.code == 0, run.err
    assert f"job        {job_id} version 1, idle (scaled to zero)" in run.out


def test_endpoints_lists_a_model_scaled_to_zero_with_no_instance(nomad: NomadDouble) -> None:
    sleepy = compiled(count=0)
    register(nomad, sleepy.job)
    model = sleepy.model
    env = {"NOMAD_ADDR": nomad.address}
    run = nomadgs("endpoints", "--provider", "nomad", "--output", "json", env=env)
    assert run.code == 0, run.err
    assert json.loads(run.out)["models"] == [{"model": model, "healthy": 0, "instances": [], "scaled_to_zero": True}]
    run = nomadgs("endpoints", "--provider", "nomad", env=env)
    assert run.code == 0, run.err
    (row,) = run.out.splitlines()[1:]
    assert row.split()[:5] == [model, "idle", "(scaled", "to", "zero)"] and "0 instances" in row
    run = nomadgs("endpoints", model, "--provider", "nomad", env=env)
    assert run.code == 1 and "is scaled to zero: a request for it through `nomadgs gateway` wakes it" in run.err


def test_submit_of_a_job_at_zero_that_scales_to_zero_says_how_it_wakes() -> None:
    def words(job: Compiled) -> str:
        registration = Registration(job, 0, "eval", PlanResponse(JobModifyIndex=0))
        return headline(registration, WatchResult(Assessment("succeeded", (), NOTHING_TO_RUN), 0.1))

    sleepy = compiled(count=0)
    assert words(sleepy) == (
        f"{sleepy.model}: registered at 0 replicas, scaled to zero (job {sleepy.job_id}): a request for it through "
        "`nomadgs gateway` (with NOMAD_ADDR set) scales it to 1 and waits for it; after 15m without a request it "
        "goes back to 0"
    )
    assert words(compiled(count=0, sleepy=False)) == f"{sleepy.model}: {NOTHING_TO_RUN} (job {sleepy.job_id})"


@pytest.mark.parametrize("sleepy", [True, False], ids=["scaled by others", "plain"])
def test_submitting_again_keeps_the_count_something_else_set(nomad: NomadDouble, tmp_path: Path, sleepy: bool) -> None:
    """A job the gateway or the Autoscaler scales is registered again with PreserveCounts: a changed engine flag
    must not put a model that was woken (or scaled out) back to the file's starting count; a plain job takes
    the file's count, as always."""
    env = {"NOMAD_ADDR": nomad.address}
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(deployment(0, sleepy)))
    run = nomadgs("submit", first, "--detach", env=env)
    assert run.code == 0, run.err
    job_id = compiled(0, sleepy).job_id
    status, answer = http_json(
        "POST", f"{nomad.address}/v1/job/{job_id}/scale", {"Count": 1, "Target": {"Group": "inference"}}
    )
    assert status == 200, answer
    changed = deployment(0, sleepy, backend_parameters=["--ctx-size 2048"])
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(changed))
    run = nomadgs("submit", second, "--detach", env=env)
    assert run.code == 0, run.err
    status, job = http_json("GET", f"{nomad.address}/v1/job/{job_id}")
    assert status == 200 and "--ctx-size" in " ".join(job["TaskGroups"][0]["Tasks"][-1]["Config"]["args"])
    assert job["TaskGroups"][0]["Count"] == (1 if sleepy else 0)
