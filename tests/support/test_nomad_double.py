"""Tests of the Nomad HTTP double (tests/nomad_double): the API shapes and behaviour the project's Nomad client
is tested against. There is no Nomad binary here; these tests check the double against the reference
(/work/shared/reference/nomad-api.md), and client mode against a real Consul agent and llama.cpp server.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.components import llama_command
from tests.support.nomad_double import LocalClient, NomadDouble, ScenarioError, scenarios
from tests.support.nomad_double.api_structs import TABLE_FILE, load
from tests.support.nomad_double.context import AllocContext
from tests.support.nomad_double.jsoncopy import clone

SECOND = 10**9
REFERENCE = Path("/work/shared/reference/nomad-api.md")
JSON = dict[str, Any]


def make_job(job_id: str = "web", count: int = 1, image: str = "redis:7", meta: str = "1") -> JSON:
    """A service job shaped like the project's compiled jobs: one group, a docker task, a nomad-provider
    service with an http check, and an update strategy with auto-revert."""
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": "service",
        "Datacenters": ["dc1"],
        "Meta": {"revision": meta},
        "TaskGroups": [
            {
                "Name": "server",
                "Count": count,
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
                "Update": {
                    "MinHealthyTime": 10 * SECOND,
                    "HealthyDeadline": 300 * SECOND,
                    "ProgressDeadline": 600 * SECOND,
                    "AutoRevert": True,
                },
                "Services": [
                    {
                        "Name": f"{job_id}-http",
                        "PortLabel": "http",
                        "Provider": "nomad",
                        "Checks": [{"Type": "http", "Path": "/v1/models", "Interval": SECOND, "Timeout": SECOND}],
                    }
                ],
                "Tasks": [
                    {
                        "Name": "backend",
                        "Driver": "docker",
                        "Config": {"image": image, "args": ["--port", "${NOMAD_PORT_http}"]},
                        "Resources": {"CPU": 500, "MemoryMB": 1024},
                    }
                ],
            }
        ],
    }


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble(heartbeat_interval=0.2) as double:
        yield double


@pytest.fixture
def api(nomad: NomadDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nomad.address, timeout=10) as client:
        yield client


def register(api: httpx.Client, job: JSON, **extra: Any) -> JSON:
    response = api.put("/v1/jobs", json={"Job": job, **extra})
    assert response.status_code == 200, response.text
    body: JSON = response.json()
    return body


def deployments_of(nomad: NomadDouble, job_id: str) -> list[JSON]:
    found = [d for d in nomad.deployments.values() if d["JobID"] == job_id]
    return sorted(found, key=lambda d: d["CreateIndex"])


def allocs_of(nomad: NomadDouble, job_id: str) -> list[JSON]:
    found = [a for a in nomad.allocations.values() if a["JobID"] == job_id]
    return sorted(found, key=lambda a: a["CreateIndex"])


def wait_deployment(nomad: NomadDouble, job_id: str, status: str, timeout: float = 5.0) -> JSON:
    nomad.wait_for(lambda n: any(d["Status"] == status for d in deployments_of(n, job_id)), timeout)
    return next(d for d in reversed(deployments_of(nomad, job_id)) if d["Status"] == status)


def replay(api: httpx.Client, params: list[tuple[str, str]]) -> list[JSON]:
    """Every buffered frame of the event stream (from index 1), read until the first heartbeat."""
    frames: list[JSON] = []
    with api.stream("GET", "/v1/event/stream", params=[("index", "1"), *params]) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            frame = json.loads(line)
            if frame == {}:
                return frames
            frames.append(frame)
    raise AssertionError("the stream ended without a heartbeat")


def events_of(frames: list[JSON], topic: str) -> list[JSON]:
    return [e for f in frames for e in f["Events"] if e["Topic"] == topic]


# --- api struct table and strict decoding -------------------------------------------------------------------


def test_api_struct_table_is_the_reference_field_list_verbatim() -> None:
    table = load()
    assert table["Resources"]["MemoryMB"].hcl_name == "memory"
    assert table["Resources"]["MemoryMB"].type == "int"
    assert table["UpdateStrategy"]["MinHealthyTime"].type == "dur(ns)"
    assert table["Port"]["Label"].label and table["Port"]["Value"].hcl_name == "static"
    assert table["Job"]["NodePool"].hcl_name == "node_pool"
    assert str(table["ServiceCheck"]["Header"].spec) == "map<list<string>>"
    lines = [line for line in TABLE_FILE.read_text().splitlines() if line.startswith("- **")]
    assert len(lines) == len(table) == 52
    if REFERENCE.exists():  # the reference lives beside the checkout, not in it
        reference = REFERENCE.read_text().splitlines()
        assert all(line in reference for line in lines)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda j: j["TaskGroups"][0]["Tasks"][0]["Resources"].update(MemoryMb=2048),
            'unknown field "TaskGroups[0].Tasks[0].Resources.MemoryMb"',
        ),
        (
            lambda j: j["TaskGroups"][0]["Update"].update(MinHealthyTime="10s"),
            'field "TaskGroups[0].Update.MinHealthyTime" must be a JSON integer of nanoseconds (dur(ns)), '
            'got string "10s"',
        ),
        (
            lambda j: j["TaskGroups"][0]["Update"].update(HealthyDeadline=1.5e9),
            'field "TaskGroups[0].Update.HealthyDeadline" must be a JSON integer of nanoseconds',
        ),
        (
            lambda j: j["TaskGroups"][0]["Tasks"][0].update(driver="docker"),
            'unknown field "TaskGroups[0].Tasks[0].driver"',
        ),
        (lambda j: j.update(Priority=True), 'field "Priority" must be a JSON integer (int), got boolean True'),
        (lambda j: j["TaskGroups"][0].update(Count=-1 + 2**64), 'field "TaskGroups[0].Count" must be a JSON integer'),
    ],
)
def test_strict_decoding_rejects_what_nomad_would_drop_or_fail(api: httpx.Client, mutate: Any, message: str) -> None:
    job = make_job()
    mutate(job)
    for path in ("/v1/jobs", "/v1/validate/job", "/v1/job/web/plan"):
        response = api.put(path, json={"Job": job})
        assert response.status_code == 400, path
        assert response.headers["content-type"].startswith("text/plain")
        assert message in response.text


def test_strict_decoding_accepts_free_form_config_and_rejects_unknown_wrapper_keys(api: httpx.Client) -> None:
    job = make_job()
    job["TaskGroups"][0]["Tasks"][0]["Config"]["labels"] = [{"any": {"nested": [1, 2.5, None]}}]
    assert api.put("/v1/validate/job", json={"Job": job}).status_code == 200
    response = api.put("/v1/jobs", json={"Job": job, "EnforceIdx": True})
    assert response.status_code == 400
    assert response.text == 'unknown field "EnforceIdx" in the request body'


# --- register, validate, plan ---------------------------------------------------------------------------------


def test_validate_needs_the_job_wrapper_and_reports_server_side_errors(api: httpx.Client) -> None:
    response = api.put("/v1/validate/job", json=make_job())  # the bare job, as the docs wrongly suggest
    assert (response.status_code, response.text) == (400, "Job must be specified")

    ok = api.put("/v1/validate/job", json={"Job": make_job()}).json()
    assert ok == {"DriverConfigValidated": True, "ValidationErrors": None, "Error": "", "Warnings": ""}

    bad = make_job()
    group = bad["TaskGroups"][0]
    group["Update"].update(MinHealthyTime=400 * SECOND)
    group["Services"][0]["Checks"][0].update(Interval=SECOND // 2, Type="script")
    group["Tasks"][0]["KillTimeout"] = 700 * SECOND
    bad["TaskGroups"].append(json.loads(json.dumps(group)))
    body = api.put("/v1/validate/job", json={"Job": bad}).json()
    text = body["Error"]
    assert "Job task group 2 redefines 'server' from group 1" in body["ValidationErrors"]
    assert body["ValidationErrors"][0].startswith("Task group server validation failed: 4 errors occurred:\n\t* ")
    assert text.startswith("3 errors occurred:\n\t* ")
    assert "Minimum healthy time must be less than healthy deadline: 6m40s > 5m0s" in text
    assert "interval (500ms) cannot be lower than 1s" in text
    assert "check type 'script' is not supported by the nomad provider" in text
    assert "KillTimeout (11m40s) longer than the group's ProgressDeadline (10m0s)" in text

    register_response = api.put("/v1/jobs", json={"Job": bad})
    assert register_response.status_code == 500
    assert register_response.text == text


def test_validate_checks_task_resources_as_nomad_does(api: httpx.Client) -> None:
    job = make_job()
    job["TaskGroups"][0]["Tasks"][0]["Resources"] = {"CPU": 500, "MemoryMB": 9, "MemoryMaxMB": 8}
    body = api.put("/v1/validate/job", json={"Job": job}).json()
    assert "minimum MemoryMB value is 10; got 9" in body["Error"]
    assert "MemoryMaxMB value (8) should be larger than MemoryMB value (9)" in body["Error"]
    job["TaskGroups"][0]["Tasks"][0]["Resources"] = {"CPU": 100, "MemoryMB": 10, "MemoryMaxMB": 10}
    assert api.put("/v1/validate/job", json={"Job": job}).json()["ValidationErrors"] is None


def test_register_shapes_versions_and_unchanged_reregister(nomad: NomadDouble, api: httpx.Client) -> None:
    first = register(api, make_job())
    assert set(first) >= {"EvalID", "EvalCreateIndex", "JobModifyIndex", "Warnings", "Index"}
    wait_deployment(nomad, "web", "successful")
    job = api.get("/v1/job/web").json()
    assert (job["Version"], job["JobModifyIndex"], job["Stable"], job["Status"]) == (
        0,
        first["JobModifyIndex"],
        True,
        "running",
    )

    again = register(api, make_job())  # unchanged: new evaluation, no new version, no new deployment
    assert again["EvalID"] != first["EvalID"]
    # nomad/job_endpoint.go Register: an unchanged job answers with its ModifyIndex (moved by the deployment's
    # success marking it stable), not its JobModifyIndex.
    assert again["JobModifyIndex"] == job["ModifyIndex"] > first["JobModifyIndex"]
    nomad.wait_for(lambda n: n.evaluations[again["EvalID"]]["Status"] == "complete")
    assert api.get("/v1/job/web").json()["Version"] == 0
    assert len(deployments_of(nomad, "web")) == 1
    assert nomad.evaluations[again["EvalID"]]["DeploymentID"] == deployments_of(nomad, "web")[0]["ID"]

    changed = register(api, make_job(meta="2"))
    assert changed["JobModifyIndex"] > first["JobModifyIndex"]
    nomad.wait_for(lambda n: len([d for d in deployments_of(n, "web") if d["Status"] == "successful"]) == 2)
    second = deployments_of(nomad, "web")[-1]
    assert api.get("/v1/job/web").json()["Version"] == 1
    assert second["JobVersion"] == 1
    old, new = allocs_of(nomad, "web")
    assert (old["DesiredStatus"], old["ClientStatus"]) == ("stop", "complete")
    assert (new["DesiredStatus"], new["JobVersion"]) == ("run", 1)


def test_enforce_index_check_and_set(nomad: NomadDouble, api: httpx.Client) -> None:
    created = register(api, make_job(), EnforceIndex=True, JobModifyIndex=0)
    index = created["JobModifyIndex"]
    response = api.put("/v1/jobs", json={"Job": make_job(meta="2"), "EnforceIndex": True, "JobModifyIndex": 999})
    assert response.status_code == 500
    assert response.text == f"Enforcing job modify index 999: job exists with conflicting job modify index: {index}"
    response = api.put("/v1/jobs", json={"Job": make_job(meta="2"), "EnforceIndex": True, "JobModifyIndex": 0})
    assert (response.status_code, response.text) == (500, "Enforcing job modify index 0: job already exists")
    missing = api.put("/v1/job/other", json={"Job": make_job("other"), "EnforceIndex": True, "JobModifyIndex": 5})
    assert missing.text == "Enforcing job modify index 5: job does not exist"

    concurrent = nomad.modify_job("web")  # someone else changed the job since we read its index
    assert concurrent > index and nomad.jobs["default/web"]["Version"] == 1
    response = api.put("/v1/job/web", json={"Job": make_job(meta="2"), "EnforceIndex": True, "JobModifyIndex": index})
    assert (
        response.text
        == f"Enforcing job modify index {index}: job exists with conflicting job modify index: {concurrent}"
    )
    ok = register(api, make_job(meta="2"), EnforceIndex=True, JobModifyIndex=concurrent)
    assert ok["JobModifyIndex"] > concurrent

    # A change between plan and register, made deterministic by running it just before the plan's answer:
    nomad.after_request("POST", r"^/v1/job/web/plan$", lambda: nomad.modify_job("web", meta={"by": "someone"}))
    planned = api.post("/v1/job/web/plan", json={"Job": make_job(meta="3")}).json()
    assert planned["JobModifyIndex"] == ok["JobModifyIndex"]  # computed before the change
    lost = api.put(
        "/v1/jobs", json={"Job": make_job(meta="3"), "EnforceIndex": True, "JobModifyIndex": planned["JobModifyIndex"]}
    )
    assert lost.status_code == 500 and "job exists with conflicting job modify index" in lost.text
    assert nomad.jobs["default/web"]["Meta"]["by"] == "someone"


def test_register_rejects_missing_or_mismatched_ids(api: httpx.Client) -> None:
    job = make_job()
    del job["ID"]
    assert api.put("/v1/jobs", json={"Job": job}).text == "Job ID hasn't been provided"
    mismatch = api.post("/v1/job/other", json={"Job": make_job()})
    assert (mismatch.status_code, mismatch.text) == (400, "Job ID does not match name")
    assert api.put("/v1/jobs", content=b"{not json").status_code == 400


def test_plan_diff_types_and_desired_updates(nomad: NomadDouble, api: httpx.Client) -> None:
    added = api.put("/v1/job/web/plan", json={"Job": make_job(count=2), "Diff": True}).json()
    assert added["Diff"]["Type"] == "Added"
    assert added["JobModifyIndex"] == 0
    assert added["Annotations"]["DesiredTGUpdates"]["server"]["Place"] == 2
    assert added["FailedTGAllocs"] is None
    assert nomad.jobs == {}  # a plan changes nothing

    created = register(api, make_job(count=2))
    wait_deployment(nomad, "web", "successful")
    same = api.put("/v1/job/web/plan", json={"Job": make_job(count=2), "Diff": True}).json()
    assert same["Diff"]["Type"] == "None"
    assert same["JobModifyIndex"] == created["JobModifyIndex"]
    assert (
        same["Annotations"]["DesiredTGUpdates"]["server"] | {"Ignore": 2, "Place": 0}
        == same["Annotations"]["DesiredTGUpdates"]["server"]
    )
    edited = api.put("/v1/job/web/plan", json={"Job": make_job(count=3, image="redis:8"), "Diff": True}).json()
    updates = edited["Annotations"]["DesiredTGUpdates"]["server"]
    assert edited["Diff"]["Type"] == "Edited"
    # scheduler/reconciler computeUnderProvisionedBy: no deployment yet, so MaxParallel (1) new allocations,
    # used by the placement the count asks for; both destructive updates wait (Ignore).
    assert (updates["DestructiveUpdate"], updates["Place"], updates["Ignore"]) == (0, 1, 2)
    assert api.put("/v1/job/web/plan", json={"Job": make_job()}).json()["Diff"] is None

    nomad.set_scenario("gpu", scenarios.placement_failure())
    failing = api.put("/v1/job/gpu/plan", json={"Job": make_job("gpu", count=2)}).json()
    metric = failing["FailedTGAllocs"]["server"]
    assert metric["DimensionExhausted"] == {"devices: no devices match request": 3}
    assert metric["CoalescedFailures"] == 1


def test_plan_field_diff_is_contextual_and_shaped_like_nomads(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/structs/diff.go with contextual=true and scheduler/annotate.go: a job's, group's or task's own
    fields are listed only when they change; an edited object lists its unchanged fields too; equal objects are
    left out; Count and tasks carry the scheduler's annotations."""
    register(api, make_job(count=2))
    wait_deployment(nomad, "web", "successful")
    edited = make_job(count=3, image="redis:8", meta="2")
    edited["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMB"] = 2048
    diff = api.put("/v1/job/web/plan", json={"Job": edited, "Diff": True}).json()["Diff"]
    assert diff["Type"] == "Edited" and diff["ID"] == "web"
    assert diff["Fields"] == [{"Type": "Edited", "Name": "Meta[revision]", "Old": "1", "New": "2",
                               "Annotations": None}], "unchanged job fields (Priority ...) are not listed"  # fmt: skip
    (group,) = diff["TaskGroups"]
    assert group["Type"] == "Edited" and group["Updates"] == {"create": 1, "ignore": 2}
    assert group["Fields"] == [
        {"Type": "Edited", "Name": "Count", "Old": "2", "New": "3", "Annotations": ["forces create"]}
    ]
    (task,) = group["Tasks"]
    assert task["Name"] == "backend" and task["Annotations"] == ["forces create/destroy update"]
    objects = {o["Name"]: o for o in task["Objects"]}
    assert set(objects) == {"Config", "Resources"}, "equal objects (the service, LogConfig) are left out"
    config_fields = {f["Name"]: (f["Type"], f["Old"], f["New"]) for f in objects["Config"]["Fields"]}
    assert config_fields["image"] == ("Edited", "redis:7", "redis:8")
    assert config_fields["args[0]"] == ("None", "--port", "--port"), "an edited object keeps its context"
    resources = {f["Name"]: (f["Type"], f["Old"], f["New"]) for f in objects["Resources"]["Fields"]}
    assert resources["MemoryMB"] == ("Edited", "1024", "2048") and resources["CPU"] == ("None", "500", "500")
    assert resources["DiskMB"] == ("None", "0", "0"), "zero values are fields too, as in Go's flatmap"
    same = api.put("/v1/job/web/plan", json={"Job": make_job(count=2), "Diff": True}).json()["Diff"]
    assert same["Type"] == "None" and same["Fields"] is None
    assert [(g["Type"], g["Updates"]) for g in same["TaskGroups"]] == [("None", {"ignore": 2})]


def test_plan_diff_of_services_and_in_place_changes(nomad: NomadDouble, api: httpx.Client) -> None:
    register(api, make_job())
    wait_deployment(nomad, "web", "successful")
    tagged = make_job()
    service = tagged["TaskGroups"][0]["Services"][0]
    service["Tags"] = ["v2"]
    service["Checks"][0]["Path"] = "/health"
    task = api.put("/v1/job/web/plan", json={"Job": tagged, "Diff": True}).json()["Diff"]["TaskGroups"][0]
    (service_diff,) = task["Objects"]
    assert (service_diff["Type"], service_diff["Name"]) == ("Edited", "Service")
    assert {"Type": "None", "Name": "PortLabel", "Old": "http", "New": "http", "Annotations": None} in service_diff[
        "Fields"
    ]
    nested = {o["Name"]: o for o in service_diff["Objects"]}
    assert nested["Tags"]["Type"] == "Added" and nested["Tags"]["Fields"][0]["New"] == "v2"
    check_fields = {f["Name"]: (f["Old"], f["New"]) for f in nested["Check"]["Fields"] if f["Type"] != "None"}
    assert check_fields == {"Path": ("/v1/models", "/health")}
    assert task["Tasks"][0]["Type"] == "None", "a group service is not the task's"
    killed = make_job()
    killed["TaskGroups"][0]["Tasks"][0]["KillTimeout"] = 30 * SECOND
    task_diff = api.put("/v1/job/web/plan", json={"Job": killed, "Diff": True}).json()["Diff"]["TaskGroups"][0]
    assert task_diff["Tasks"][0]["Annotations"] == ["forces in-place update"], "KillTimeout alone is in place"


def test_nodes_list_stubs_and_full_nodes() -> None:
    from tests.support.nomad_double.objects import new_node, nvidia_gpus

    gpu = new_node("gpu-1", http_addr="10.0.0.5:4646", node_pool="gpu", devices=[nvidia_gpus("NVIDIA A10", 2, 24576)])
    with NomadDouble(nodes=[gpu, new_node("cpu-1")]) as nomad, httpx.Client(base_url=nomad.address) as client:
        stubs = client.get("/v1/nodes").json()
        with_resources = client.get("/v1/nodes", params={"resources": "true", "os": "true"}).json()
        full = client.get(f"/v1/node/{gpu['ID']}").json()
        missing = client.get("/v1/node/nope")
    assert [s["Name"] for s in stubs] == ["gpu-1", "cpu-1"]
    assert stubs[0]["Address"] == "10.0.0.5" and stubs[0]["NodePool"] == "gpu" and stubs[0]["Version"] == "1.9.7"
    assert "NodeResources" not in stubs[0] and "Attributes" not in stubs[0]
    assert with_resources[0]["NodeResources"]["Devices"][0]["Name"] == "NVIDIA A10"
    assert with_resources[0]["Attributes"] == {"os.name": "ubuntu"}
    assert full["HTTPAddr"] == "10.0.0.5:4646" and full["Attributes"]["unique.network.ip-address"] == "10.0.0.5"
    assert missing.status_code == 404


# --- scenarios ------------------------------------------------------------------------------------------------


def test_rollout_sequence_and_shapes(nomad: NomadDouble, api: httpx.Client) -> None:
    created = register(api, make_job(count=2))
    deployment = wait_deployment(nomad, "web", "successful")
    assert deployment["StatusDescription"] == "Deployment completed successfully"
    group = deployment["TaskGroups"]["server"]
    assert (group["DesiredTotal"], group["PlacedAllocs"], group["HealthyAllocs"], group["UnhealthyAllocs"]) == (
        2,
        2,
        2,
        0,
    )

    evaluation = api.get(f"/v1/evaluation/{created['EvalID']}").json()
    assert (evaluation["Status"], evaluation["DeploymentID"]) == ("complete", deployment["ID"])
    for omitted in ("BlockedEval", "FailedTGAllocs", "StatusDescription", "NextEval", "PreviousEval"):
        assert omitted not in evaluation  # full evaluations omit empty fields (§3.9)

    stubs = api.get("/v1/job/web/allocations").json()
    assert len(stubs) == 2
    stub = stubs[0]
    assert "Job" not in stub and stub["FollowupEvalID"] == "" and stub["DeploymentStatus"]["Healthy"] is True
    assert (stub["ClientStatus"], stub["DesiredStatus"], stub["Name"]) == ("running", "run", "web.server[0]")
    events = stub["TaskStates"]["backend"]["Events"]
    assert [e["Type"] for e in events] == ["Received", "Task Setup", "Driver", "Started"]
    assert events[2]["DisplayMessage"] == "Downloading image redis:7"

    alloc = api.get(f"/v1/allocation/{stub['ID']}").json()
    assert "FollowupEvalID" not in alloc and alloc["Job"]["ID"] == "web"
    (port,) = alloc["AllocatedResources"]["Shared"]["Ports"]
    assert port["Label"] == "http" and isinstance(port["Value"], int) and port["HostIP"] == "127.0.0.1"

    service = api.get("/v1/service/web-http").json()
    assert {s["AllocID"] for s in service} == {s["ID"] for s in stubs}
    assert service[0]["ID"] == f"_nomad-task-{service[0]['AllocID']}-group-server-web-http-http"
    checks = api.get(f"/v1/client/allocation/{stub['ID']}/checks").json()
    assert [c["Status"] for c in checks.values()] == ["success"]

    frames = replay(api, [("topic", "Deployment:web"), ("topic", "Allocation:web"), ("topic", "Evaluation:web")])
    statuses = [e["Payload"]["Deployment"]["Status"] for e in events_of(frames, "Deployment")]
    assert statuses[0] == "running" and statuses[-1] == "successful"
    first_alloc = [e["Payload"]["Allocation"] for e in events_of(frames, "Allocation") if e["Key"] == stub["ID"]]
    client_statuses = [a["ClientStatus"] for a in first_alloc]
    assert client_statuses[0] == "pending" and client_statuses[-1] == "running"
    healthy_at = next(i for i, a in enumerate(first_alloc) if (a.get("DeploymentStatus") or {}).get("Healthy"))
    assert all(a["ClientStatus"] == "running" for a in first_alloc[healthy_at:])
    evaluations = [e["Payload"]["Evaluation"] for e in events_of(frames, "Evaluation")]
    assert [e["Status"] for e in evaluations if e["ID"] == created["EvalID"]] == ["pending", "complete"]
    # The deployment watcher's evaluation (1s after the last allocation turned healthy) marks it successful.
    (watcher,) = {e["ID"]: e for e in evaluations if e["TriggeredBy"] == "deployment-watcher"}.values()
    assert (watcher["Status"], watcher["DeploymentID"]) == ("complete", deployment["ID"])


def test_rollout_with_download_runs_the_prestart_task_first(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(download=True, stdout={"download-model": "fetching weights\n"})
    with httpx.Client(base_url=nomad.address) as api:
        register(api, make_job())
        wait_deployment(nomad, "web", "successful")
        (alloc,) = allocs_of(nomad, "web")
        download, main = alloc["TaskStates"]["download-model"], alloc["TaskStates"]["backend"]
        assert (download["State"], download["Failed"]) == ("dead", False)
        assert download["FinishedAt"] <= main["StartedAt"]
        logs = api.get(
            f"/v1/client/fs/logs/{alloc['ID']}", params={"task": "download-model", "type": "stdout", "plain": "true"}
        )
        assert logs.text == "fetching weights\n"


def test_batch_job_runs_to_completion_without_a_deployment(nomad: NomadDouble, api: httpx.Client) -> None:
    job = make_job("nightly")
    job["Type"] = "batch"
    del job["TaskGroups"][0]["Update"]
    register(api, job)
    nomad.wait_for(lambda n: n.jobs["default/nightly"]["Status"] == "dead")
    (alloc,) = allocs_of(nomad, "nightly")
    assert (alloc["ClientStatus"], alloc["DeploymentID"]) == ("complete", "")
    assert alloc["TaskStates"]["backend"]["Events"][-1]["DisplayMessage"] == "Exit Code: 0"
    assert api.get("/v1/job/nightly/deployment").text == "null"


def test_a_group_with_count_zero_gets_no_deployment(nomad: NomadDouble, api: httpx.Client) -> None:
    created = register(api, make_job(count=0))  # scheduler/reconcile.go: no deployment for DesiredTotal 0
    nomad.wait_for(lambda n: n.evaluations[created["EvalID"]]["Status"] == "complete")
    assert deployments_of(nomad, "web") == [] and allocs_of(nomad, "web") == []
    assert api.get("/v1/job/web/deployment").text == "null"


def test_latest_deployment_is_null_before_the_first_one(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.manual(start_after=0.5))
    register(api, make_job())
    response = api.get("/v1/job/web/deployment")
    assert (response.status_code, response.text) == (200, "null")
    assert api.get("/v1/job/web/deployments").json() == []
    nomad.wait_for(lambda n: len(deployments_of(n, "web")) == 1)
    assert api.get("/v1/job/web/deployment").json()["Status"] == "running"


def test_placement_failure_blocks_an_evaluation(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.placement_failure())
    created = register(api, make_job(count=2))
    nomad.wait_for(lambda n: n.evaluations[created["EvalID"]]["Status"] == "complete")
    evaluation = api.get(f"/v1/evaluation/{created['EvalID']}").json()
    assert evaluation["FailedTGAllocs"]["server"] == {
        "AllocationTime": 4111,
        "ClassExhausted": None,
        "ClassFiltered": None,
        "CoalescedFailures": 1,
        "ConstraintFiltered": None,
        "DimensionExhausted": {"devices: no devices match request": 3},
        "NodesAvailable": {"dc1": 3},
        "NodesEvaluated": 3,
        "NodesExhausted": 3,
        "NodesFiltered": 0,
        "NodesInPool": 3,
        "QuotaExhausted": None,
        "ResourcesExhausted": None,
        "ScoreMetaData": None,
        "Scores": None,
    }
    blocked = api.get(f"/v1/evaluation/{evaluation['BlockedEval']}", params={"related": "true"}).json()
    assert (blocked["Status"], blocked["TriggeredBy"]) == ("blocked", "queued-allocs")
    assert blocked["StatusDescription"] == "created to place remaining allocations"
    assert blocked["PreviousEval"] == created["EvalID"]
    (related,) = blocked["RelatedEvals"]
    assert (related["ID"], related["BlockedEval"], related["NextEval"]) == (created["EvalID"], blocked["ID"], "")
    assert api.get("/v1/job/web/allocations").json() == []
    assert api.get("/v1/job/web/summary").json()["Summary"]["server"]["Queued"] == 2
    assert api.get("/v1/job/web").json()["Status"] == "pending"
    assert wait_deployment(nomad, "web", "running")["TaskGroups"]["server"]["PlacedAllocs"] == 0


def test_blocked_then_placed_recovers(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.blocked_then_placed(after=0.1))
    created = register(api, make_job())
    wait_deployment(nomad, "web", "successful")
    blocked_id = nomad.evaluations[created["EvalID"]]["BlockedEval"]
    assert nomad.evaluations[blocked_id]["Status"] == "complete"
    (alloc,) = allocs_of(nomad, "web")
    assert alloc["EvalID"] == blocked_id and alloc["ClientStatus"] == "running"  # placed by the blocked eval


def first_alloc(nomad: NomadDouble, job_id: str) -> JSON:
    """The job's first allocation ({} before there is one)."""
    allocs = allocs_of(nomad, job_id)
    return allocs[0] if allocs else {"ClientStatus": "", "DeploymentStatus": None}


def test_image_pull_failure(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.image_pull_failure())
    register(api, make_job(image="ghcr.io/x/vllm:nope"))
    nomad.wait_for(lambda n: first_alloc(n, "web")["ClientStatus"] == "failed")
    (stub,) = [s for s in api.get("/v1/job/web/allocations").json() if s["ID"] == first_alloc(nomad, "web")["ID"]]
    state = stub["TaskStates"]["backend"]
    assert [e["Type"] for e in state["Events"]] == ["Received", "Task Setup", "Driver", "Driver Failure"]
    failure = state["Events"][-1]
    expected = (
        "Failed to pull `ghcr.io/x/vllm:nope`: Error response from daemon: manifest for ghcr.io/x/vllm:nope "
        "not found: manifest unknown"
    )
    assert (failure["DriverError"], failure["DisplayMessage"], failure["FailsTask"]) == (expected, expected, True)
    assert (state["State"], state["Failed"], stub["ClientStatus"]) == ("dead", True, "failed")
    nomad.wait_for(lambda n: first_alloc(n, "web")["DeploymentStatus"] is not None)
    assert first_alloc(nomad, "web")["DeploymentStatus"]["Healthy"] is False


def test_crash_loop_restarts_then_gives_up(nomad: NomadDouble, api: httpx.Client) -> None:
    trace = "Traceback (most recent call last):\nValueError: boom\n"
    nomad.set_scenario("web", scenarios.crash_loop(stderr=trace))
    register(api, make_job())
    nomad.wait_for(lambda n: first_alloc(n, "web")["ClientStatus"] == "failed")
    alloc = first_alloc(nomad, "web")
    state = alloc["TaskStates"]["backend"]
    kinds = [e["Type"] for e in state["Events"]]  # Nomad keeps the last 10 events
    assert kinds == ["Driver", "Started", "Terminated", "Restarting", "Started", "Terminated", "Restarting",
                     "Started", "Terminated", "Not Restarting"]  # fmt: skip
    assert all(e["ExitCode"] == 1 for e in state["Events"] if e["Type"] == "Terminated")
    assert state["Events"][3]["DisplayMessage"] == "Task restarting in 15s"
    assert state["Events"][-1]["RestartReason"] == 'Exceeded allowed attempts 2 in interval 30m0s and mode is "fail"'
    assert (state["Restarts"], state["State"], state["Failed"], alloc["ClientStatus"]) == (2, "dead", True, "failed")
    logs = api.get(f"/v1/client/fs/logs/{alloc['ID']}", params={"task": "backend", "type": "stderr", "plain": "true"})
    assert logs.text == trace


def test_oom_kill(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.oom_kill())
    register(api, make_job())
    nomad.wait_for(lambda n: first_alloc(n, "web")["ClientStatus"] == "failed")
    events = first_alloc(nomad, "web")["TaskStates"]["backend"]["Events"]
    terminated = next(e for e in events if e["Type"] == "Terminated")
    assert terminated["ExitCode"] == 137
    assert terminated["Details"] == {"oom_killed": "true", "exit_code": "137"}
    assert terminated["DisplayMessage"] == 'Exit Code: 137, Exit Message: "OOM Killed"'
    assert events[-1]["Type"] == "Not Restarting"


def test_unhealthy_without_a_stable_version(nomad: NomadDouble, api: httpx.Client) -> None:
    """An allocation that misses its health deadline keeps running and is not rescheduled (only failed or lost
    ones are: reschedule.go NextRescheduleTime), so the rollout stalls until the progress deadline fails the
    deployment (deployment_watcher.go watch, shouldFail)."""
    nomad.set_scenario("web", scenarios.unhealthy())
    register(api, make_job())
    deployment = wait_deployment(nomad, "web", "failed")
    assert (
        deployment["StatusDescription"] == "Failed due to progress deadline - no stable job version to auto revert to"
    )
    assert deployment["TaskGroups"]["server"]["UnhealthyAllocs"] == 1
    (alloc,) = allocs_of(nomad, "web")
    assert alloc["DeploymentStatus"]["Healthy"] is False and alloc["ClientStatus"] == "running"
    unhealthy = alloc["TaskStates"]["backend"]["Events"][-1]
    assert (unhealthy["Type"], unhealthy["Message"]) == (
        "Alloc Unhealthy",
        "health checks did not pass within the healthy deadline",
    )


@pytest.mark.parametrize("rollback_to", [None, 0])
def test_unhealthy_rolls_back_to_the_stable_version(
    nomad: NomadDouble, api: httpx.Client, rollback_to: int | None
) -> None:
    """deployment_watcher.go: at the progress deadline, the failed deployment auto-reverts to the latest stable
    version, registered again as a new version that keeps Stable (UpdateDeploymentStatus with the job)."""
    register(api, make_job(meta="good"))
    wait_deployment(nomad, "web", "successful")
    nomad.set_scenario("web", scenarios.unhealthy(rollback_to=rollback_to))
    register(api, make_job(meta="bad"))
    failed = wait_deployment(nomad, "web", "failed")
    assert failed["JobVersion"] == 1
    assert failed["StatusDescription"] == "Failed due to progress deadline - rolling back to job version 0"
    nomad.wait_for(
        lambda n: len(deployments_of(n, "web")) == 3 and deployments_of(n, "web")[-1]["Status"] == "successful"
    )
    latest = api.get("/v1/job/web/deployment").json()
    assert (latest["JobVersion"], latest["Status"]) == (2, "successful")  # the revert is a new version
    job = api.get("/v1/job/web").json()
    assert (job["Version"], job["Meta"], job["Stable"]) == (2, {"revision": "good"}, True)
    versions = nomad.job_versions("web")
    assert [(v["Version"], v["Stable"]) for v in versions] == [(0, True), (1, False), (2, True)]
    assert versions[2]["TaskGroups"] == versions[0]["TaskGroups"]
    assert versions[2]["SubmitTime"] == versions[0]["SubmitTime"], "an auto-revert keeps the stable SubmitTime"


# --- manual control and blocking queries ------------------------------------------------------------------------


def _blocking_get(api: httpx.Client, path: str, params: dict[str, str], out: list[httpx.Response]) -> threading.Thread:
    def get() -> None:
        out.append(api.get(path, params=params))

    thread = threading.Thread(target=get)
    thread.start()
    return thread


def test_blocking_query_returns_promptly_after_a_change(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.manual(start_after=0))
    register(api, make_job())
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 1)
    alloc_id = allocs_of(nomad, "web")[0]["ID"]
    first = api.get(f"/v1/allocation/{alloc_id}")
    assert first.headers["X-Nomad-KnownLeader"] == "true" and first.headers["X-Nomad-LastContact"] == "0"
    index = int(first.headers["X-Nomad-Index"])
    out: list[httpx.Response] = []
    thread = _blocking_get(api, f"/v1/allocation/{alloc_id}", {"index": str(index), "wait": "5m"}, out)
    nomad.wait_for_held(f"/v1/allocation/{alloc_id}")
    assert not out  # still blocked: nothing changed
    nomad.update_allocation(alloc_id, task_state="running", task_events=[{"Type": "Started"}], healthy=None)
    thread.join(60)
    assert not thread.is_alive(), "woken by the change, long before the 5 minutes of its wait"
    (response,) = out
    assert int(response.headers["X-Nomad-Index"]) > index
    body = response.json()
    assert body["ClientStatus"] == "running"
    assert body["DeploymentStatus"]["Healthy"] is None
    assert body["TaskStates"]["backend"]["Events"][-1]["DisplayMessage"] == "Task started by client"


def test_blocking_query_times_out_without_a_change(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.manual(start_after=0))
    register(api, make_job())
    nomad.wait_for(lambda n: n.jobs["default/web"]["Status"] == "running")
    index = int(api.get("/v1/job/web").headers["X-Nomad-Index"])
    started = time.monotonic()
    response = api.get("/v1/job/web", params={"index": str(index), "wait": "300ms"})
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 1.5
    assert response.status_code == 200 and int(response.headers["X-Nomad-Index"]) == index
    assert api.get("/v1/job/web", params={"index": "1", "wait": "soon"}).status_code == 400
    missing = api.get("/v1/job/nope", params={"index": str(index), "wait": "100ms"})
    assert (missing.status_code, missing.text) == (404, "job not found")
    assert int(missing.headers["X-Nomad-Index"]) >= 1


def test_manual_deployment_control(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.manual(start_after=0))
    register(api, make_job(count=2))
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 2)
    deployment = deployments_of(nomad, "web")[0]
    before = nomad.index
    nomad.update_deployment(deployment["ID"], healthy_allocs=2)
    nomad.update_deployment(deployment["ID"], status="successful")
    assert nomad.index == before + 2
    body = api.get(f"/v1/deployment/{deployment['ID']}").json()
    assert (body["Status"], body["StatusDescription"]) == ("successful", "Deployment completed successfully")
    assert body["TaskGroups"]["server"]["HealthyAllocs"] == 2
    assert api.get("/v1/job/web").json()["Stable"] is True
    assert len(api.get(f"/v1/deployment/allocations/{deployment['ID']}").json()) == 2


# --- stop and purge ----------------------------------------------------------------------------------------------


def test_stop_keeps_the_job_and_purge_removes_it(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.manual(start_after=0))
    register(api, make_job())
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 1)
    stopped = api.delete("/v1/job/web")
    assert set(stopped.json()) >= {"EvalID", "EvalCreateIndex", "JobModifyIndex"}
    nomad.wait_for(lambda n: n.jobs["default/web"]["Status"] == "dead")
    job = api.get("/v1/job/web").json()
    assert (job["Stop"], job["Version"]) == (True, 1)
    (alloc,) = allocs_of(nomad, "web")
    assert (alloc["DesiredStatus"], alloc["ClientStatus"]) == ("stop", "complete")
    deployment = api.get("/v1/job/web/deployment").json()
    assert (deployment["Status"], deployment["StatusDescription"]) == ("cancelled", "Cancelled because job is stopped")

    purged = api.delete("/v1/job/web", params={"purge": "true"})
    assert purged.status_code == 200
    assert (api.get("/v1/job/web").status_code, api.get("/v1/job/web").text) == (404, "job not found")
    assert api.get("/v1/job/web/deployment").json()["ID"] == deployment["ID"]  # still readable after purge
    # nomad/job_endpoint.go Deregister: a missing job is no error, an answer without an evaluation.
    missing = api.delete("/v1/job/web")
    assert (missing.status_code, missing.headers["X-Nomad-Index"]) == (200, "0")
    assert missing.json() == {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0, "VolumeEvalID": "",
                              "VolumeEvalIndex": 0, "Index": 0, "LastContact": 0, "KnownLeader": False,
                              "NextToken": ""}  # fmt: skip


def test_the_deployments_of_a_purged_job_are_not_the_new_jobs(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.manual(start_after=0))
    register(api, make_job())
    nomad.wait_for(lambda n: len(deployments_of(n, "web")) == 1)
    (old,) = api.get("/v1/job/web/deployments").json()
    purged = api.delete("/v1/job/web", params={"purge": "true"}).json()
    nomad.wait_for(lambda n: n.evaluations[purged["EvalID"]]["Status"] == "complete")
    assert [d["ID"] for d in api.get("/v1/job/web/deployments").json()] == [old["ID"]], "no job: all are listed"
    register(api, make_job())
    nomad.wait_for(lambda n: len(deployments_of(n, "web")) == 2)
    (new,) = api.get("/v1/job/web/deployments").json()
    assert new["ID"] != old["ID"] and new["JobVersion"] == old["JobVersion"] == 0
    assert {d["ID"] for d in api.get("/v1/job/web/deployments", params={"all": "true"}).json()} == {
        old["ID"],
        new["ID"],
    }


def test_stopping_a_blocked_job_cancels_its_blocked_evaluation(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.placement_failure())
    created = register(api, make_job())
    nomad.wait_for(lambda n: bool(n.evaluations[created["EvalID"]].get("BlockedEval")))
    blocked_id = nomad.evaluations[created["EvalID"]]["BlockedEval"]
    api.delete("/v1/job/web")
    assert api.get(f"/v1/evaluation/{blocked_id}").json()["Status"] == "canceled"  # one l, unlike deployments


# --- event stream ----------------------------------------------------------------------------------------------


def test_event_stream_framing_and_key_filtering(nomad: NomadDouble, api: httpx.Client) -> None:
    register(api, make_job("other"))
    register(api, make_job("web"))
    wait_deployment(nomad, "web", "successful")
    wait_deployment(nomad, "other", "successful")
    frames = replay(api, [("topic", "Allocation:web"), ("topic", "Job:web")])
    indexes = [f["Index"] for f in frames]
    assert indexes == sorted(set(indexes))
    for frame in frames:
        assert set(frame) == {"Index", "Events"}
        for event in frame["Events"]:
            assert set(event) == {"Topic", "Type", "Key", "Namespace", "FilterKeys", "Index", "Payload"}
            assert event["Index"] == frame["Index"] and list(event["Payload"]) == [event["Topic"]]
            assert event["Key"] == "web" or "web" in event["FilterKeys"]
    allocations = events_of(frames, "Allocation")
    assert allocations and all("Job" not in e["Payload"]["Allocation"] for e in allocations)
    assert allocations[0]["Type"] == "PlanResult" and allocations[-1]["Type"] == "AllocationUpdated"
    assert events_of(frames, "Job")[0]["Type"] == "JobRegistered"
    deployment_id = deployments_of(nomad, "web")[0]["ID"]
    by_deployment = replay(api, [("topic", f"Allocation:{deployment_id}")])
    assert {e["Payload"]["Allocation"]["JobID"] for e in events_of(by_deployment, "Allocation")} == {"web"}


def test_event_stream_heartbeat_and_resume(nomad: NomadDouble, api: httpx.Client) -> None:
    register(api, make_job())
    wait_deployment(nomad, "web", "successful")
    frames = replay(api, [("topic", "Deployment:web")])
    resume_at = frames[1]["Index"]
    lines: list[tuple[float, JSON]] = []
    start = time.monotonic()
    with api.stream("GET", "/v1/event/stream", params={"topic": "Deployment:web", "index": str(resume_at)}) as stream:
        for line in stream.iter_lines():
            lines.append((time.monotonic() - start, json.loads(line)))
            if len([frame for _, frame in lines if frame == {}]) == 2:
                break
    assert lines[0][1]["Index"] == resume_at  # the frame at the resume index is sent again
    beats = [t for t, frame in lines if frame == {}]
    assert 0.1 < beats[0] < 1.0 and 0.1 < beats[1] - beats[0] < 1.0


def test_event_stream_delivers_live_events(nomad: NomadDouble, api: httpx.Client) -> None:
    received: list[JSON] = []
    ready = threading.Event()

    def listen() -> None:
        with api.stream("GET", "/v1/event/stream", params={"topic": "Deployment:web"}) as stream:
            ready.set()
            for line in stream.iter_lines():
                frame = json.loads(line)
                received.extend(frame.get("Events", []))
                if any(e["Payload"]["Deployment"]["Status"] == "successful" for e in received):
                    return

    thread = threading.Thread(target=listen)
    thread.start()
    ready.wait(5)
    register(api, make_job())
    thread.join(5)
    assert not thread.is_alive()
    assert received[0]["Payload"]["Deployment"]["Status"] == "running"


# --- ACL, faults, recording ---------------------------------------------------------------------------------------


def test_acl_tokens() -> None:
    """nomad/auth/auth.go Authenticate: the endpoints turn any authentication failure, an unknown or malformed
    token included, into 403 `Permission denied` (nomad/job_endpoint.go List); `/v1/nodes` needs the node
    policy's read (nomad/node_endpoint.go List), which a namespace policy does not give."""
    tokens = {"root": "management", "reader": "read-job", "nodes": "read node:read", "scaler": "scale"}
    with NomadDouble(acl_tokens=tokens) as nomad, httpx.Client(base_url=nomad.address) as api:
        missing = api.get("/v1/jobs")
        assert (missing.status_code, missing.text) == (403, "Permission denied")
        for bad in ("nope", "not-a-uuid-or-jwt", "00000000-0000-0000-0000-000000000000"):
            unknown = api.get("/v1/jobs", headers={"X-Nomad-Token": bad})
            assert (unknown.status_code, unknown.text) == (403, "Permission denied")
        assert api.get("/v1/jobs", headers={"Authorization": "Bearer reader"}).status_code == 200
        refused = api.get("/v1/nodes", headers={"X-Nomad-Token": "reader"})
        assert (refused.status_code, refused.text) == (403, "Permission denied")
        assert api.get("/v1/nodes", headers={"X-Nomad-Token": "nodes"}).status_code == 200
        assert api.get("/v1/jobs", headers={"X-Nomad-Token": "scaler"}).status_code == 403, "scale: no list-jobs"
        denied = api.put("/v1/jobs", json={"Job": make_job()}, headers={"X-Nomad-Token": "reader"})
        assert (denied.status_code, denied.text) == (403, "Permission denied")
        assert api.put("/v1/jobs", json={"Job": make_job()}, headers={"X-Nomad-Token": "root"}).status_code == 200
        everything = api.get("/v1/event/stream", headers={"X-Nomad-Token": "reader"})
        assert (everything.status_code, everything.text) == (403, "Permission denied")
        with api.stream("GET", "/v1/event/stream", headers={"X-Nomad-Token": "root"}) as stream:
            assert stream.status_code == 200
        with api.stream(
            "GET", "/v1/event/stream", params={"topic": "Job:web"}, headers={"X-Nomad-Token": "reader"}
        ) as stream:
            assert stream.status_code == 200


def test_faults_and_request_recording(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.faults.fail(r"^/v1/job/web$", status=500, count=2, body="rpc error: no leader")
    for _ in range(2):
        response = api.get("/v1/job/web")
        assert (response.status_code, response.text) == (500, "rpc error: no leader")
    assert api.get("/v1/job/web").text == "job not found"  # the fault is used up
    nomad.faults.drop(r"^/v1/jobs$", count=1)
    with pytest.raises(httpx.TransportError):
        api.put("/v1/jobs", json={"Job": make_job()})
    register(api, make_job())
    nomad.faults.fail("/v1/validate/job", status=200, body='{"ValidationErrors": ["faked"]}')
    faked = api.put("/v1/validate/job", json={"Job": make_job()})
    assert faked.headers["content-type"] == "application/json" and faked.json() == {"ValidationErrors": ["faked"]}
    nomad.faults.fail("/v1/status/leader", count=5)
    nomad.faults.clear()
    assert api.get("/v1/status/leader").status_code == 200
    recorded = [r for r in nomad.requests if r.path == "/v1/jobs"]
    assert len(recorded) == 2 and recorded[0].method == "PUT"
    assert json.loads(recorded[1].body)["Job"]["ID"] == "web"
    assert recorded[1].headers["content-type"] == "application/json"
    api.get("/v1/jobs", params={"prefix": "w", "meta": "true"})
    listed = nomad.requests[-1]
    assert listed.query == {"prefix": ["w"], "meta": ["true"]} and listed.time <= time.monotonic()


def test_job_list_prefix_and_meta(nomad: NomadDouble, api: httpx.Client) -> None:
    register(api, make_job("web"))
    register(api, make_job("worker"))
    register(api, make_job("api"))
    stubs = api.get("/v1/jobs", params={"prefix": "w"}).json()
    assert [s["ID"] for s in stubs] == ["web", "worker"] and "Meta" not in stubs[0]
    assert "JobSummary" in stubs[0]
    with_meta = api.get("/v1/jobs", params={"prefix": "api", "meta": "true"}).json()
    assert with_meta[0]["Meta"] == {"revision": "1"}
    assert api.get("/v1/status/leader").json() == "127.0.0.1:4647"


def test_a_crashing_scenario_fails_the_test_at_exit() -> None:
    class Broken(scenarios.Scenario):
        def live(self, ctx: AllocContext) -> None:
            raise ValueError("scenario bug")

    with pytest.raises(ScenarioError, match="scenario bug"), NomadDouble() as nomad:
        nomad.default_scenario = Broken()
        with httpx.Client(base_url=nomad.address) as api:
            register(api, make_job())
        nomad.wait_for(lambda n: bool(n.cluster.errors))


# --- logs ----------------------------------------------------------------------------------------------------------


def test_logs_plain_offsets_frames_and_follow(nomad: NomadDouble, api: httpx.Client) -> None:
    nomad.set_scenario("web", scenarios.manual(start_after=0))
    register(api, make_job())
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 1)
    alloc_id = allocs_of(nomad, "web")[0]["ID"]
    path = f"/v1/client/fs/logs/{alloc_id}"
    base = {"task": "backend", "type": "stdout"}
    # As Nomad's client (client/fs_endpoint.go): no task state yet is an unknown task, a task that has not
    # started has no log; the agent checks the query first (command/agent/fs_endpoint.go).
    answer = api.get(path, params={**base, "plain": "true"})
    assert (answer.status_code, answer.text) == (400, 'unknown task name "backend"')
    nomad.update_allocation(alloc_id, task_events=[{"Type": "Received"}])
    answer = api.get(path, params={**base, "plain": "true"})
    assert (answer.status_code, answer.text) == (404, 'task "backend" not started yet. No logs available')
    answer = api.get(path, params={**base, "type": "stdlog"})
    assert (answer.status_code, answer.text) == (400, "must provide log type (stdout/stderr)")
    assert api.get(path, params={**base, "origin": "middle"}).text == "origin must be start or end"
    nomad.update_allocation(alloc_id, task_state="running", task_events=[{"Type": "Started"}])
    nomad.write_log(alloc_id, "backend", "hello\nworld\n")
    assert api.get(path, params={**base, "plain": "true", "task": "nope"}).text == 'unknown task name "nope"'
    assert api.get(path, params={**base, "plain": "true"}).text == "hello\nworld\n"
    assert api.get(path, params={**base, "plain": "true", "origin": "end", "offset": "6"}).text == "world\n"
    framed = api.get(path, params=base).json()
    assert base64.b64decode(framed["Data"]) == b"hello\nworld\n" and framed["File"] == "alloc/logs/backend.stdout.0"
    assert api.get(path, params={"type": "stdout"}).status_code == 400
    assert api.get("/v1/client/fs/logs/nope", params=base).status_code == 404

    chunks: list[str] = []
    more = threading.Event()

    def follow() -> None:
        params = {**base, "plain": "true", "follow": "true", "origin": "end", "offset": "6"}
        with api.stream("GET", path, params=params) as stream:
            for chunk in stream.iter_text():
                chunks.append(chunk)
                if "more" in "".join(chunks):
                    more.set()

    thread = threading.Thread(target=follow)
    thread.start()
    nomad.wait_for_held(path)  # following: it has sent what there was, and waits for more
    nomad.write_log(alloc_id, "backend", "more\n")
    assert more.wait(30), chunks
    assert thread.is_alive()  # still following after the new line
    nomad.update_allocation(alloc_id, task_state="dead", task_events=[{"Type": "Terminated", "ExitCode": 0}])
    thread.join(30)
    assert not thread.is_alive() and "".join(chunks) == "world\nmore\n"


# --- client mode ----------------------------------------------------------------------------------------------------


SERVER_SCRIPT = """
import http.server, os, sys
print("alloc", os.environ["NOMAD_ALLOC_ID"], "greeting", os.environ["GREETING"], "arg", sys.argv[1], flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["NOMAD_PORT_http"])), H).serve_forever()
"""


def local_job(job_id: str, command: list[str], provider: str, path: str, env: dict[str, str] | None = None) -> JSON:
    job = make_job(job_id)
    group = job["TaskGroups"][0]
    group["Update"] = {
        "MinHealthyTime": SECOND // 2,
        "HealthyDeadline": 60 * SECOND,
        "ProgressDeadline": 120 * SECOND,
    }
    service = group["Services"][0]
    service["Provider"] = provider
    service["Checks"][0].update(Path=path, Interval=SECOND, Timeout=SECOND)
    group["Tasks"] = [
        {
            "Name": "server",
            "Driver": "raw_exec",
            "Config": {"command": command[0], "args": command[1:]},
            "Env": env or {},
            "KillTimeout": 2 * SECOND,
        }
    ]
    return job


def test_client_mode_runs_processes_with_nomad_services(tmp_path: Path) -> None:
    client = LocalClient(consul_address=None, workdir=tmp_path, check_interval=0.1)
    with NomadDouble(client=client) as nomad, httpx.Client(base_url=nomad.address, timeout=10) as api:
        command = [sys.executable, "-c", SERVER_SCRIPT, "${NOMAD_ADDR_http}"]
        register(api, local_job("local", command, "nomad", "/health", {"GREETING": "hi ${NOMAD_JOB_ID}"}))
        wait_deployment(nomad, "local", "successful", timeout=20)
        (alloc,) = allocs_of(nomad, "local")
        port = alloc["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
        assert httpx.get(f"http://127.0.0.1:{port}/health").text == "ok"
        (registration,) = api.get("/v1/service/local-http").json()
        assert (registration["Port"], registration["AllocID"]) == (port, alloc["ID"])
        checks = api.get(f"/v1/client/allocation/{alloc['ID']}/checks").json()
        assert [(c["Status"], c["StatusCode"]) for c in checks.values()] == [("success", 200)]
        logs = api.get(
            f"/v1/client/fs/logs/{alloc['ID']}", params={"task": "server", "type": "stdout", "plain": "true"}
        )
        assert logs.text == f"alloc {alloc['ID']} greeting hi local arg 127.0.0.1:{port}\n"
        assert (tmp_path / alloc["ID"] / "alloc" / "logs" / "server.stdout.0").read_text() == logs.text

        process = client.processes[(alloc["ID"], "server")]
        api.delete("/v1/job/local", params={"purge": "true"})
        process.wait(10)
        nomad.wait_for(lambda n: not n.services)
        stopped = nomad.allocations[alloc["ID"]]
        assert (stopped["DesiredStatus"], stopped["ClientStatus"]) == ("stop", "complete")

        register(api, local_job("again", command, "nomad", "/health", {"GREETING": "x"}))
        nomad.wait_for(lambda n: any(a["ClientStatus"] == "running" for a in allocs_of(n, "again")), timeout=10)
        left_running = client.processes[(allocs_of(nomad, "again")[0]["ID"], "server")]
    assert left_running.poll() is not None  # stopping the double stopped the process


def test_client_mode_check_never_passing_fails_the_deployment(tmp_path: Path) -> None:
    """The check never passes: unhealthy at the health deadline, still running, so not rescheduled; the
    deployment fails at its progress deadline (deployment_watcher.go), as in scenario mode."""
    client = LocalClient(consul_address=None, workdir=tmp_path, check_interval=0.1)
    with NomadDouble(client=client) as nomad, httpx.Client(base_url=nomad.address, timeout=10) as api:
        job = local_job("silent", [sys.executable, "-c", "import time; time.sleep(60)"], "nomad", "/health")
        job["TaskGroups"][0]["Update"].update(HealthyDeadline=SECOND, ProgressDeadline=2 * SECOND, AutoRevert=True)
        register(api, job)
        deployment = wait_deployment(nomad, "silent", "failed", timeout=10)
        assert deployment["StatusDescription"] == (
            "Failed due to progress deadline - no stable job version to auto revert to"
        )
        (alloc,) = allocs_of(nomad, "silent")
        assert alloc["DeploymentStatus"]["Healthy"] is False and alloc["ClientStatus"] == "running"
        assert alloc["TaskStates"]["server"]["Events"][-1]["Type"] == "Alloc Unhealthy"
        checks = api.get(f"/v1/client/allocation/{alloc['ID']}/checks").json()
        assert [c["Status"] for c in checks.values()] == ["failure"]


@pytest.mark.e2e
def test_client_mode_llama_cpp_with_consul(consul: Any, xllamacpp_model: str, tmp_path: Path) -> None:
    """A raw_exec job running a real llama.cpp server, registered in a real Consul with an http check."""
    command = llama_command(0, model=xllamacpp_model)
    command[command.index("--port") + 1] = "${NOMAD_PORT_http}"
    client = LocalClient(consul_address=consul.address, workdir=tmp_path)
    with NomadDouble(client=client) as nomad, httpx.Client(base_url=nomad.address, timeout=10) as api:
        job = local_job("llama", command, "consul", "/v1/models")
        # No rescheduling: the killed allocation is not replaced 30s later (a pending follow-up evaluation would
        # keep the stopped job `pending` until then, as in Nomad).
        job["TaskGroups"][0]["ReschedulePolicy"] = {"Attempts": 0, "Unlimited": False}
        # Interpolated with the task's env before registration, as Nomad does (client/taskenv/services.go).
        job["TaskGroups"][0]["Services"][0]["Meta"] = {"metrics_port": "${NOMAD_PORT_http}", "plain": "x"}
        register(api, job)
        wait_deployment(nomad, "llama", "successful", timeout=60)
        (alloc,) = allocs_of(nomad, "llama")
        port = alloc["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert models["data"][0]["id"] == "smollm2-135m"

        service_id = f"_nomad-task-{alloc['ID']}-group-server-llama-http-http"
        agent = httpx.get(f"{consul.address}/v1/agent/services").json()
        assert (agent[service_id]["Service"], agent[service_id]["Port"]) == ("llama-http", port)
        assert agent[service_id]["Meta"] == {"metrics_port": str(port), "plain": "x", "external-source": "nomad"}
        (check,) = [
            c for c in httpx.get(f"{consul.address}/v1/agent/checks").json().values() if c["ServiceID"] == service_id
        ]
        assert check["Status"] == "passing"
        logs = api.get(
            f"/v1/client/fs/logs/{alloc['ID']}", params={"task": "server", "type": "stdout", "plain": "true"}
        )
        assert "listening=" in logs.text

        process = client.processes[(alloc["ID"], "server")]
        os.killpg(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        index = "0"
        while True:  # Consul blocking query on the service's checks until the check turns critical
            response = httpx.get(f"{consul.address}/v1/health/checks/llama-http", params={"index": index, "wait": "2s"})
            index = response.headers["X-Consul-Index"]
            if [c["Status"] for c in response.json()] == ["critical"]:
                break
            assert time.monotonic() < deadline, response.json()
        nomad.wait_for(lambda n: n.allocations[alloc["ID"]]["ClientStatus"] == "failed")
        terminated = nomad.allocations[alloc["ID"]]["TaskStates"]["server"]["Events"][-1]
        assert (terminated["Type"], terminated["ExitCode"], terminated["Signal"]) == ("Terminated", 137, 9)

        api.delete("/v1/job/llama")
        nomad.wait_for(lambda n: n.jobs["default/llama"]["Status"] == "dead")
        deadline = time.monotonic() + 10
        while service_id in httpx.get(f"{consul.address}/v1/agent/services").json():
            assert time.monotonic() < deadline
            time.sleep(0.1)


DRAIN_SCRIPT = """
import http.server, json, os, signal, sys, urllib.request
consul, alloc_id = sys.argv[1], os.environ["NOMAD_ALLOC_ID"]
def term(*_):
    services = json.load(urllib.request.urlopen(consul + "/v1/agent/services", timeout=5))
    mine = [s for s in services if alloc_id in s]
    with open(os.path.join(os.environ["NOMAD_ALLOC_DIR"], "data", "at-sigterm"), "w") as out:
        out.write("still in consul" if mine else "out of consul")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
address = ("127.0.0.1", int(os.environ["NOMAD_PORT_http"]))
http.server.HTTPServer(address, http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_a_stop_takes_the_service_out_of_consul_and_waits_the_shutdown_delay_before_sigterm(
    consul: Any, tmp_path: Path
) -> None:
    # allocrunner/alloc_runner.go killTasks runs the pre-kill hooks first; group_service_hook.go preKillLocked
    # deregisters the group's services, then waits shutdown_delay; only then are the tasks signalled.
    client = LocalClient(consul_address=consul.address, workdir=tmp_path, check_interval=0.1)
    with NomadDouble(client=client) as nomad, httpx.Client(base_url=nomad.address, timeout=10) as api:
        job = local_job("drain", [sys.executable, "-c", DRAIN_SCRIPT, consul.address], "consul", "/")
        job["TaskGroups"][0]["ShutdownDelay"] = 3600 * SECOND  # cut short when the agent shuts down
        register(api, job)
        wait_deployment(nomad, "drain", "successful", timeout=30)
        (alloc,) = allocs_of(nomad, "drain")

        def in_consul() -> bool:
            return any(alloc["ID"] in sid for sid in httpx.get(f"{consul.address}/v1/agent/services").json())

        assert in_consul()
        api.delete("/v1/job/drain").raise_for_status()
        deadline = time.monotonic() + 10
        while in_consul():
            assert time.monotonic() < deadline, "the service stayed in Consul after the stop"
            time.sleep(0.1)
        process = client.processes[(alloc["ID"], "server")]
        assert process.poll() is None  # out of Consul, still answering: the shutdown delay runs
    # The double closing is the agent shutting down: the delay ends, the process gets its SIGTERM.
    assert process.wait(10) == 0
    assert (tmp_path / alloc["ID"] / "alloc" / "data" / "at-sigterm").read_text() == "out of consul"


def test_python_nomad_client_works_against_the_double(nomad: NomadDouble) -> None:
    """python-nomad (a project dependency) sends its own paths and bodies; the double must understand them."""
    import nomad as python_nomad

    client = python_nomad.Nomad(host="127.0.0.1", port=int(nomad.address.rsplit(":", 1)[1]), timeout=5)
    created = client.job.register_job("web", {"Job": make_job()})
    wait_deployment(nomad, "web", "successful")
    assert client.evaluation.get_evaluation(created["EvalID"])["Status"] == "complete"
    assert client.job.get_deployment("web")["Status"] == "successful"
    assert [a["ClientStatus"] for a in client.job.get_allocations("web")] == ["running"]
    assert client.job.plan_job("web", {"Job": make_job()}, diff=True)["Diff"]["Type"] == "None"
    with pytest.raises(python_nomad.api.exceptions.URLNotFoundNomadException):
        client.job.get_job("nope")
    client.job.deregister_job("web", purge=True)
    assert "default/web" not in nomad.jobs
    assert [r.method for r in nomad.requests if r.path == "/v1/job/web"][:1] == ["POST"]


def test_clone_copies_json_all_the_way_down() -> None:
    """The double's copies of its stored objects (jsoncopy.clone): a change to the copy, however deep, leaves the
    stored object as it was; values that are not JSON (a tuple of dicts, a set) are still copied deeply."""
    stored: dict[str, Any] = {
        "Job": {"TaskGroups": [{"Name": "g", "Tasks": [{"Env": {"A": "1"}}]}], "Meta": None, "Priority": 50},
        "Pair": ({"deep": [1]}, "x"),
        "Labels": {"a", "b"},
    }
    copied = clone(stored)
    assert copied == stored
    copied["Job"]["TaskGroups"][0]["Tasks"][0]["Env"]["A"] = "2"
    copied["Job"]["TaskGroups"].append({"Name": "h"})
    copied["Pair"][0]["deep"].append(2)
    copied["Labels"].add("c")
    assert stored["Job"]["TaskGroups"] == [{"Name": "g", "Tasks": [{"Env": {"A": "1"}}]}]
    assert stored["Pair"] == ({"deep": [1]}, "x")
    assert stored["Labels"] == {"a", "b"}
