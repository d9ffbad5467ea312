"""What a scenario (or the local client) may do to the cluster for the job version it runs for.

A scenario runs in its own thread. When the job is registered again, stopped or purged, or the double stops, its
context is aborted: the next `sleep` or state change raises `ScenarioAborted` (checked under the state lock, so
an aborted scenario can never change state after the change that aborted it).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import mutations
from .jobspec import JSON, PortSpec, auto_revert, groups, ports, spec_of
from .objects import alloc_metric, new_alloc, new_deployment, new_eval, task_event, wants_deployment
from .state import Tx

if TYPE_CHECKING:
    from .cluster import Cluster


class ScenarioAborted(Exception):
    """The job moved on (new version, stop, purge) or the double is stopping: the scenario must end."""


class Runnable(Protocol):
    """What the cluster runs for every registered job version: a scenario, or the local client."""

    def run(self, ctx: ScenarioContext) -> None: ...

    def plan_failures(self, job: JSON) -> JSON | None:
        """`FailedTGAllocs` a plan of `job` reports (placement-failure scenarios), else None."""
        ...


@dataclass(frozen=True)
class Placement:
    deployment_id: str  # "" when the job gets no deployment (batch jobs)
    alloc_ids: list[str]


class ScenarioContext:
    """The cluster as seen by the run of one job version."""

    def __init__(self, cluster: Cluster, job: JSON, eval_id: str) -> None:
        self.cluster = cluster
        self.state = cluster.state
        self.job = copy.deepcopy(job)  # this version, as registered
        self.key = (job["Namespace"], job["ID"])
        self.eval_id = eval_id
        self.stop = threading.Event()

    # --- control ------------------------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Wait, or raise ScenarioAborted as soon as the run is aborted."""
        if self.stop.wait(seconds):
            raise ScenarioAborted

    def wait(self, event: threading.Event) -> None:
        """Wait until `event` is set (by the test), or raise ScenarioAborted once the run is aborted."""
        while not event.wait(0.05):  # a short poll of both events: threading has no wait for either of two
            if self.stop.is_set():
                raise ScenarioAborted

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A state transaction, refused once the run is aborted."""
        with self.state.cond:
            if self.stop.is_set():
                raise ScenarioAborted
            with self.state.transaction() as tx:
                yield tx

    def alloc(self, alloc_id: str) -> JSON:
        """A snapshot of one allocation."""
        with self.state.cond:
            return copy.deepcopy(self.state.allocs[alloc_id])

    # --- scheduler ----------------------------------------------------------------------------------------

    def place(
        self, counts: dict[str, int] | None = None, port_value: Callable[[PortSpec], int] | None = None
    ) -> Placement:
        """Apply a plan: the version's deployment (created once), `counts` new allocations per group (default:
        each group's Count), older versions' allocations stopped and their running deployments cancelled."""
        pick = port_value or self.cluster.fake_port
        with self.transaction() as tx:
            deployment = self._deployment_of_version(tx)
            if deployment is None and wants_deployment(self.job):
                deployment = new_deployment(self.job, self.job["Priority"])
                mutations.cancel_deployments(tx, self.key, "Cancelled due to newer version of job")
                tx.put_deployment(deployment, "PlanResult")
            for old in list(tx.state.allocs.values()):
                same_job = (old["Namespace"], old["JobID"]) == self.key
                if same_job and old["JobVersion"] != self.job["Version"] and not mutations.alloc_terminal(old):
                    mutations.stop_alloc(tx, old, "alloc is being updated due to job update")
            deployment_id = deployment["ID"] if deployment else ""
            placed: list[str] = []
            for group in groups(self.job):
                count = group["Count"] if counts is None else counts.get(group["Name"], 0)
                for index in range(count):
                    port_values = {p.label: p.static or pick(p) for p in ports(group)}
                    alloc = new_alloc(
                        self.job, group, index, self.eval_id, deployment_id, self.cluster.node, port_values
                    )
                    tx.put_alloc(alloc, "PlanResult")
                    placed.append(alloc["ID"])
                if deployment is not None and count:
                    deployment["TaskGroups"][group["Name"]]["PlacedAllocs"] += count
            if deployment is not None and placed:
                tx.put_deployment(deployment, "PlanResult")
            return Placement(deployment_id, placed)

    def _deployment_of_version(self, tx: Tx) -> JSON | None:
        for deployment in tx.state.deployments.values():
            same_job = (deployment["Namespace"], deployment["JobID"]) == self.key
            if same_job and deployment["JobVersion"] == self.job["Version"] and deployment["Status"] == "running":
                return deployment
        return None

    def complete_eval(self, deployment_id: str, eval_id: str | None = None) -> None:
        """The scheduler finished the evaluation (by default the one that started this run)."""
        with self.transaction() as tx:
            ev = tx.state.evals[eval_id or self.eval_id]
            ev.update(
                Status="complete",
                DeploymentID=deployment_id,
                SnapshotIndex=tx.index - 1,
                QueuedAllocations={g["Name"]: 0 for g in groups(self.job)},
            )
            tx.put_eval(ev)

    def fail_placement(self, deployment_id: str, metrics: JSON | None) -> str:
        """Every group failed to place: the evaluation completes with FailedTGAllocs and a blocked evaluation
        waits for capacity. Returns the blocked evaluation's ID."""
        failures = failed_tg_allocs(self.job, metrics)
        with self.transaction() as tx:
            ev = tx.state.evals[self.eval_id]
            blocked = new_eval(
                self.job,
                "queued-allocs",
                status="blocked",
                StatusDescription="created to place remaining allocations",
                PreviousEval=ev["ID"],
                JobModifyIndex=self.job["JobModifyIndex"],
                FailedTGAllocs=failures,
                SnapshotIndex=tx.index - 1,
            )
            tx.put_eval(blocked)
            ev.update(
                Status="complete",
                DeploymentID=deployment_id,
                BlockedEval=blocked["ID"],
                FailedTGAllocs=failures,
                SnapshotIndex=tx.index - 1,
                QueuedAllocations={g["Name"]: g["Count"] for g in groups(self.job)},
            )
            tx.put_eval(ev)
            blocked_id: str = blocked["ID"]
            return blocked_id

    # --- client -------------------------------------------------------------------------------------------

    def update(
        self,
        alloc_id: str,
        task: str,
        event: JSON | None = None,
        state: str | None = None,
        failed: bool | None = None,
        restarted: bool = False,
    ) -> None:
        """One task-state update from the client (see mutations.client_update)."""
        with self.transaction() as tx:
            mutations.client_update(tx, alloc_id, task, [event] if event else None, state, failed, restarted)

    def event(self, alloc_id: str, task: str, kind: str, **fields: object) -> None:
        """Append a task event built from `kind` and its fields."""
        self.update(alloc_id, task, task_event(kind, **fields))

    def set_health(self, alloc_id: str, healthy: bool) -> None:
        with self.transaction() as tx:
            mutations.set_alloc_health(tx, alloc_id, healthy)

    def write_logs(self, alloc_id: str, task: str, stdout: str, stderr: str) -> None:
        for stream, text in (("stdout", stdout), ("stderr", stderr)):
            if text:
                self.state.append_log(alloc_id, task, stream, text.encode())

    def register_services(self, alloc_id: str, tasks: list[str]) -> None:
        with self.transaction() as tx:
            mutations.register_nomad_services(tx, tx.state.allocs[alloc_id], tasks)

    def set_checks(self, alloc_id: str, refs: list[mutations.CheckRef], status: str, output: str, code: int) -> None:
        with self.transaction() as tx:
            for ref in refs:
                mutations.set_check(tx, tx.state.allocs[alloc_id], ref, status, output, code)

    # --- deployment watcher -------------------------------------------------------------------------------

    def succeed_deployment(self, deployment_id: str) -> None:
        if deployment_id:
            with self.transaction() as tx:
                mutations.set_deployment_status(tx, deployment_id, "successful", "Deployment completed successfully")

    def fail_deployment(self, deployment_id: str, description: str, rollback_to: int | None, then: Runnable) -> None:
        """Fail the deployment. With auto-revert (or an explicit `rollback_to`), the description says where it
        rolls back to and the job is reverted to that version, which then runs `then`; otherwise, with
        auto-revert but no earlier stable version, it says there is none (nomad-api.md §3.9)."""
        if not deployment_id:
            return
        with self.transaction() as tx:
            target = rollback_to if rollback_to is not None else self._stable_version(tx)
            if target is not None:
                description += f" - rolling back to job version {target}"
            elif auto_revert(self.job):
                description += " - no stable job version to auto revert to"
            mutations.set_deployment_status(tx, deployment_id, "failed", description)
        if target is None:
            return
        with self.state.cond:  # not inside the transaction above: the revert is a change of its own
            if self.stop.is_set():
                raise ScenarioAborted
            self.cluster.revert(self.key, target, then)

    def _stable_version(self, tx: Tx) -> int | None:
        """The latest earlier stable version with a different spec, when auto-revert is on."""
        if not auto_revert(self.job):
            return None
        for version in reversed(tx.state.job_versions.get(self.key, [])):
            earlier = version["Version"] < self.job["Version"]
            if earlier and version["Stable"] and spec_of(version) != spec_of(self.job):
                found: int = version["Version"]
                return found
        return None


def failed_tg_allocs(job: JSON, metrics: JSON | None) -> JSON:
    """FailedTGAllocs for every group of `job`: `metrics` over the defaults of a cluster whose 3 nodes have no
    matching GPU (the device-plugin-missing case of nomad-api.md §2)."""
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
