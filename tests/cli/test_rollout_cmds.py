"""`nomadgs promote`, `revert`, `history` run as real processes against the Nomad double."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..support.helpers import Run, nomadgs
from ..support.nomad_double import NomadDouble, scenarios
from ..support.test_nomad_double import allocs_of, deployments_of, make_job, register, wait_deployment

JSON = dict[str, Any]


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble(time_scale=60) as double:
        yield double


@pytest.fixture
def api(nomad: NomadDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nomad.address, timeout=10) as client:
        yield client


def model_job(image: str, canary: int = 0) -> JSON:
    """A job as nomadgs compiles one (its meta says so, and names the model), serving `image`."""
    job = make_job("web", count=2, image=image)
    job["Meta"].update(nomadgs_managed="true", gpustack_model="Web-Model")
    group = job["TaskGroups"][0]
    group["Update"].update(MinHealthyTime=0, Canary=canary)
    group["Services"][0].update(Tags=["live"], CanaryTags=["canary"])
    return job


def run(nomad: NomadDouble, *args: str) -> Run:
    return nomadgs(*args, env={"NOMAD_ADDR": nomad.address}, timeout=90)


def sent(nomad: NomadDouble, method: str, path: str) -> list[JSON]:
    return [json.loads(r.body) for r in nomad.requests if r.method == method and r.path == path]


def two_versions(nomad: NomadDouble, api: httpx.Client) -> None:
    """Version 0 (redis:7) and version 1 (redis:8), both healthy, so both stable."""
    nomad.default_scenario = scenarios.rollout(healthy_after=0)
    register(api, model_job("redis:7"))
    wait_deployment(nomad, "web", "successful")
    register(api, model_job("redis:8"))
    nomad.wait_for(lambda n: [d["Status"] for d in deployments_of(n, "web")] == ["successful", "successful"])


# --- history --------------------------------------------------------------------------------------------------


def test_history_prints_versions_and_diffs_as_nomad_job_history(nomad: NomadDouble, api: httpx.Client) -> None:
    """command/job_history.go formatJobVersion: Version / Stable / Submit Date, and the diff from the version
    before as `nomad job plan` prints it (formatJobDiff), newest first, a blank line between versions."""
    two_versions(nomad, api)
    out = run(nomad, "history", "Web-Model")  # the model name finds the job, as `status` does
    assert out.code == 0, out.err
    newest, oldest = out.out.rstrip("\n").split("\n\n")
    lines = newest.splitlines()
    assert lines[:2] == ["Version     = 1", "Stable      = true"]
    assert lines[2].startswith("Submit Date = 20")
    assert lines[3] == "Diff        = "
    assert lines[4:6] == ['+/- Job: "web"', '+/- Task Group: "server"']  # no scheduler annotations
    assert '      +/- image:   "redis:7" => "redis:8"' in lines  # aligned with args[0] and args[1]
    assert oldest.splitlines()[:2] == ["Version     = 0", "Stable      = true"]
    assert "Diff" not in oldest
    versions = [r for r in nomad.requests if r.path == "/v1/job/web/versions"]
    assert versions and all(r.query.get("diffs") == ["true"] for r in versions)


def test_history_json(nomad: NomadDouble, api: httpx.Client) -> None:
    two_versions(nomad, api)
    out = run(nomad, "history", "web", "--format", "json")
    assert out.code == 0, out.err
    data = json.loads(out.out)
    assert (data["job"], data["model"], data["current_version"]) == ("web", "Web-Model", 1)
    newest, oldest = data["versions"]
    assert (newest["version"], newest["stable"], oldest["version"], oldest["diff"]) == (1, True, 0, None)
    assert any(line.endswith('image: "redis:7" => "redis:8"') for line in newest["changes"])
    assert newest["diff"]["Type"] == "Edited" and newest["submit_time"] > oldest["submit_time"]


def test_history_of_an_unknown_name_is_bad_input(nomad: NomadDouble) -> None:
    out = run(nomad, "history", "nothing-here")
    assert out.code == 2
    assert "no job or model named 'nothing-here'" in out.err and "Traceback" not in out.err


# --- revert ---------------------------------------------------------------------------------------------------


def test_revert_goes_back_to_the_newest_older_stable_version_and_follows_it(
    nomad: NomadDouble, api: httpx.Client
) -> None:
    """nomad/job_endpoint.go Revert: the target registered again as a new version, with EnforcePriorVersion
    (the current version) as check-and-set; then the rollout is followed as after a submit."""
    two_versions(nomad, api)
    out = run(nomad, "revert", "web", "--timeout", "60s")
    assert out.code == 0, out.err
    assert "web: reverted from version 1 to 0, as version 2" in out.err
    assert "Web-Model: " in out.out and "healthy" in out.out
    (body,) = sent(nomad, "POST", "/v1/job/web/revert")
    assert (body["JobVersion"], body["EnforcePriorVersion"]) == (0, 1)
    job = api.get("/v1/job/web").json()
    assert job["Version"] == 2 and job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == "redis:7"
    assert deployments_of(nomad, "web")[-1]["JobVersion"] == 2
    # Followed as a submit is: the watch's blocking queries on the allocations (the shared feed's list).
    assert any("index" in r.query and r.path == "/v1/allocations" for r in nomad.requests), "it followed"


def test_revert_to_a_named_version_json_detach(nomad: NomadDouble, api: httpx.Client) -> None:
    two_versions(nomad, api)
    register(api, model_job("redis:9"))
    nomad.wait_for(lambda n: len(deployments_of(n, "web")) == 3)
    out = run(nomad, "revert", "web", "--to", "0", "--detach", "--format", "json")
    assert out.code == 0, out.err
    data = json.loads(out.out)
    assert (data["reverted_from"], data["reverted_to"], data["version"], data["status"]) == (2, 0, 3, "registered")
    (body,) = sent(nomad, "POST", "/v1/job/web/revert")
    assert (body["JobVersion"], body["EnforcePriorVersion"]) == (0, 2)


def test_revert_refuses_without_a_stable_version(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.default_scenario = scenarios.manual()  # never healthy: version 0 never becomes stable
    register(api, model_job("redis:7"))
    register(api, model_job("redis:8"))
    out = run(nomad, "revert", "web")
    assert out.code == 2, out.err
    assert "no stable version older than the current version 1 to revert to" in out.err
    assert "--to VERSION" in out.err
    assert sent(nomad, "POST", "/v1/job/web/revert") == [], "nothing sent"
    missing = run(nomad, "revert", "web", "--to", "7", "--format", "json")
    assert missing.code == 2
    (line,) = json.loads(missing.out)["errors"]
    assert "the job has no version 7" in line and "Nomad keeps versions 1, 0" in line


def test_revert_loses_a_race_without_reverting(nomad: NomadDouble, api: httpx.Client) -> None:
    """EnforcePriorVersion: a job that changed between the read and the revert is not reverted."""
    two_versions(nomad, api)
    nomad.after_request("GET", "^/v1/job/web/versions$", lambda: nomad.modify_job("web", meta={"by": "someone"}))
    out = run(nomad, "revert", "web")
    assert out.code == 1, out.err
    assert "job 'web' changed since nomadgs read it at version 1; nothing was reverted" in out.err
    assert api.get("/v1/job/web").json()["Version"] == 2


# --- promote --------------------------------------------------------------------------------------------------


def canary_waiting(nomad: NomadDouble, api: httpx.Client, auto_revert: bool = True) -> JSON:
    """Version 1 with one canary, placed beside the two old replicas, not healthy yet."""
    nomad.default_scenario = scenarios.rollout(healthy_after=0)
    register(api, model_job("redis:7", canary=1))
    wait_deployment(nomad, "web", "successful")
    nomad.default_scenario = scenarios.manual(start_after=0)
    new = model_job("redis:8", canary=1)
    new["TaskGroups"][0]["Update"]["AutoRevert"] = auto_revert
    register(api, new)
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 3)
    return allocs_of(nomad, "web")[-1]


def test_promote_waits_for_healthy_canaries_then_promotes(nomad: NomadDouble, api: httpx.Client) -> None:
    """state_store.go UpdateDeploymentPromotion: promotion needs healthy canaries; PUT
    /v1/deployment/promote/:id with All."""
    canary = canary_waiting(nomad, api, auto_revert=False)  # the promoted deployment stays the latest
    early = run(nomad, "promote", "web")
    assert early.code == 1, early.err
    assert 'Task group "server" has 0/1 healthy allocations' in early.err
    assert "Nomad refused the job" not in early.err
    nomad.update_allocation(canary["ID"], task_state="running", task_events=[{"Type": "Started"}], healthy=True)
    out = run(nomad, "promote", "Web-Model")
    assert out.code == 0, out.err
    deployment = deployments_of(nomad, "web")[-1]
    assert f"web: promoted deployment {deployment['ID'][:8]} (job version 1)" in out.out
    assert sent(nomad, "POST", f"/v1/deployment/promote/{deployment['ID']}")[-1] == {
        "All": True,
        "DeploymentID": deployment["ID"],
    }
    assert nomad.deployments[deployment["ID"]]["TaskGroups"]["server"]["Promoted"] is True
    again = run(nomad, "promote", "web", "--format", "json")
    assert again.code == 0, again.err
    data = json.loads(again.out)
    assert data["promoted"] is False and "already promoted" in data["message"]
    assert len(sent(nomad, "POST", f"/v1/deployment/promote/{deployment['ID']}")) == 2, "not sent again"


def test_promote_without_canaries_says_so(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.default_scenario = scenarios.rollout(healthy_after=0)
    register(api, model_job("redis:7"))
    wait_deployment(nomad, "web", "successful")
    out = run(nomad, "promote", "web", "--format", "json")
    assert out.code == 1
    (line,) = json.loads(out.out)["errors"]
    assert line.startswith("web: nothing to promote: deployment ") and line.endswith(
        "has no canaries: it needs no promotion"
    )


def test_promote_a_failed_deployment_says_so(nomad: NomadDouble, api: httpx.Client) -> None:
    canary_waiting(nomad, api, auto_revert=False)  # the failed deployment stays the latest
    deployment = deployments_of(nomad, "web")[-1]
    assert api.put(f"/v1/deployment/fail/{deployment['ID']}").status_code == 200
    out = run(nomad, "promote", "web")
    assert out.code == 1
    assert "nothing to promote" in out.err and "is failed: Deployment marked as failed" in out.err


def test_a_job_nomadgs_did_not_create_needs_force(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.default_scenario = scenarios.rollout(healthy_after=0)
    register(api, make_job("other"))
    for command in ("promote", "revert"):
        out = run(nomad, command, "other")
        assert out.code == 2 and f"use --force to {command} it anyway" in out.err
