"""Where a rollout stands, from what Nomad reports. Pure: a snapshot in, an assessment out.

Replicas get GPUStack's instance states (pending, scheduled, downloading, starting, running, error), so a
user who knows GPUStack reads Nomad's progress in familiar words. The assessment also decides when the
watch is over and with which exit code. Within one watch, a replica's state only moves forward
(`ReplicaHistory`), unless a new allocation replaces the replica's, which starts over and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ..contract.metadata import DOWNLOAD_TASK
from ..contract.request import GroupRequest
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_PLACEMENT
from .explain import (
    NodeDevices,
    TaskFailure,
    alloc_failures,
    placement_failure,
    rollback_version,
    unhealthy_hint,
)
from .responses import Allocation, Deployment, Evaluation, TaskState

NOTHING_TO_RUN = "replicas is 0: the job is registered and runs no replica, so there is nothing to wait for"

ReplicaState = Literal["pending", "scheduled", "downloading", "starting", "running", "error"]
Phase = Literal[
    "evaluating", "waiting-capacity", "placement-failed", "deploying", "succeeded", "failed", "rolling-back"
]


# The order a replica's states follow; `error` may come from any of them and ends the allocation's way.
STATE_ORDER: dict[ReplicaState, int] = {
    "pending": 0, "scheduled": 1, "downloading": 2, "starting": 3, "running": 4, "error": 5,
}  # fmt: skip


@dataclass(frozen=True)
class Replica:
    """One replica in GPUStack's words. `earlier_version`: the job version its allocation runs when it is not
    the version assessed (a re-submit: the allocation Nomad has yet to update or replace); such a replica is
    shown as it is, but does not count as a healthy replica of the version assessed."""

    index: int
    state: ReplicaState
    detail: str = ""
    alloc_id: str | None = None
    node: str | None = None
    earlier_version: int | None = None

    @property
    def healthy(self) -> bool:
        """Running and healthy, in the version assessed."""
        return self.state == "running" and self.earlier_version is None


@dataclass(frozen=True)
class Snapshot:
    """What the watcher last heard from Nomad about one job version."""

    job_id: str
    version: int | None
    evaluation: Evaluation | None = None
    blocked: Evaluation | None = None
    deployment: Deployment | None = None
    allocations: tuple[Allocation, ...] = ()
    nodes: tuple[NodeDevices, ...] | None = None  # what the node listing reports; None when not read


@dataclass(frozen=True)
class Assessment:
    phase: Phase
    replicas: tuple[Replica, ...]
    headline: str
    details: tuple[str, ...] = ()
    failures: tuple[TaskFailure, ...] = ()
    rollback_to: int | None = None
    exit_code: int | None = None  # None while the rollout goes on

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    @property
    def healthy(self) -> int:
        return sum(1 for r in self.replicas if r.healthy)


def _ours(snapshot: Snapshot) -> list[Allocation]:
    return [a for a in snapshot.allocations if snapshot.version is None or a.JobVersion == snapshot.version]


def _earlier(snapshot: Snapshot) -> dict[int, Allocation]:
    """Per replica, the live allocation of another job version (placed before this version was registered)."""
    others = [
        a
        for a in snapshot.allocations
        if snapshot.version is not None
        and a.JobVersion != snapshot.version
        and a.DesiredStatus == "run"
        and a.ClientStatus in ("pending", "running")
    ]
    return _latest_per_index(others)


def _latest_per_index(allocs: list[Allocation]) -> dict[int, Allocation]:
    latest: dict[int, Allocation] = {}
    for alloc in sorted(allocs, key=lambda a: a.CreateIndex):
        if alloc.index is not None:
            latest[alloc.index] = alloc
    return latest


def _main_task(alloc: Allocation) -> TaskState | None:
    return next((state for name, state in alloc.TaskStates.items() if name != DOWNLOAD_TASK), None)


def _started(task: TaskState) -> bool:
    return bool(task.StartedAt) and not (task.StartedAt or "").startswith("0001-")  # Go's zero time: never


def replica_state(alloc: Allocation, request: GroupRequest, failures: list[TaskFailure]) -> Replica:
    """One replica's GPUStack-like state from its allocation."""
    node = alloc.NodeName or (alloc.NodeID[:8] if alloc.NodeID else None)

    def replica(state: ReplicaState, detail: str) -> Replica:
        return Replica(alloc.index or 0, state, detail, alloc.ID, node)

    if failures:
        return replica("error", failures[0].summary)
    if alloc.ClientStatus in ("failed", "lost"):
        return replica("error", alloc.ClientDescription or alloc.ClientStatus)
    if alloc.ClientStatus == "complete":
        return replica("error", "the server exited")
    download = alloc.TaskStates.get(DOWNLOAD_TASK)
    if download is not None and download.State == "running":
        return replica("downloading", "downloading model weights")
    main = _main_task(alloc)
    if main is not None and main.State == "pending" and (main.Restarts or _started(main)):
        # Between two runs of a task that restarts: it started before, it does not set up again.
        restarts = f" (restarted {main.Restarts}×)" if main.Restarts else ""
        return replica("starting", f"the model server exited; Nomad restarts it{restarts}")
    if alloc.ClientStatus == "pending" or main is None or main.State == "pending":
        tasks = [t for t in (download, main) if t is not None]
        pulling = [e for t in tasks for e in t.Events if e.Type == "Driver" and "image" in e.text.lower()]
        if download is not None and download.State == "dead" and not download.Failed:
            # The weights are downloaded; the server's own image pull may come next: still the download phase.
            detail = pulling[-1].text if main is not None and pulling and pulling[-1] in main.Events else None
            return replica("downloading", detail or "model weights downloaded; setting up the model server")
        if pulling:
            return replica("downloading", pulling[-1].text)
        return replica("scheduled", f"placed on {node}" if node else "placed")
    if alloc.healthy:
        return replica("running", "healthy")
    check = f"waiting for GET {request.health_path}" if request.health_path else "waiting to be healthy"
    restarts = f" (restarted {main.Restarts}×)" if main.Restarts else ""
    return replica("starting", f"loading the model, {check}{restarts}")


def assess(snapshot: Snapshot, request: GroupRequest, *, wait_for_capacity: bool = False) -> Assessment:
    """Where the rollout of `snapshot.version` stands, and whether watching is over."""
    evaluation = snapshot.evaluation
    allocs = _ours(snapshot)
    live = [a for a in allocs if a.DesiredStatus == "run"]
    latest = _latest_per_index(live or allocs)
    failures = [f for a in latest.values() for f in alloc_failures(a, memory_mb=request.memory_mb)]
    earlier = _earlier(snapshot)
    replicas: list[Replica] = []
    for index in range(request.count):
        alloc = latest.get(index)
        if alloc is None and index in earlier:
            # Placed before this version: shown as it is until Nomad updates it in place or replaces it.
            old = earlier[index]
            shown = replica_state(old, request, [])
            detail = f"{shown.detail} (job version {old.JobVersion}, until Nomad updates or replaces it)"
            replicas.append(replace(shown, detail=detail, earlier_version=old.JobVersion))
        elif alloc is None:
            replicas.append(Replica(index, "pending", "waiting to be placed"))
        else:
            mine = [f for f in failures if f.alloc_id == alloc.ID]
            replicas.append(replica_state(alloc, request, mine))
    done = tuple(replicas)
    healthy = sum(1 for r in replicas if r.healthy)
    progress = f"{healthy}/{request.count} healthy"

    if evaluation is None or evaluation.Status == "pending":
        return Assessment("evaluating", done, "Nomad is evaluating the job")
    if evaluation.Status in ("failed", "canceled"):
        text = evaluation.StatusDescription or evaluation.Status
        return Assessment("failed", done, f"the evaluation {evaluation.Status}: {text}", exit_code=EXIT_FAILURE)

    unplaced = request.count - len(latest)
    metrics = evaluation.FailedTGAllocs or (snapshot.blocked.FailedTGAllocs if snapshot.blocked else {})
    blocked = snapshot.blocked is not None and snapshot.blocked.Status == "blocked"
    if unplaced > 0 and (metrics or blocked):
        metric = metrics.get(request.group) or next(iter(metrics.values()), None)
        lines = placement_failure(request, metric, snapshot.nodes) if metric else ["no node can take the job yet"]
        if wait_for_capacity:
            return Assessment("waiting-capacity", done, "waiting for capacity: " + lines[0], tuple(lines[1:]))
        lines.append("Nomad keeps the job queued and places it when capacity appears (watch with --wait-for-capacity)")
        return Assessment("placement-failed", done, lines[0], tuple(lines[1:]), exit_code=EXIT_PLACEMENT)

    deployment = snapshot.deployment
    ours = deployment is not None and (snapshot.version is None or deployment.JobVersion == snapshot.version)
    settling = ours and deployment is not None and deployment.Status in ("running", "pending")
    if request.count == 0 and not ours:
        # Nomad makes no deployment for a group with nothing to place: there is nothing to wait for.
        return Assessment("succeeded", done, NOTHING_TO_RUN, exit_code=EXIT_OK)
    if failures and all(f.kind == "unhealthy" for f in failures) and settling:
        # Nomad fails the deployment right after an unhealthy verdict; its description says whether it
        # rolls back, so wait for it rather than end on the allocation alone.
        return Assessment("deploying", done, f"{progress}; {failures[0].summary}")
    if failures:
        first = failures[0]
        headline = f"replica {first.replica}: {first.summary}" if first.replica is not None else first.summary
        details = tuple(f.hint for f in failures[:1] if f.hint)
        rollback = None
        if ours and deployment is not None and deployment.Status == "failed":
            rollback = rollback_version(deployment.StatusDescription)
        if first.kind == "unhealthy":
            details = (*details, unhealthy_hint(request))
        return Assessment("failed", done, headline, details, tuple(failures), rollback, EXIT_FAILURE)
    if ours and deployment is not None:
        if deployment.Status == "successful" and healthy >= request.count:
            every = "the replica is healthy" if request.count == 1 else f"all {request.count} replicas are healthy"
            return Assessment("succeeded", done, every, exit_code=EXIT_OK)
        if deployment.Status == "successful":
            return Assessment("deploying", done, f"deployment successful, {progress}")
        if deployment.Status == "failed":
            description = deployment.StatusDescription
            rollback = rollback_version(description)
            why = (unhealthy_hint(request),) if "progress deadline" in description or "unhealthy" in description else ()
            return Assessment("failed", done, f"deployment failed: {description}", why, (), rollback, EXIT_FAILURE)
        if deployment.Status == "cancelled":
            text = deployment.StatusDescription or "cancelled"
            return Assessment("failed", done, f"deployment cancelled: {text}", exit_code=EXIT_FAILURE)
    return Assessment("deploying", done, progress)


# --- what a watch shows ------------------------------------------------------------------------------------


@dataclass
class ReplicaHistory:
    """What one watch has shown of each replica, so that a replica's state only moves forward.

    Nomad's view of one allocation can seem to step back (the weights downloaded and the server's image not yet
    pulling, a restart between two runs, an answer older than the last one): the state shown before is kept
    then. A new allocation for the replica (Nomad replaced it) starts over, and its detail says so.
    """

    shown: dict[int, Replica] = field(default_factory=dict)
    # index -> (the new allocation's ID, the one it replaces, the state that one had reached)
    replaced: dict[int, tuple[str, str, ReplicaState]] = field(default_factory=dict)

    def forward(self, replicas: Sequence[Replica]) -> tuple[Replica, ...]:
        """`replicas` as this watch shows them (and remembers them)."""
        out = []
        for replica in replicas:
            before = self.shown.get(replica.index)
            keep = replica
            if before is not None:
                if replica.alloc_id and before.alloc_id and replica.alloc_id != before.alloc_id:
                    self.replaced[replica.index] = (replica.alloc_id, before.alloc_id, before.state)
                elif STATE_ORDER[replica.state] < STATE_ORDER[before.state]:
                    keep = before
            self.shown[replica.index] = keep
            out.append(self._noted(keep))
        return tuple(out)

    def _noted(self, replica: Replica) -> Replica:
        """A replica whose new allocation starts over says so, until it is as far as the one it replaces was."""
        new, old, reached = self.replaced.get(replica.index, ("", "", "pending"))
        behind = STATE_ORDER[replica.state] < min(STATE_ORDER[reached], STATE_ORDER["running"])
        if replica.alloc_id != new or not behind:
            return replica
        return replace(replica, detail=f"new allocation (replaces {old[:8]}): {replica.detail}")


def shown_forward(assessment: Assessment, history: ReplicaHistory) -> Assessment:
    """The assessment with its replicas as the watch shows them (see ReplicaHistory)."""
    return replace(assessment, replicas=history.forward(assessment.replicas))


# --- auto-revert -------------------------------------------------------------------------------------------

DEPLOYMENT_DONE = ("successful", "failed", "cancelled")


@dataclass(frozen=True)
class Rollback:
    """Nomad's auto-revert after a failed deployment: the version it rolls back to, and how that goes.

    The revert registers the old spec as a new job version (`job_version`), whose own deployment follows
    (nomad-api.md §3.9); `status` is that deployment's, or "waiting" before it exists.
    """

    to_version: int
    job_version: int | None = None
    status: str = "waiting"
    description: str = ""
    healthy: int = 0
    desired: int = 0

    @property
    def done(self) -> bool:
        return self.status in DEPLOYMENT_DONE

    @property
    def summary(self) -> str:
        target = f"job version {self.to_version}"
        if self.job_version is not None:
            target += f" (registered again as version {self.job_version})"
        progress = f"{self.healthy}/{self.desired} healthy"
        if self.status == "successful":
            return f"Nomad rolled back to {target}: the rollback succeeded, {progress}"
        if self.status == "failed":
            return f"Nomad rolled back to {target}, and the rollback failed too: {self.description}"
        if self.status == "cancelled":
            return f"Nomad rolled back to {target}; the rollback was cancelled: {self.description}"
        if self.job_version is None:
            return f"Nomad is rolling back to {target}: waiting for its deployment"
        return f"Nomad is rolling back to {target}: {progress}"


def assess_rollback(to_version: int, failed: Deployment, latest: Deployment | None) -> Rollback:
    """Where the rollback after `failed` stands, from the job's latest deployment."""
    if latest is None or latest.ID == failed.ID or latest.JobVersion <= failed.JobVersion:
        return Rollback(to_version)
    groups = latest.TaskGroups.values()
    return Rollback(
        to_version,
        latest.JobVersion,
        latest.Status,
        latest.StatusDescription,
        healthy=sum(g.HealthyAllocs for g in groups),
        desired=sum(g.DesiredTotal for g in groups),
    )
