"""`status` on a distributed replica: a worker rank that is not running is said in words (ARCHITECTURE.md,
"Distributed replicas"), read from the allocations of the worker groups only."""

from __future__ import annotations

from typing import Any

from nomad_gpustack.nomad.responses import Allocation
from nomad_gpustack.nomad.status import rank_troubles


def alloc(group: str, node: str, client: str = "running", events: list[str] | None = None, **extra: Any) -> Allocation:
    state = "running" if not events or events[-1] == "Started" else "pending"
    task_events = [{"Type": kind, "ExitCode": 137 if kind == "Terminated" else 0} for kind in events or ["Started"]]
    return Allocation.model_validate(
        {"ID": f"{group}-{node}", "TaskGroup": group, "NodeName": node, "DesiredStatus": "run",
         "ClientStatus": client, "TaskStates": {"llama-cpp": {"State": state, "Events": task_events}}, **extra}
    )  # fmt: skip


def test_running_ranks_say_nothing() -> None:
    assert rank_troubles([alloc("inference", "a"), alloc("worker-0-1", "b"), alloc("worker-0-2", "c")]) == ()


def test_a_worker_that_exited_or_was_lost_is_named_with_its_replica_rank_and_node() -> None:
    troubles = rank_troubles(
        [
            alloc("inference", "a", events=["Started", "Terminated", "Restarting"]),  # the leader: not a rank
            alloc("worker-0-1", "b", events=["Started", "Terminated", "Restarting"]),
            alloc("worker-1-2", "d", client="lost"),
            alloc("worker-0-2", "c", events=["Started", "Terminated", "Restarting", "Started"]),  # back
        ]
    )
    assert troubles == (
        "replica 0: worker rank 1 on node b stopped (exit code 137); the engine cannot continue without it; "
        "Nomad restarts the replica once the rank is back",
        "replica 1: worker rank 2 on node d lost; the engine cannot continue without it; "
        "Nomad restarts the replica once the rank is back",
    )


def test_only_the_latest_allocation_of_a_rank_counts() -> None:
    old = alloc("worker-0-1", "b", client="lost", CreateIndex=1)
    new = alloc("worker-0-1", "c", CreateIndex=2)
    assert rank_troubles([old, new]) == ()
