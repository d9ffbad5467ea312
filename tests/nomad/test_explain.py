"""Explanations and rollout assessment: Nomad's response shapes (from the API reference) in, words out."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.contract.request import GroupRequest
from nomad_gpustack.errors import EXIT_FAILURE, EXIT_OK, EXIT_PLACEMENT
from nomad_gpustack.nomad.explain import node_devices, placement_failure, task_failure
from nomad_gpustack.nomad.responses import Allocation, AllocMetric, Deployment, Evaluation, TaskState
from nomad_gpustack.nomad.rollout import Snapshot, assess, assess_rollback
from nomad_gpustack.nomad.runner import verdict_exit_code

REQUEST = GroupRequest(
    group="inference",
    count=2,
    cpu=8000,
    memory_mb=65536,
    device="nvidia/gpu",
    gpus=2,
    gpu_memory="40 GiB",
    health_path="/v1/models",
    startup_timeout_ns=30 * 60 * 10**9,
)

# The evaluation sample of the reference (api-docs/evaluations.mdx "Read Evaluation"), unchanged.
BLOCKED_SAMPLE: dict[str, Any] = {
    "CreateIndex": 28,
    "CreateTime": 1647394818583344000,
    "FailedTGAllocs": {
        "cache": {
            "AllocationTime": 4111,
            "ClassExhausted": None,
            "ClassFiltered": None,
            "CoalescedFailures": 0,
            "ConstraintFiltered": None,
            "DimensionExhausted": None,
            "NodesAvailable": {"dc1": 0},
            "NodesEvaluated": 0,
            "NodesExhausted": 0,
            "NodesFiltered": 0,
            "NodesInPool": 0,
            "QuotaExhausted": None,
            "ResourcesExhausted": None,
            "ScoreMetaData": None,
            "Scores": None,
        }
    },
    "ID": "2deb5f06-a100-f01a-3316-5e501a4965e7",
    "JobID": "example",
    "ModifyIndex": 28,
    "Namespace": "default",
    "PreviousEval": "0f98f7ea-59ae-4d90-d9bd-b8ce80b9e100",
    "Priority": 50,
    "SnapshotIndex": 27,
    "Status": "blocked",
    "StatusDescription": "created to place remaining allocations",
    "TriggeredBy": "queued-allocs",
    "Type": "service",
}


def test_the_reference_sample_evaluation_parses_with_nulls() -> None:
    evaluation = Evaluation.model_validate(BLOCKED_SAMPLE)
    metric = evaluation.FailedTGAllocs["cache"]
    assert metric.ConstraintFiltered == {} and metric.QuotaExhausted == [] and metric.NodesAvailable == {"dc1": 0}
    lines = placement_failure(GroupRequest(group="cache", count=1, datacenters=("dc1",)), metric)
    assert lines == ["cannot place 1 of 1 replica: no ready node in datacenter dc1"]


def listing(nodes: int, gpus: int = 0, model: str = "NVIDIA A10", memory_gib: int = 24) -> list[dict[str, Any]]:
    """`/v1/nodes?resources=true`: `nodes` nodes with `gpus` GPUs each (0: the device plugin reports none)."""
    group = {
        "Vendor": "nvidia",
        "Type": "gpu",
        "Name": model,
        "Instances": [{"ID": f"GPU-{i}"} for i in range(gpus)],
        "Attributes": {"memory": {"Int": memory_gib, "Unit": "GiB"}},
    }
    return [{"Name": f"gpu-{i}", "NodeResources": {"Devices": [group] if gpus else []}} for i in range(nodes)]


NO_MATCH = {"DimensionExhausted": {"devices: no devices match request": 3}, "NodesExhausted": 3}
MISSING = {"ConstraintFiltered": {"missing devices": 3}, "NodesFiltered": 3}
HEAD = "cannot place 2 of 2 replicas: no node has 2 × nvidia/gpu with ≥ 40 GiB"
PLUGIN = "no node reports any nvidia/gpu device (is nomad-device-nvidia installed on the clients?)"

PLACEMENT_SCENARIOS = {
    "plugin missing, the scheduler found no match": (
        NO_MATCH,
        listing(3),
        [f"{HEAD}: {PLUGIN}", "3 nodes have no nvidia/gpu device (devices: no devices match request)"],
    ),
    "plugin missing, the nodes were filtered": (
        MISSING,
        listing(3),
        [
            f"{HEAD}: {PLUGIN}",
            "3 nodes excluded by missing devices (they report no nvidia/gpu device: install nomad-device-nvidia "
            "in the clients' plugin_dir)",
        ],
    ),
    "GPUs too small": (
        NO_MATCH,
        listing(3, gpus=2),
        [
            f"{HEAD}: 3 nodes have GPUs, all 24 GiB",
            "3 nodes have no device that matches the request (devices: no devices match request)",
        ],
    ),
    "too few GPUs on one node": (
        MISSING,
        listing(3, gpus=1, model="NVIDIA A100-SXM4-80GB", memory_gib=80),
        [
            f"{HEAD}: 3 nodes have GPUs, all 80 GiB; the most on one node is 1",
            "3 nodes excluded by missing devices (no device there matches the request)",
        ],
    ),
    "the GPUs asked for are in use": (
        NO_MATCH,
        listing(1, gpus=2, model="NVIDIA A100-SXM4-80GB", memory_gib=80),
        [
            f"{HEAD} free: 1 node has them, all in use by other allocations",
            "3 nodes had no free matching device (devices: no devices match request)",
        ],
    ),
    "no node listing (no node:read)": (
        NO_MATCH,
        None,
        [f"{HEAD} available", "3 nodes had no matching device available (devices: no devices match request)"],
    ),
    "a listing without NodeResources (Nomad < 1.6)": (
        MISSING,
        [{"Name": "gpu-0"}, {"Name": "gpu-1"}],
        [
            f"{HEAD} available",
            "3 nodes excluded by missing devices (no device there matches the request: is nomad-device-nvidia "
            "installed there?)",
        ],
    ),
}


@pytest.mark.parametrize("scenario", PLACEMENT_SCENARIOS)
def test_every_device_sentence_comes_from_the_same_facts(scenario: str) -> None:
    fields, nodes, expected = PLACEMENT_SCENARIOS[scenario]
    metric = AllocMetric(NodesEvaluated=3, CoalescedFailures=1, **fields)
    devices = node_devices(nodes) if nodes is not None else None
    assert placement_failure(REQUEST, metric, devices) == expected
    # Whatever the scenario: "there are none" and "they are busy" are never said together.
    text = " ".join(expected)
    assert not ("no node reports" in text and "free" in text)
    assert not ("install" in text and "have GPUs" in text)


def test_filtered_constraints_get_hints() -> None:
    metric = AllocMetric(
        NodesEvaluated=4,
        NodesFiltered=4,
        ConstraintFiltered={"${attr.driver.docker.runtimes} set_contains nvidia": 3, "missing devices": 1},
    )
    lines = placement_failure(REQUEST, metric)
    assert lines[0].startswith("cannot place 1 of 2 replicas: no node has 2 × nvidia/gpu with ≥ 40 GiB")
    assert any("NVIDIA container runtime" in line for line in lines)
    assert any("nomad-device-nvidia" in line for line in lines)


def alloc(name: str = "job.inference[0]", **fields: Any) -> Allocation:
    data = {
        "ID": "a0",
        "Name": name,
        "JobVersion": 1,
        "DesiredStatus": "run",
        "ClientStatus": "running",
        "NodeName": "gpu-1",
        "CreateIndex": 10,
    }
    data.update(fields)
    return Allocation.model_validate(data)


def state(*events: dict[str, Any], **fields: Any) -> TaskState:
    return TaskState.model_validate({"State": "running", "Events": list(events), **fields})


def test_task_failures_are_named() -> None:
    oom = state(
        {"Type": "Started"},
        {"Type": "Terminated", "ExitCode": 137, "Details": {"oom_killed": "true", "exit_code": "137"}},
        State="dead",
        Failed=True,
    )
    failure = task_failure(alloc(), "vllm", oom, memory_mb=16384)
    assert failure is not None and failure.kind == "oom"
    assert (
        failure.summary == "vllm ran out of memory and was killed (limit 16 GiB)"
        and failure.hint == "raise nomad.memory"
    )

    pull = state(
        {"Type": "Driver", "DriverMessage": "Downloading image vllm/x:1"},
        {"Type": "Driver Failure", "DisplayMessage": "Failed to pull `vllm/x:1`: manifest unknown"},
    )
    failure = task_failure(alloc(), "vllm", pull)
    assert failure is not None and failure.kind == "image-pull" and "could not be pulled" in failure.summary
    assert failure.hint is not None and "image name" in failure.hint

    loop = state(
        {"Type": "Terminated", "ExitCode": 1},
        {"Type": "Restarting"},
        {"Type": "Terminated", "ExitCode": 1},
        {"Type": "Restarting"},
        {"Type": "Terminated", "ExitCode": 1},
        {"Type": "Not Restarting"},
        Restarts=2,
        State="dead",
        Failed=True,
    )
    failure = task_failure(alloc(), "vllm", loop)
    assert failure is not None and failure.kind == "crash-loop"
    assert failure.summary == "vllm exited with code 1 and was restarted 2 times; Nomad gave up restarting it"

    hook = state(
        {"Type": "Task hook failed", "DisplayMessage": "template: Missing: nomadVar.block(nomad/jobs/q@default)"}
    )
    failure = task_failure(alloc(), "download-model", hook)
    assert failure is not None and failure.hint is not None and "token variable" in failure.hint

    assert task_failure(alloc(), "vllm", state({"Type": "Started"})) is None


def snapshot(**fields: Any) -> Snapshot:
    base: dict[str, Any] = {"job_id": "job", "version": 1, "evaluation": Evaluation(ID="e", Status="complete")}
    base.update(fields)
    return Snapshot(**base)


def test_the_run_after_the_last_allowed_restart_is_not_yet_a_failure() -> None:
    # Restarted as often as the policy allows and running again: that run may serve. Only its exit fails the
    # task; Nomad's task runner adds "Not Restarting" (mode "fail") or restarts past the limit (mode "delay").
    restarts = [{"Type": t, "ExitCode": 1} if t == "Terminated" else {"Type": t} for t in ("Terminated", "Restarting")]
    again = state(*restarts, *restarts, {"Type": "Started"}, Restarts=2, State="running")
    assert task_failure(alloc(), "vllm", again) is None
    restarting = state(*restarts, *restarts, Restarts=2, State="pending")
    assert task_failure(alloc(), "vllm", restarting) is None
    exited = state(*restarts, *restarts, {"Type": "Started"}, {"Type": "Terminated", "ExitCode": 1}, Restarts=2)
    failure = task_failure(alloc(), "vllm", exited)
    assert failure is not None and failure.summary == "vllm exited with code 1 and was restarted 2 times"
    delay = state(*restarts, *restarts, *restarts, Restarts=3, State="pending")  # mode "delay": never gives up
    failure = task_failure(alloc(), "vllm", delay)
    assert failure is not None and failure.kind == "crash-loop"


def test_assessment_through_a_rollout() -> None:
    request = GroupRequest(group="inference", count=2, health_path="/v1/models")
    assert assess(snapshot(evaluation=None), request).phase == "evaluating"
    pending = alloc(
        ClientStatus="pending",
        TaskStates={
            "vllm": {
                "State": "pending",
                "Events": [{"Type": "Driver", "DriverMessage": "Downloading image vllm/vllm-openai:v0.19.0"}],
            }
        },
    )
    downloading = alloc(
        "job.inference[1]",
        ID="a1",
        ClientStatus="pending",
        TaskStates={"download-model": {"State": "running"}, "vllm": {"State": "pending"}},
    )
    deploying = Deployment(ID="d", JobVersion=1, Status="running")
    a = assess(snapshot(allocations=(pending, downloading), deployment=deploying), request)
    assert a.phase == "deploying" and not a.done
    assert [(r.state, r.detail) for r in a.replicas] == [
        ("downloading", "Downloading image vllm/vllm-openai:v0.19.0"),
        ("downloading", "downloading model weights"),
    ]
    starting = alloc(TaskStates={"vllm": {"State": "running", "Restarts": 1}})
    running = alloc(
        "job.inference[1]", ID="a1", DeploymentStatus={"Healthy": True}, TaskStates={"vllm": {"State": "running"}}
    )
    a = assess(snapshot(allocations=(starting, running), deployment=deploying), request)
    assert [r.state for r in a.replicas] == ["starting", "running"]
    assert a.replicas[0].detail == "loading the model, waiting for GET /v1/models (restarted 1×)"
    assert a.headline == "1/2 healthy"
    healthy0 = alloc(DeploymentStatus={"Healthy": True}, TaskStates={"vllm": {"State": "running"}})
    done = Deployment(ID="d", JobVersion=1, Status="successful")
    a = assess(snapshot(allocations=(healthy0, running), deployment=done), request)
    assert a.phase == "succeeded" and verdict_exit_code(a.verdict) == EXIT_OK


def test_assessment_of_failures() -> None:
    request = GroupRequest(group="inference", count=1, health_path="/v1/models", startup_timeout_ns=60 * 10**9)
    blocked = Evaluation(ID="b", Status="blocked")
    evaluation = Evaluation(
        ID="e",
        Status="complete",
        BlockedEval="b",
        FailedTGAllocs={"inference": AllocMetric(NodesEvaluated=2, DimensionExhausted={"memory": 2})},
    )
    a = assess(snapshot(evaluation=evaluation, blocked=blocked), request)
    assert a.phase == "placement-failed" and verdict_exit_code(a.verdict) == EXIT_PLACEMENT
    waiting = assess(snapshot(evaluation=evaluation, blocked=blocked), request, wait_for_capacity=True)
    assert (
        waiting.phase == "waiting-capacity" and not waiting.done and waiting.headline.startswith("waiting for capacity")
    )

    unhealthy = alloc(DeploymentStatus={"Healthy": False}, TaskStates={"vllm": {"State": "running"}})
    failed = Deployment(
        ID="d",
        JobVersion=1,
        Status="failed",
        StatusDescription="Failed due to progress deadline - rolling back to job version 0",
    )
    a = assess(snapshot(allocations=(unhealthy,), deployment=failed), request)
    assert a.phase == "failed" and verdict_exit_code(a.verdict) == EXIT_FAILURE and a.rollback_to == 0
    assert any("GET /v1/models did not answer 200 within 1m" in d for d in a.details)

    cancelled = Deployment(
        ID="d", JobVersion=1, Status="cancelled", StatusDescription="Cancelled due to newer version of job"
    )
    a = assess(snapshot(deployment=cancelled), GroupRequest(group="inference", count=0))
    assert a.phase == "failed" and "newer version" in a.headline

    old = alloc(JobVersion=0, DeploymentStatus={"Healthy": True}, TaskStates={"vllm": {"State": "running"}})
    a = assess(snapshot(allocations=(old,), deployment=Deployment(ID="d", JobVersion=1, Status="running")), request)
    # Shown as it is (a re-submit does not make a placed replica pending), but not counted for version 1.
    assert (a.replicas[0].state, a.replicas[0].earlier_version, a.healthy) == ("running", 0, 0)
    assert a.phase == "deploying" and a.headline == "0/1 healthy"


def test_rollback_assessment_follows_the_deployment_after_the_failed_one() -> None:
    failed = Deployment(ID="d1", JobVersion=1, Status="failed", StatusDescription="... rolling back to job version 0")
    assert assess_rollback(0, failed, failed).status == "waiting", "the failed deployment is not the rollback"
    older = Deployment(ID="d0", JobVersion=0, Status="successful")
    assert assess_rollback(0, failed, older).status == "waiting"
    groups = {"inference": {"DesiredTotal": 2, "HealthyAllocs": 1}}
    running = Deployment.model_validate({"ID": "d2", "JobVersion": 2, "Status": "running", "TaskGroups": groups})
    step = assess_rollback(0, failed, running)
    assert (step.job_version, step.done, step.healthy, step.desired) == (2, False, 1, 2)
    assert step.summary == "Nomad is rolling back to job version 0 (registered again as version 2): 1/2 healthy"
    done = running.model_copy(update={"Status": "failed", "StatusDescription": "Failed due to progress deadline"})
    step = assess_rollback(0, failed, done)
    assert step.done and step.summary.endswith("and the rollback failed too: Failed due to progress deadline")
