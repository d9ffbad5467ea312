"""What runs a job version's allocations (a scenario, or the local client), and what it may do.

The server side of the double (scheduler, deployment watcher, rescheduling) decides where and when allocations
exist, for every mode alike. A `Runnable` is the client half: the cluster asks it whether the node can take a
job version (`placement_failures`), which host ports to give, and then runs each allocation placed for that
version in its own thread (`run_alloc`), through an `AllocContext`.

An allocation's context is aborted when the server stops the allocation or the double stops: the next `sleep` or
state change raises `ScenarioAborted` (checked under the state lock, so an aborted run can never change state
after the change that aborted it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from . import mutations
from .clock import Clock
from .jobspec import JSON, PortSpec, groups
from .jsoncopy import clone
from .objects import alloc_metric, task_event
from .state import Tx

if TYPE_CHECKING:
    from .cluster import Cluster


class ScenarioAborted(Exception):
    """The allocation was stopped, or the double is stopping: its run must end."""


class Runnable(Protocol):
    """The client half of a job version: a scenario, or the local client."""

    start_after: float  # how long (real seconds) the scheduler takes to act on an evaluation of this version

    def plan_failures(self, job: JSON) -> JSON | None:
        """`FailedTGAllocs` a plan of `job` reports (placement-failure scenarios), else None."""
        ...

    def placement_failures(self, version: Version) -> JSON | None:
        """What the scheduler finds when it places an allocation of `version` now: None when the node takes
        it, else the AllocMetric of each group (placement-failure scenarios)."""
        ...

    def port(self, spec: PortSpec) -> int | None:
        """The host port for a dynamic port of a new allocation (None: the cluster picks a number)."""
        ...

    def run_alloc(self, ctx: AllocContext) -> None:
        """The client's life of one allocation, in its own thread, until it returns or is aborted."""
        ...

    def after_revert(self) -> Runnable:
        """What runs the version Nomad registers when it auto-reverts a failed deployment of this one."""
        ...


@dataclass
class Version:
    """A registered job version and what runs its allocations; `data` is the runnable's own state for it."""

    cluster: Cluster
    job: JSON
    runnable: Runnable
    data: dict[str, object] = field(default_factory=dict)

    def later(self, seconds: float, action: Callable[[], None]) -> None:
        """Run `action` (with the state lock held) `seconds` of real time from now, on the server's thread."""
        clock = self.cluster.clock
        self.cluster.leader.at(clock.now() + clock.nomad_ns(seconds), action)

    def unblock(self) -> None:
        """Capacity appeared: the job's blocked evaluations run again (nomad/blocked_evals.go Unblock)."""
        self.cluster.unblock(self.job["Namespace"], self.job["ID"])


class AllocContext:
    """The cluster as the client sees it while it runs one allocation."""

    def __init__(self, cluster: Cluster, alloc: JSON, runnable: Runnable) -> None:
        self.cluster = cluster
        self.state = cluster.state
        self.clock: Clock = cluster.clock
        self.alloc_id: str = alloc["ID"]
        self.job = clone(alloc["Job"])  # the version it was placed for
        self.runnable = runnable
        self.stop = threading.Event()
        self.generation = 0  # bumped by each in-place update of the allocation
        # Set (under the state's lock) when the allocation is updated in place or stopped: a waiting run wakes for
        # its own allocation only. Waiting on the state's condition woke every run at every change of the
        # cluster (and twice a second besides): with 1,000 allocations, a herd that starved the HTTP handlers.
        self._woken = threading.Event()
        self.health_from = 0  # when the client started watching its health (Nomad time)

    # --- control ------------------------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Wait (real seconds), or raise ScenarioAborted as soon as the allocation is stopped."""
        if self.stop.wait(seconds):
            raise ScenarioAborted

    def sleep_nomad(self, nanos: int) -> None:
        """Wait for a duration of Nomad time (a restart delay, a health deadline)."""
        self.sleep(self.clock.real_seconds(nanos))

    def wait_update(self, generation: int) -> int:
        """Block until the allocation is updated in place (its generation moves past `generation`), or raise
        ScenarioAborted when it is stopped."""
        while True:
            with self.state.cond:
                if self.generation != generation:
                    return self.generation
                if self.stop.is_set():
                    raise ScenarioAborted
                self._woken.clear()
            self._woken.wait()

    def updated_in_place(self) -> None:
        """The server updated the allocation in place (the state's lock held)."""
        self.generation += 1
        self._woken.set()

    def abort(self) -> None:
        """The allocation is stopped: its run ends at its next step."""
        self.stop.set()
        self._woken.set()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A state transaction, refused once the run is aborted."""
        with self.state.cond:
            if self.stop.is_set():
                raise ScenarioAborted
            with self.state.transaction() as tx:
                yield tx

    def alloc(self) -> JSON:
        """A snapshot of the allocation."""
        with self.state.cond:
            return clone(self.state.allocs[self.alloc_id])

    @property
    def node(self) -> tuple[str, str]:
        """The node the allocation was placed on: (ID, name)."""
        with self.state.cond:
            alloc = self.state.allocs[self.alloc_id]
            return alloc["NodeID"], alloc["NodeName"]

    # --- client updates -------------------------------------------------------------------------------------

    def update(
        self,
        task: str,
        event: JSON | None = None,
        state: str | None = None,
        failed: bool | None = None,
        restarted: bool = False,
    ) -> None:
        """One task-state update from the client (see mutations.client_update)."""
        with self.transaction() as tx:
            mutations.client_update(tx, self.alloc_id, task, [event] if event else None, state, failed, restarted)

    def event(self, task: str, kind: str, **fields: object) -> None:
        """Append a task event built from `kind` and its fields."""
        self.update(task, task_event(kind, **fields))

    def set_health(self, healthy: bool) -> None:
        """The client's health verdict; only allocations of a deployment get one (health_hook.go)."""
        with self.transaction() as tx:
            if tx.state.allocs[self.alloc_id]["DeploymentID"]:
                mutations.set_alloc_health(tx, self.alloc_id, healthy)

    def write_logs(self, task: str, stdout: str, stderr: str) -> None:
        for stream, text in (("stdout", stdout), ("stderr", stderr)):
            if text:
                self.state.append_log(self.alloc_id, task, stream, text.encode())

    def register_services(self, tasks: list[str]) -> None:
        with self.transaction() as tx:
            mutations.register_nomad_services(tx, tx.state.allocs[self.alloc_id], tasks)

    def set_checks(self, refs: list[mutations.CheckRef], status: str, output: str, code: int) -> None:
        with self.transaction() as tx:
            for ref in refs:
                mutations.set_check(tx, tx.state.allocs[self.alloc_id], ref, status, output, code)


def failed_tg_allocs(job: JSON, metrics: JSON | None) -> JSON:
    """FailedTGAllocs for every group of `job`: `metrics` over the defaults of a cluster whose 3 nodes have no
    matching GPU (the device-plugin-missing case of nomad-api.md §2). CoalescedFailures counts the group's other
    failed placements."""
    return {
        g["Name"]: alloc_metric(
            **{
                "NodesEvaluated": 3,
                "NodesFiltered": 0,
                "NodesExhausted": 3,
                "NodesInPool": 3,
                "DimensionExhausted": {"devices: no devices match request": 3},
                "ConstraintFiltered": None,
                "NodesAvailable": {"dc1": 3},
                "CoalescedFailures": g["Count"] - 1,
                **(metrics or {}),
            }
        )
        for g in groups(job)
    }
