"""The Nomad double's endpoints for rollouts and fleets: revert, versions, stable, scale, deployment promote / fail
/ pause, the lists with `filter` expressions, summaries, and the register options. Each test names the Nomad
source (hashicorp/nomad at aa026cc99c, go-bexpr v0.1.16) whose behaviour it checks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.nomad_double import NomadDouble, scenarios
from tests.support.test_nomad_double import allocs_of, deployments_of, make_job, register

SECOND = 10**9
JSON = dict[str, Any]


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble(time_scale=1200) as double:
        double.default_scenario = scenarios.rollout(healthy_after=0)
        yield double


@pytest.fixture
def api(nomad: NomadDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nomad.address, timeout=10) as client:
        yield client


def rolled_out(nomad: NomadDouble, api: httpx.Client, job: JSON) -> JSON:
    """Register `job` and wait for its deployment to succeed; returns the register answer."""
    created = register(api, job)
    nomad.wait_for(
        lambda n: any(
            d["Status"] == "successful" and d["JobModifyIndex"] >= created["JobModifyIndex"]
            for d in deployments_of(n, job["ID"])
        ),
        timeout=10,
    )
    return created


# --- revert, versions, stable -----------------------------------------------------------------------------------


def test_revert_registers_the_old_version_again_unstable(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/job_endpoint.go Revert: a copy of the version with Stable false and a new SubmitTime, through the
    normal register; EnforcePriorVersion must match the current version; reverting to the current version, or
    to one that does not exist, is refused (500)."""
    rolled_out(nomad, api, make_job(meta="a"))
    rolled_out(nomad, api, make_job(meta="b"))
    current = api.get("/v1/job/web").json()
    assert (current["Version"], current["Stable"]) == (1, True)
    wrong = api.put("/v1/job/web/revert", json={"JobID": "web", "JobVersion": 0, "EnforcePriorVersion": 5})
    assert (wrong.status_code, wrong.text) == (500, "Current job has version 1; enforcing version 5")
    same = api.put("/v1/job/web/revert", json={"JobID": "web", "JobVersion": 1})
    assert (same.status_code, same.text) == (500, "can't revert to current version")
    missing = api.put("/v1/job/web/revert", json={"JobID": "web", "JobVersion": 9})
    assert missing.text == 'job "web" in namespace "default" at version 9 not found'
    assert api.put("/v1/job/web/revert", json={"JobVersion": 0}).text == "JobID must be specified"
    assert api.put("/v1/job/web/revert", json={"JobID": "x", "JobVersion": 0}).text == "Job ID does not match"
    reverted = api.put("/v1/job/web/revert", json={"JobID": "web", "JobVersion": 0, "EnforcePriorVersion": 1})
    assert reverted.status_code == 200, reverted.text
    assert set(reverted.json()) >= {"EvalID", "EvalCreateIndex", "JobModifyIndex", "Warnings", "Index"}
    job = api.get("/v1/job/web").json()
    assert (job["Version"], job["Stable"], job["Meta"]) == (2, False, {"revision": "a"})
    assert job["SubmitTime"] > current["SubmitTime"]


def test_versions_newest_first_with_their_diffs(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/job_endpoint.go GetJobVersions: every kept version, newest first; `diffs=true` adds the diff of each
    from the one before it (len − 1 entries), null without; a job without versions is 404 `job versions not
    found`; a bad `diffs` is the agent's 500 ParseBool text."""
    rolled_out(nomad, api, make_job(meta="a"))
    register(api, make_job(meta="b"))
    plain = api.get("/v1/job/web/versions").json()
    assert [v["Version"] for v in plain["Versions"]] == [1, 0] and plain["Diffs"] is None
    with_diffs = api.get("/v1/job/web/versions", params={"diffs": "true"}).json()
    (diff,) = with_diffs["Diffs"]
    assert diff["Type"] == "Edited"
    assert {"Type": "Edited", "Name": "Meta[revision]", "Old": "a", "New": "b", "Annotations": None} in diff["Fields"]
    assert with_diffs["Index"] == max(v["ModifyIndex"] for v in with_diffs["Versions"])
    missing = api.get("/v1/job/nope/versions")
    assert (missing.status_code, missing.text) == (404, "job versions not found")
    bad = api.get("/v1/job/web/versions", params={"diffs": "x"})
    assert (bad.status_code, bad.text) == (
        500,
        'Failed to parse value of "diffs" (x) as a bool: strconv.ParseBool: parsing "x": invalid syntax',
    )


def test_only_six_versions_are_kept_and_the_newest_stable_stays(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/state/state_store.go upsertJobVersion: JobDefaultTrackedVersions (6); the oldest goes, unless it
    is the newest stable version, then the second oldest."""
    nomad.default_scenario = scenarios.manual(start_after=0)
    rolled_out_v0 = register(api, make_job(meta="0"))
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 1)
    nomad.update_allocation(allocs_of(nomad, "web")[0]["ID"], task_state="running", healthy=True)
    nomad.wait_for(lambda n: deployments_of(n, "web")[0]["Status"] == "successful")
    assert rolled_out_v0["JobModifyIndex"]
    for revision in range(1, 7):
        register(api, make_job(meta=str(revision)))
    versions = [v["Version"] for v in api.get("/v1/job/web/versions").json()["Versions"]]
    assert versions == [6, 5, 4, 3, 2, 0]


def test_stable_marks_a_version(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/job_endpoint.go Stable: the version's Stable flag; Version and JobModifyIndex stay."""
    created = register(api, make_job())
    answer = api.put("/v1/job/web/stable", json={"JobID": "web", "JobVersion": 0, "Stable": False})
    assert answer.status_code == 200, answer.text
    job = api.get("/v1/job/web").json()
    assert (job["Stable"], job["Version"], job["JobModifyIndex"]) == (False, 0, created["JobModifyIndex"])


# --- deployments --------------------------------------------------------------------------------------------------


def test_fail_a_deployment_reverts_to_the_stable_version(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/deployment_endpoint.go Fail → deployment_watcher.go FailDeployment: `Deployment marked as failed`,
    a rollback when a group auto-reverts, RevertedJobVersion in the answer; a terminal deployment cannot be
    failed again (500), a missing one is 500 `deployment not found`."""
    rolled_out(nomad, api, make_job(meta="good"))
    nomad.default_scenario = scenarios.manual(start_after=0)
    register(api, make_job(meta="bad"))
    nomad.wait_for(lambda n: len(deployments_of(n, "web")) == 2)
    deployment = deployments_of(nomad, "web")[-1]
    answer = api.put(f"/v1/deployment/fail/{deployment['ID']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["RevertedJobVersion"] == 2
    failed = nomad.deployments[deployment["ID"]]
    assert (failed["Status"], failed["StatusDescription"]) == (
        "failed",
        "Deployment marked as failed - rolling back to job version 0",
    )
    again = api.put(f"/v1/deployment/fail/{deployment['ID']}")
    assert (again.status_code, again.text) == (500, "can't fail terminal deployment")
    assert api.put("/v1/deployment/fail/nope").text == "deployment not found"
    assert api.get("/v1/deployment/nope").status_code == 404


def test_pause_and_resume_a_deployment(nomad: NomadDouble, api: httpx.Client) -> None:
    """deployment_watcher.go PauseDeployment: paused without an evaluation, resumed with one; the body is
    checked by the agent (command/agent/deployment_endpoint.go)."""
    nomad.default_scenario = scenarios.manual(start_after=0)
    register(api, make_job())
    nomad.wait_for(lambda n: len(deployments_of(n, "web")) == 1)
    deployment_id = deployments_of(nomad, "web")[0]["ID"]
    url = f"/v1/deployment/pause/{deployment_id}"
    assert api.put(url).text == "Request body is empty"
    assert api.put(url, json={"Pause": True}).text == "DeploymentID must be specified"
    assert api.put(url, json={"DeploymentID": "x", "Pause": True}).text == "Deployment ID does not match"
    paused = api.put(url, json={"DeploymentID": deployment_id, "Pause": True}).json()
    assert paused["EvalID"] == "" and nomad.deployments[deployment_id]["Status"] == "paused"
    resumed = api.put(url, json={"DeploymentID": deployment_id, "Pause": False}).json()
    assert nomad.evaluations[resumed["EvalID"]]["TriggeredBy"] == "deployment-watcher"
    assert nomad.deployments[deployment_id]["StatusDescription"] == "Deployment is running"


# --- scale ---------------------------------------------------------------------------------------------------------


def test_scale_changes_the_count_in_a_new_version(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/job_endpoint.go Scale: a count is a new job version (Stable copied, SubmitTime now) with a
    `job-scaling` evaluation, the existing allocations updated in place; the event is recorded (newest first)
    and `GET /v1/job/:id/scale` reports it (ScaleStatus)."""
    rolled_out(nomad, api, make_job(count=1))
    before = api.get("/v1/job/web").json()
    answer = api.post(
        "/v1/job/web/scale",
        json={"Count": 3, "Target": {"Group": "server"}, "Message": "more", "Meta": {"by": "test"}},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert nomad.evaluations[body["EvalID"]]["TriggeredBy"] == "job-scaling"
    job = api.get("/v1/job/web").json()
    assert (job["Version"], job["Stable"], job["TaskGroups"][0]["Count"]) == (1, True, 3)
    assert job["JobModifyIndex"] == body["JobModifyIndex"] > before["JobModifyIndex"]
    assert job["SubmitTime"] > before["SubmitTime"]
    nomad.wait_for(
        lambda n: len(deployments_of(n, "web")) == 2 and deployments_of(n, "web")[1]["Status"] == "successful"
    )
    allocs = allocs_of(nomad, "web")
    assert len(allocs) == 3 and allocs[0]["JobVersion"] == 1, "the first allocation was updated in place"
    status = api.get("/v1/job/web/scale").json()
    group = status["TaskGroups"]["server"]
    assert (group["Desired"], group["Placed"], group["Running"], group["Healthy"]) == (3, 3, 3, 3)
    (event,) = group["Events"]
    assert (event["Count"], event["PreviousCount"], event["Message"], event["EvalID"]) == (3, 1, "more", body["EvalID"])
    assert event["Meta"] == {"by": "test"} and not event["Error"]
    only_event = api.post("/v1/job/web/scale", json={"Target": {"Group": "server"}, "Message": "noted"}).json()
    assert only_event["EvalID"] == "" and api.get("/v1/job/web").json()["Version"] == 1
    assert [e["Message"] for e in api.get("/v1/job/web/scale").json()["TaskGroups"]["server"]["Events"]] == [
        "noted",
        "more",
    ]


@pytest.mark.parametrize(
    ("request_body", "status", "text"),
    [
        ({"Count": 1, "Target": {"Group": "server", "Job": "other"}}, 400, "job ID in payload did not match URL"),
        ({"Count": 1, "Target": {}}, 400, "missing task group name for scaling action"),
        ({"Count": -1, "Target": {"Group": "server"}}, 400, "scaling action count can't be negative"),
        (
            {"Count": 1, "Error": True, "Target": {"Group": "server"}},
            400,
            "scaling action should not contain count if error is true",
        ),
        (
            {"Count": 1, "Target": {"Group": "nope"}},
            400,
            'task group "nope" specified for scaling does not exist in job',
        ),
        (
            {"Count": 9, "Target": {"Group": "server"}},
            400,
            "group count was greater than scaling policy maximum: 9 > 4",
        ),
        ({"Count": 0, "Target": {"Group": "server"}}, 400, "group count was less than scaling policy minimum: 0 < 1"),
    ],
)
def test_scale_refusals(nomad: NomadDouble, api: httpx.Client, request_body: JSON, status: int, text: str) -> None:
    """nomad/job_endpoint.go Scale and JobScaleRequest.Validate: Nomad's codes and texts."""
    job = make_job()
    job["TaskGroups"][0]["Scaling"] = {"Min": 1, "Max": 4, "Enabled": True}
    rolled_out(nomad, api, job)
    answer = api.post("/v1/job/web/scale", json=request_body)
    assert (answer.status_code, answer.text) == (status, text)


def test_scale_is_blocked_while_a_deployment_runs_and_needs_scale_job() -> None:
    """nomad/job_endpoint.go Scale: 400 `job scaling blocked due to active deployment`; the `scale-job` or
    `submit-job` capability (a `scale` policy has it, a `read` one not); a missing job is 404."""
    tokens = {"root": "management", "scaler": "scale", "reader": "read"}
    with NomadDouble(acl_tokens=tokens, time_scale=1200) as nomad, httpx.Client(base_url=nomad.address) as api:
        nomad.default_scenario = scenarios.manual(start_after=0)
        root = {"X-Nomad-Token": "root"}
        api.put("/v1/jobs", json={"Job": make_job()}, headers=root).raise_for_status()
        nomad.wait_for(lambda n: len(deployments_of(n, "web")) == 1)
        scale = {"Count": 2, "Target": {"Group": "server"}}
        blocked = api.post("/v1/job/web/scale", json=scale, headers={"X-Nomad-Token": "scaler"})
        assert (blocked.status_code, blocked.text) == (400, "job scaling blocked due to active deployment")
        refused = api.post("/v1/job/web/scale", json=scale, headers={"X-Nomad-Token": "reader"})
        assert (refused.status_code, refused.text) == (403, "Permission denied")
        assert api.get("/v1/job/web/scale", headers={"X-Nomad-Token": "reader"}).status_code == 200
        missing = api.post("/v1/job/nope/scale", json=scale, headers=root)
        assert (missing.status_code, missing.text) == (404, 'job "nope" not found')
        assert api.get("/v1/job/nope/scale", headers=root).text == "job not found"


# --- lists and filters ----------------------------------------------------------------------------------------------


def test_job_list_filter_and_meta(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/job_endpoint.go List (go-bexpr on the full job) and structs.go Job.Stub (`Meta` with meta=true, and
    only when not empty); a missing map key has its operator's disposition (go-bexpr v0.1.16
    NotPresentDisposition); a bad expression or `meta` value has Nomad's text."""
    register(api, make_job("web", meta="1"))
    worker = make_job("worker", meta="2")
    worker["Meta"]["team"] = "ml"
    register(api, worker)
    bare = make_job("bare")
    bare["Meta"] = {}
    register(api, bare)

    def ids(expression: str) -> list[str]:
        answer = api.get("/v1/jobs", params={"filter": expression, "meta": "true"})
        assert answer.status_code == 200, answer.text
        return [j["ID"] for j in answer.json()]

    assert ids('Meta.revision == "1"') == ["web"]
    assert ids('Meta.team == "ml"') == ["worker"], "a job without the key is not an error"
    assert ids('Meta.team != "ml"') == ["bare", "web"]
    assert ids('"team" in Meta') == ["worker"]
    assert ids('"team" not in Meta and Meta is not empty') == ["web"]
    assert ids('ID matches "^w" and not (ID contains "ork")') == ["web"]
    assert ids('TaskGroups.0.Name == "server" or Type == batch') == ["bare", "web", "worker"]
    assert ids('Meta["revision"] contains "2"') == ["worker"]
    listed = api.get("/v1/jobs", params={"meta": "true"}).json()
    assert "Meta" not in next(j for j in listed if j["ID"] == "bare")
    assert next(j for j in listed if j["ID"] == "worker")["Meta"] == {"revision": "2", "team": "ml"}
    bad = api.get("/v1/jobs", params={"filter": 'Meta.revision =! "1"'})
    assert bad.status_code == 400
    assert bad.text.startswith("failed to create result paginator: failed to read filter expression: ")
    unknown = api.get("/v1/jobs", params={"filter": 'Nope == "x"'})
    assert (unknown.status_code, unknown.text) == (
        400,
        "failed to read result page: error finding value in datum: /Nope at part 0: couldn't find struct field "
        'with name "Nope"',
    )
    bad_meta = api.get("/v1/jobs", params={"meta": "yes"})
    assert (bad_meta.status_code, bad_meta.text) == (
        500,
        'Failed to parse value of "meta" (yes) as a bool: strconv.ParseBool: parsing "yes": invalid syntax',
    )
    refused = api.get("/v1/jobs", params={"filter": "any TaskGroups as g { g.Count == 1 }"})
    assert refused.status_code == 400 and refused.text.startswith("failed to create result paginator: ")


def test_allocation_and_deployment_lists_filter_the_full_objects(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/alloc_endpoint.go List (the allocation with its Job: `Job.Meta.x` works; stubs without
    PreviousAllocation; `task_states=false`) and nomad/deployment_endpoint.go List (full deployments)."""
    rolled_out(nomad, api, make_job("web", meta="1"))
    rolled_out(nomad, api, make_job("api", meta="2"))
    found = api.get("/v1/allocations", params={"filter": 'Job.Meta.revision == "2"'}).json()
    assert [a["JobID"] for a in found] == ["api"] and "PreviousAllocation" not in found[0]
    healthy = api.get("/v1/allocations", params={"filter": 'DeploymentStatus.Healthy == true and JobID != "web"'})
    assert [a["JobID"] for a in healthy.json()] == ["api"]
    lean = api.get("/v1/allocations", params={"task_states": "false"}).json()
    assert len(lean) == 2 and all("TaskStates" not in a for a in lean)
    deployments = api.get("/v1/deployments", params={"filter": 'JobID == "web" and Status == "successful"'}).json()
    assert [d["JobID"] for d in deployments] == ["web"] and deployments[0]["TaskGroups"]["server"]["HealthyAllocs"] == 1
    assert [d["JobID"] for d in api.get("/v1/deployments").json()] == ["web", "api"]


def test_a_filter_through_a_nil_pointer_fails_the_request(nomad: NomadDouble, api: httpx.Client) -> None:
    """go-bexpr getValue on pointerstructure: a path through a nil pointer (an allocation whose health is not
    reported yet has no DeploymentStatus) is an error for the whole request, as in Nomad."""
    nomad.default_scenario = scenarios.manual(start_after=0)
    register(api, make_job())
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 1)
    answer = api.get("/v1/allocations", params={"filter": "DeploymentStatus.Healthy == true"})
    assert (answer.status_code, answer.text) == (
        400,
        "failed to read result page: error finding value in datum: /DeploymentStatus/Healthy: at part 1, invalid "
        "value kind: invalid",
    )


def test_lists_and_job_reads_are_blocking_queries(nomad: NomadDouble, api: httpx.Client) -> None:
    """command/agent blocking queries: `/v1/allocations`, `/v1/deployments`, `/v1/job/:id/summary`,
    `/v1/job/:id/deployments` wait at `index` until their table changes."""
    rolled_out(nomad, api, make_job())
    for path in ("/v1/allocations", "/v1/deployments", "/v1/job/web/summary", "/v1/job/web/deployments"):
        index = api.get(path).headers["X-Nomad-Index"]
        out: list[httpx.Response] = []

        def wait(path: str = path, index: str = index, out: list[httpx.Response] = out) -> None:
            out.append(api.get(path, params={"index": index, "wait": "5s"}))

        thread = threading.Thread(target=wait)
        thread.start()
        register(api, make_job(meta=f"changed {path}"))
        thread.join(5)
        assert out and int(out[0].headers["X-Nomad-Index"]) > int(index), path
        nomad.wait_for(lambda n: deployments_of(n, "web")[-1]["Status"] == "successful", timeout=10)


def test_job_summary_and_deployments(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/job_endpoint.go Summary (404 `job not found`) and Deployments (newest first)."""
    rolled_out(nomad, api, make_job(count=2))
    summary = api.get("/v1/job/web/summary").json()
    assert summary["Summary"]["server"] == {
        "Queued": 0, "Complete": 0, "Failed": 0, "Running": 2, "Starting": 0, "Lost": 0, "Unknown": 0,
    }  # fmt: skip
    assert summary["Children"] == {"Pending": 0, "Running": 0, "Dead": 0} and summary["JobID"] == "web"
    missing = api.get("/v1/job/nope/summary")
    assert (missing.status_code, missing.text) == (404, "job not found")
    rolled_out(nomad, api, make_job(count=2, meta="2"))
    assert [d["JobVersion"] for d in api.get("/v1/job/web/deployments").json()] == [1, 0]


# --- register and plan ------------------------------------------------------------------------------------------


def test_preserve_counts_keeps_the_scaled_count(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/state/state_store.go updatePreservedValues: with PreserveCounts a re-submit keeps each group's
    current count; without it, the submitted count wins (a scale is undone)."""
    rolled_out(nomad, api, make_job(count=1))
    api.post("/v1/job/web/scale", json={"Count": 2, "Target": {"Group": "server"}}).raise_for_status()
    nomad.wait_for(lambda n: [d["Status"] for d in deployments_of(n, "web")] == ["successful", "successful"])
    register(api, make_job(count=1, meta="2"), PreserveCounts=True)
    job = api.get("/v1/job/web").json()
    assert (job["Version"], job["TaskGroups"][0]["Count"], job["Meta"]) == (2, 2, {"revision": "2"})
    register(api, make_job(count=1, meta="3"))
    assert api.get("/v1/job/web").json()["TaskGroups"][0]["Count"] == 1


def test_plan_index_is_the_job_modify_index(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/job_endpoint.go Plan: Index and JobModifyIndex are the existing job's JobModifyIndex (0 for a new
    job), and so is X-Nomad-Index."""
    new = api.put("/v1/job/web/plan", json={"Job": make_job()})
    assert (new.json()["Index"], new.headers["X-Nomad-Index"]) == (0, "0")
    created = rolled_out(nomad, api, make_job())
    planned = api.put("/v1/job/web/plan", json={"Job": make_job(meta="2")})
    assert planned.json()["Index"] == planned.json()["JobModifyIndex"] == created["JobModifyIndex"]
    assert planned.headers["X-Nomad-Index"] == str(created["JobModifyIndex"])
    assert nomad.index > created["JobModifyIndex"]


def test_logs_query_refusals(nomad: NomadDouble, api: httpx.Client) -> None:
    """command/agent/fs_endpoint.go Logs: the agent checks the query in this order, with these 400 texts."""
    base = {"task": "backend", "type": "stdout"}
    cases = [
        ("/v1/client/fs/logs/", base, "must provide a valid alloc id"),
        ("/v1/client/fs/logs/x", {"type": "stdout"}, "must provide task name"),
        (
            "/v1/client/fs/logs/x",
            {**base, "follow": "yes"},
            'failed to parse follow field to boolean: strconv.ParseBool: parsing "yes": invalid syntax',
        ),
        (
            "/v1/client/fs/logs/x",
            {**base, "plain": "no"},
            'failed to parse plain field to boolean: strconv.ParseBool: parsing "no": invalid syntax',
        ),
        ("/v1/client/fs/logs/x", {"task": "backend"}, "must provide log type (stdout/stderr)"),
        (
            "/v1/client/fs/logs/x",
            {**base, "offset": "1k"},
            'error parsing offset: strconv.ParseInt: parsing "1k": invalid syntax',
        ),
    ]
    for path, params, text in cases:
        answer = api.get(path, params=params)
        assert (answer.status_code, answer.text) == (400, text), params
    assert api.get("/v1/client/fs/logs/x", params={**base, "follow": "0", "plain": "1"}).status_code == 404


def test_a_filter_on_the_meta_of_a_job_without_meta_selects_nothing(nomad: NomadDouble) -> None:
    """Job.Meta is a field of Nomad's struct even when empty (a nil map, structs.go): a key of it is missing,
    not an error, so `Meta.x == "y"` is false for such a job, on the jobs and through an allocation's Job."""
    api = httpx.Client(base_url=nomad.address)
    bare = {"ID": "bare", "Name": "bare", "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": 1, "Tasks": [{"Name": "t", "Driver": "docker", "Config": {"image": "nginx"}}]}
    ]}  # fmt: skip
    api.post("/v1/jobs", json={"Job": bare}).raise_for_status()
    assert api.get("/v1/jobs", params={"filter": 'Meta.owner == "x"'}).json() == []
    assert api.get("/v1/allocations", params={"filter": 'Job.Meta.owner == "x"'}).json() == []
    assert [j["ID"] for j in api.get("/v1/jobs", params={"filter": "Meta is empty"}).json()] == ["bare"]
