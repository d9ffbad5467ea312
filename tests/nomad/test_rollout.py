"""Replica states, pure: from an allocation's task states, and as one watch shows them (only forward)."""

from __future__ import annotations

from typing import Any

from nomad_gpustack.contract.request import GroupRequest
from nomad_gpustack.nomad.responses import Allocation, Deployment, Evaluation
from nomad_gpustack.nomad.rollout import (
    Replica,
    ReplicaHistory,
    Snapshot,
    assess,
    deployment_of,
    latest_deployment,
    replica_state,
)

REQUEST = GroupRequest(group="inference", count=1, health_path="/v1/models")
ZERO = "0001-01-01T00:00:00Z"
STARTED = "2026-01-01T00:00:00Z"


def task(state: str, *events: dict[str, Any], started: bool = False, failed: bool = False, restarts: int = 0) -> Any:
    return {
        "State": state, "Failed": failed, "Restarts": restarts, "StartedAt": STARTED if started else ZERO,
        "Events": list(events),
    }  # fmt: skip


def alloc(alloc_id: str = "a1", version: int = 1, healthy: bool | None = None, **tasks: Any) -> Allocation:
    running = any(t["State"] == "running" for t in tasks.values())
    return Allocation.model_validate(
        {
            "ID": alloc_id, "Name": "qwen.inference[0]", "NodeName": "gpu-1", "JobVersion": version,
            "DesiredStatus": "run", "ClientStatus": "running" if running else "pending", "CreateIndex": 10,
            "TaskStates": tasks, "DeploymentStatus": {"Healthy": healthy} if healthy is not None else None,
        }
    )  # fmt: skip


PULL_DOWNLOADER = {"Type": "Driver", "DriverMessage": "Downloading image python:3.12-slim"}
PULL_SERVER = {"Type": "Driver", "DriverMessage": "Downloading image vllm/vllm-openai:v0.19.0"}
RECEIVED = {"Type": "Received"}

# One replica's life as the client reports it: the download task pulls its image, runs, ends; then the model
# server's image is pulled, the server starts, and becomes healthy.
LIFE = [
    alloc(**{"download-model": task("pending", RECEIVED), "vllm": task("pending", RECEIVED)}),
    alloc(**{"download-model": task("pending", RECEIVED, PULL_DOWNLOADER), "vllm": task("pending", RECEIVED)}),
    alloc(**{"download-model": task("running", started=True), "vllm": task("pending", RECEIVED)}),
    alloc(**{"download-model": task("dead", started=True), "vllm": task("pending", RECEIVED)}),
    alloc(**{"download-model": task("dead", started=True), "vllm": task("pending", RECEIVED, PULL_SERVER)}),
    alloc(**{"download-model": task("dead", started=True), "vllm": task("running", started=True)}),
    alloc(healthy=True, **{"download-model": task("dead", started=True), "vllm": task("running", started=True)}),
]


def test_a_replica_life_only_moves_forward() -> None:
    states = [replica_state(a, REQUEST, []) for a in LIFE]
    assert [r.state for r in states] == [
        "scheduled", "downloading", "downloading", "downloading", "downloading", "starting", "running",
    ]  # fmt: skip
    assert states[3].detail == "model weights downloaded; setting up the model server"
    assert states[4].detail == "Downloading image vllm/vllm-openai:v0.19.0"


def test_a_restart_between_two_runs_is_still_starting() -> None:
    restarting = alloc(vllm=task("pending", RECEIVED, PULL_SERVER, {"Type": "Terminated"}, started=True, restarts=1))
    replica = replica_state(restarting, REQUEST, [])
    assert (replica.state, replica.detail) == ("starting", "the model server exited; Nomad restarts it (restarted 1×)")


def test_a_watch_shows_states_only_forward_unless_a_new_allocation_replaces_one() -> None:
    history = ReplicaHistory()
    seen = [history.forward([r])[0] for r in (
        Replica(0, "downloading", "downloading model weights", "a1", "gpu-1"),
        Replica(0, "scheduled", "placed on gpu-1", "a1", "gpu-1"),  # an older view of the same allocation
        Replica(0, "starting", "loading the model", "a1", "gpu-1"),
        Replica(0, "pending", "waiting to be placed"),  # the allocation is gone from view
        Replica(0, "scheduled", "placed on gpu-2", "b2", "gpu-2"),  # Nomad replaced it: it starts over
        Replica(0, "starting", "loading the model", "b2", "gpu-2"),
        Replica(0, "running", "healthy", "b2", "gpu-2"),
    )]  # fmt: skip
    assert [r.state for r in seen] == ["downloading", "downloading", "starting", "starting", "scheduled", "starting",
                                       "running"]  # fmt: skip
    assert seen[1].detail == "downloading model weights", "the state shown before is kept, with its words"
    assert seen[4].detail == "new allocation (replaces a1): placed on gpu-2"
    assert seen[5].detail == "loading the model", "caught up with where the replaced one was: no more note"
    assert seen[6].detail == "healthy"


def test_a_replica_placed_before_a_resubmit_shows_its_real_state() -> None:
    old = alloc("a0", version=0, healthy=True, vllm=task("running", started=True))
    evaluating = Snapshot("qwen", 1, Evaluation(ID="e1", Status="pending"), allocations=(old,))
    assessment = assess(evaluating, REQUEST)
    (replica,) = assessment.replicas
    assert (replica.state, replica.alloc_id, replica.earlier_version) == ("running", "a0", 0)
    assert replica.detail == "healthy (job version 0, until Nomad updates or replaces it)"
    assert assessment.healthy == 0, "not a healthy replica of version 1"
    unchanged = Snapshot("qwen", 0, Evaluation(ID="", Status="complete"), allocations=(old,))
    assert [(r.state, r.earlier_version) for r in assess(unchanged, REQUEST).replicas] == [("running", None)]


def test_the_deployment_judged_is_this_versions_newest_not_the_jobs_latest() -> None:
    earlier = Deployment(ID="d0", JobVersion=1, Status="cancelled", CreateIndex=5)
    failed = Deployment(ID="d1", JobVersion=1, Status="failed", CreateIndex=10)
    rollback = Deployment(ID="d2", JobVersion=2, Status="running", CreateIndex=20)
    listed = [rollback, earlier, failed]  # Nomad lists them in no particular order
    assert deployment_of(listed, 1) == failed
    assert deployment_of(listed, 3) is None
    assert deployment_of(listed, None) == latest_deployment(listed) == rollback
