"""Where a rollout stands, from what Nomad reports. Pure: a snapshot in, an assessment out.

Replicas get GPUStack's instance states (pending, scheduled, downloading, starting, running, error), so a
user who knows GPUStack reads Nomad's progress in familiar words. The assessment also decides when the
watch is over and with which verdict (succeeded, failed, placement-failed); which exit code a verdict gives is
the shell's business (`runner.verdict_exit_code`). Within one watch, a replica's state only moves forward
(`ReplicaHistory`), unless a new allocation replaces the replica's, which starts over and says so.

Both judgements are ordered rule tables (`REPLICA_RULES`, `ROLLOUT_RULES`): a named predicate over a small
frozen facts value (`AllocFacts`, `RolloutFacts`) and the verdict it gives; the first rule that holds decides.
A new state (a canary awaiting promotion, say) is one more rule, placed where it takes precedence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Generic, Literal, TypeVar

from ..contract.metadata import DOWNLOAD_TASK
from ..contract.request import GroupRequest
from .explain import (
    Aftermath,
    NodeDevices,
    TaskFailure,
    alloc_failures,
    clock_time,
    deployment_failure_words,
    on_new_version,
    placement_failure,
    rollback_version,
    unhealthy_hint,
)
from .responses import Allocation, AllocMetric, Deployment, DeploymentState, Evaluation, TaskEvent, TaskState

NOTHING_TO_RUN = "replicas is 0: the job is registered and runs no replica, so there is nothing to wait for"

ReplicaState = Literal["pending", "scheduled", "downloading", "starting", "running", "error"]
Phase = Literal[
    "evaluating",
    "waiting-capacity",
    "placement-failed",
    "deploying",
    "awaiting-promotion",
    "succeeded",
    "failed",
    "rolling-back",
]
# The phases that end a watch: its verdict. `awaiting-promotion`: healthy canaries wait for a person to promote
# them (auto_promote off), which Nomad waits for without a deadline.
Verdict = Literal["succeeded", "failed", "placement-failed", "awaiting-promotion"]
VERDICTS: tuple[Verdict, ...] = ("succeeded", "failed", "placement-failed", "awaiting-promotion")

F = TypeVar("F")
V = TypeVar("V")


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
    stable_version: int | None = None  # the job's stable version before this one was registered; None: not known
    earlier_versions: bool = True  # False: this version is the job's first


@dataclass(frozen=True)
class Assessment:
    phase: Phase
    replicas: tuple[Replica, ...]
    headline: str
    details: tuple[str, ...] = ()
    failures: tuple[TaskFailure, ...] = ()
    rollback_to: int | None = None
    aftermath: str | None = None  # what Nomad keeps doing after a watch that ended early (explain.Aftermath)

    @property
    def verdict(self) -> Verdict | None:
        """How the rollout ended; None while it goes on."""
        return next((v for v in VERDICTS if v == self.phase), None)

    @property
    def done(self) -> bool:
        return self.verdict is not None

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
    for alloc in sorted(allocs, key=attrgetter("CreateIndex")):
        if alloc.index is not None:
            latest[alloc.index] = alloc
    return latest


def _main_task(alloc: Allocation) -> TaskState | None:
    return next((state for name, state in alloc.TaskStates.items() if name != DOWNLOAD_TASK), None)


def _started(task: TaskState) -> bool:
    return bool(task.StartedAt) and not (task.StartedAt or "").startswith("0001-")  # Go's zero time: never


# --- ordered rule tables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule(Generic[F, V]):
    """One line of an ordered rule table: when the named predicate `when` holds for the facts, `then` gives the
    verdict. The first rule that holds decides; the last rule of a table always holds."""

    when: Callable[[F], bool]
    then: Callable[[F], V]


def decide(rules: Sequence[Rule[F, V]], facts: F) -> V:
    """What the first rule in `rules` whose predicate holds for `facts` gives."""
    for rule in rules:  # a plain loop: a generator costs more than the predicates themselves
        if rule.when(facts):
            return rule.then(facts)
    raise ValueError("no rule holds: the last rule of a table always holds")


def _always(facts: object) -> bool:
    return True


# --- one replica ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllocFacts:
    """What one allocation's replica state rests on."""

    alloc: Allocation
    request: GroupRequest
    failures: tuple[TaskFailure, ...]
    download: TaskState | None  # the download task, when the group has one
    main: TaskState | None  # the model server's task, once the client reports it
    node: str | None

    @classmethod
    def of(cls, alloc: Allocation, request: GroupRequest, failures: Sequence[TaskFailure]) -> AllocFacts:
        node = alloc.NodeName or (alloc.NodeID[:8] if alloc.NodeID else None)
        download = alloc.TaskStates.get(DOWNLOAD_TASK)
        return cls(alloc, request, tuple(failures), download, _main_task(alloc), node)

    @property
    def restarts(self) -> str:
        return f" (restarted {self.main.Restarts}×)" if self.main is not None and self.main.Restarts else ""

    @property
    def image_pulls(self) -> list[TaskEvent]:
        """The driver's image pull events of the download and main tasks."""
        tasks = [t for t in (self.download, self.main) if t is not None]
        return [e for t in tasks for e in t.Events if e.Type == "Driver" and "image" in e.text.lower()]

    def replica(self, state: ReplicaState, detail: str) -> Replica:
        return Replica(self.alloc.index or 0, state, detail, self.alloc.ID, self.node)


def _task_failed(f: AllocFacts) -> bool:
    return bool(f.failures)


def _alloc_failed(f: AllocFacts) -> bool:
    return f.alloc.ClientStatus in ("failed", "lost")


def _alloc_complete(f: AllocFacts) -> bool:
    return f.alloc.ClientStatus == "complete"


def _downloading(f: AllocFacts) -> bool:
    return f.download is not None and f.download.State == "running"


def _restarting(f: AllocFacts) -> bool:
    """Between two runs of a task that restarts: it started before, it does not set up again."""
    return f.main is not None and f.main.State == "pending" and bool(f.main.Restarts or _started(f.main))


def _setting_up(f: AllocFacts) -> bool:
    return f.alloc.ClientStatus == "pending" or f.main is None or f.main.State == "pending"


def _weights_downloaded(f: AllocFacts) -> bool:
    return _setting_up(f) and f.download is not None and f.download.State == "dead" and not f.download.Failed


def _pulling_image(f: AllocFacts) -> bool:
    return _setting_up(f) and bool(f.image_pulls)


def _healthy(f: AllocFacts) -> bool:
    return bool(f.alloc.healthy)


def _after_download(f: AllocFacts) -> Replica:
    # The weights are downloaded; the server's own image pull may come next: still the download phase.
    pulls = f.image_pulls
    server_pull = pulls[-1].text if f.main is not None and pulls and pulls[-1] in f.main.Events else None
    return f.replica("downloading", server_pull or "model weights downloaded; setting up the model server")


def _loading(f: AllocFacts) -> Replica:
    check = f"waiting for GET {f.request.health_path}" if f.request.health_path else "waiting to be healthy"
    return f.replica("starting", f"loading the model, {check}{f.restarts}")


# A replica's state, first rule that holds: a failure shows whatever else the allocation says.
REPLICA_RULES: tuple[Rule[AllocFacts, Replica], ...] = (
    Rule(_task_failed, lambda f: f.replica("error", f.failures[0].summary)),
    Rule(_alloc_failed, lambda f: f.replica("error", f.alloc.ClientDescription or f.alloc.ClientStatus)),
    Rule(_alloc_complete, lambda f: f.replica("error", "the server exited")),
    Rule(_downloading, lambda f: f.replica("downloading", "downloading model weights")),
    Rule(_restarting, lambda f: f.replica("starting", f"the model server exited; Nomad restarts it{f.restarts}")),
    Rule(_weights_downloaded, _after_download),
    Rule(_pulling_image, lambda f: f.replica("downloading", f.image_pulls[-1].text)),
    Rule(_setting_up, lambda f: f.replica("scheduled", f"placed on {f.node}" if f.node else "placed")),
    Rule(_healthy, lambda f: f.replica("running", "healthy")),
    Rule(_always, _loading),
)


def replica_state(alloc: Allocation, request: GroupRequest, failures: Sequence[TaskFailure]) -> Replica:
    """One replica's GPUStack-like state from its allocation (`failures`: those of its tasks)."""
    return decide(REPLICA_RULES, AllocFacts.of(alloc, request, failures))


def _replicas(
    snapshot: Snapshot, request: GroupRequest, latest: dict[int, Allocation], failures: Sequence[TaskFailure]
) -> tuple[Replica, ...]:
    """Every replica the group asks for: its allocation of this version, or one placed before, or pending."""
    # Allocations of other versions matter only for a replica without one of this version: mostly none.
    earlier = _earlier(snapshot) if any(i not in latest for i in range(request.count)) else {}
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
            replicas.append(replica_state(alloc, request, [f for f in failures if f.alloc_id == alloc.ID]))
    return tuple(replicas)


def _placement_metric(snapshot: Snapshot, group: str) -> AllocMetric | None:
    """Why the scheduler could not place `group`: the evaluation's metrics, else the blocked evaluation's."""
    metrics = (snapshot.evaluation.FailedTGAllocs if snapshot.evaluation else {}) or (
        snapshot.blocked.FailedTGAllocs if snapshot.blocked else {}
    )
    return metrics.get(group) or next(iter(metrics.values()), None)


def _deployment_of_version(snapshot: Snapshot) -> Deployment | None:
    deployment = snapshot.deployment
    if deployment is not None and snapshot.version is not None and deployment.JobVersion != snapshot.version:
        return None  # another version's
    return deployment


# --- the rollout ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutFacts:
    """What one assessment of a rollout rests on, read once from a snapshot; the rules read nothing else."""

    request: GroupRequest
    replicas: tuple[Replica, ...]
    failures: tuple[TaskFailure, ...]
    evaluation_status: str  # "pending" before the evaluation is read
    evaluation_text: str
    unplaced: int  # replicas with no allocation of this version
    metric: AllocMetric | None  # why the scheduler could not place the group, when it says
    blocked: bool  # a blocked evaluation waits for capacity
    deployment: Deployment | None  # this version's deployment; None before Nomad makes one (or never makes one)
    nodes: tuple[NodeDevices, ...] | None
    wait_for_capacity: bool
    stable_version: int | None = None
    earlier_versions: bool = True

    @classmethod
    def of(cls, snapshot: Snapshot, request: GroupRequest, wait_for_capacity: bool) -> RolloutFacts:
        allocs = _ours(snapshot)
        live = [a for a in allocs if a.DesiredStatus == "run"]
        latest = _latest_per_index(live or allocs)
        failures = tuple(f for a in latest.values() for f in alloc_failures(a, memory_mb=request.memory_mb))
        evaluation = snapshot.evaluation
        return cls(
            request=request,
            replicas=_replicas(snapshot, request, latest, failures),
            failures=failures,
            evaluation_status=evaluation.Status if evaluation else "pending",
            evaluation_text=(evaluation.StatusDescription or evaluation.Status) if evaluation else "",
            unplaced=request.count - len(latest),
            metric=_placement_metric(snapshot, request.group),
            blocked=snapshot.blocked is not None and snapshot.blocked.Status == "blocked",
            deployment=_deployment_of_version(snapshot),
            nodes=snapshot.nodes,
            wait_for_capacity=wait_for_capacity,
            stable_version=snapshot.stable_version,
            earlier_versions=snapshot.earlier_versions,
        )

    @property
    def healthy(self) -> int:
        return sum(1 for r in self.replicas if r.healthy)

    @property
    def progress(self) -> str:
        return f"{self.healthy}/{self.request.count} healthy"

    @property
    def deployment_status(self) -> str:
        return self.deployment.Status if self.deployment is not None else ""

    @property
    def deployment_text(self) -> str:
        return self.deployment.StatusDescription if self.deployment is not None else ""

    @property
    def group(self) -> DeploymentState | None:
        """This version's deployment state of the group watched."""
        return self.deployment.TaskGroups.get(self.request.group) if self.deployment is not None else None

    @property
    def canaries(self) -> int:
        """The canaries this deployment starts (0: none, or no deployment yet)."""
        return self.group.DesiredCanaries if self.group is not None else 0

    @property
    def new_version(self) -> str:
        return on_new_version(self.healthy, self.request.count)

    @property
    def deployment_active(self) -> bool:
        return self.deployment_status in ("running", "pending", "paused", "initializing")

    @property
    def aftermath(self) -> str | None:
        """What Nomad does after a replica failed for good while the deployment runs: it replaces the replica by
        the reschedule policy until the progress deadline, then fails the deployment (and auto-reverts)."""
        if not self.deployment_active or not self.request.reschedules:
            return None
        group = self.group
        deadline = clock_time(group.RequireProgressBy or "") if group is not None else None
        auto_revert = group.AutoRevert if group is not None else self.request.auto_revert
        return Aftermath(deadline, auto_revert, self.stable_version, self.earlier_versions).sentence

    @property
    def rollback_to(self) -> int | None:
        """The version Nomad's auto-revert rolls back to, once this version's deployment failed."""
        return rollback_version(self.deployment_text) if self.deployment_status == "failed" else None

    def assessment(
        self,
        phase: Phase,
        headline: str,
        details: Sequence[str] = (),
        failures: Sequence[TaskFailure] = (),
        rollback_to: int | None = None,
        aftermath: str | None = None,
    ) -> Assessment:
        return Assessment(phase, self.replicas, headline, tuple(details), tuple(failures), rollback_to, aftermath)


def _evaluating(f: RolloutFacts) -> bool:
    return f.evaluation_status == "pending"


def _evaluation_failed(f: RolloutFacts) -> bool:
    return f.evaluation_status in ("failed", "canceled")


def _cannot_place(f: RolloutFacts) -> bool:
    return f.unplaced > 0 and (f.metric is not None or f.blocked)


def _waiting_for_capacity(f: RolloutFacts) -> bool:
    return _cannot_place(f) and f.wait_for_capacity


def _nothing_to_run(f: RolloutFacts) -> bool:
    # Nomad makes no deployment for a group with nothing to place: there is nothing to wait for.
    return f.request.count == 0 and f.deployment is None


def _unhealthy_while_deployment_settles(f: RolloutFacts) -> bool:
    # Nomad fails the deployment right after an unhealthy verdict it cannot reschedule (deployment_watcher.go
    # shouldFailEarly: no reschedule policy); its description says whether it rolls back, so wait for it
    # rather than end on the allocation alone.
    settling = f.deployment_status in ("running", "pending")
    unhealthy = all(x.kind == "unhealthy" for x in f.failures)
    return bool(f.failures) and (unhealthy or not f.request.reschedules) and settling


def _tasks_failed(f: RolloutFacts) -> bool:
    return bool(f.failures)


def _all_healthy(f: RolloutFacts) -> bool:
    return f.deployment_status == "successful" and f.healthy >= f.request.count


def _deployment_successful(f: RolloutFacts) -> bool:
    return f.deployment_status == "successful"


def _canaries_unpromoted(f: RolloutFacts) -> bool:
    group = f.group
    return f.deployment_active and group is not None and group.DesiredCanaries > 0 and not group.Promoted


def _canaries_healthy(f: RolloutFacts) -> bool:
    # deployment_watcher.go autoPromoteDeployment: every canary placed and healthy
    group = f.group
    return _canaries_unpromoted(f) and group is not None and group.HealthyAllocs >= group.DesiredCanaries


def _canaries_promoted(f: RolloutFacts) -> bool:
    group = f.group
    return f.deployment_active and group is not None and group.DesiredCanaries > 0 and group.Promoted


def _deployment_failed(f: RolloutFacts) -> bool:
    return f.deployment_status == "failed"


def _deployment_cancelled(f: RolloutFacts) -> bool:
    return f.deployment_status == "cancelled"


def _placement_lines(f: RolloutFacts) -> list[str]:
    if f.metric is None:
        return ["no node can take the job yet"]
    return placement_failure(f.request, f.metric, f.nodes)


def _evaluation_failure(f: RolloutFacts) -> Assessment:
    return f.assessment("failed", f"the evaluation {f.evaluation_status}: {f.evaluation_text}")


def _capacity_wait(f: RolloutFacts) -> Assessment:
    lines = _placement_lines(f)
    return f.assessment("waiting-capacity", "waiting for capacity: " + lines[0], lines[1:])


def _placement_failed(f: RolloutFacts) -> Assessment:
    lines = _placement_lines(f)
    lines.append("Nomad keeps the job queued and places it when capacity appears (watch with --wait-for-capacity)")
    return f.assessment("placement-failed", lines[0], lines[1:])


def _unhealthy_so_far(f: RolloutFacts) -> Assessment:
    return f.assessment("deploying", f"{f.progress}; {f.failures[0].summary}")


def _task_failure(f: RolloutFacts) -> Assessment:
    first = f.failures[0]
    headline = f"replica {first.replica}: {first.summary}" if first.replica is not None else first.summary
    details = [first.hint] if first.hint else []
    if first.kind == "unhealthy":
        details.append(unhealthy_hint(f.request))
    return f.assessment("failed", headline, details, f.failures, f.rollback_to, f.aftermath)


def _canary_wait(f: RolloutFacts) -> Assessment:
    if f.group is not None and f.group.AutoPromote:
        return f.assessment("deploying", f"canary healthy, {f.new_version}; Nomad promotes it")
    return f.assessment(
        "awaiting-promotion",
        f"canary healthy, {f.new_version}; waiting for promotion",
        ["Nomad waits for a promotion without a deadline: promote it, or revert to drop the canary"],
    )


def _canary_start(f: RolloutFacts) -> Assessment:
    n = f.canaries
    canary = "canary" if n == 1 else f"{n} canaries"
    return f.assessment("deploying", f"{canary} beside the running version: {f.progress}")


def _every_replica_healthy(f: RolloutFacts) -> Assessment:
    count = f.request.count
    return f.assessment("succeeded", "the replica is healthy" if count == 1 else f"all {count} replicas are healthy")


def _deployment_failure(f: RolloutFacts) -> Assessment:
    text = f.deployment_text
    why = [unhealthy_hint(f.request)] if "progress deadline" in text or "unhealthy" in text else []
    return f.assessment("failed", f"deployment failed: {text}", why, rollback_to=f.rollback_to)


def _deployment_cancellation(f: RolloutFacts) -> Assessment:
    return f.assessment("failed", f"deployment cancelled: {f.deployment_text or 'cancelled'}")


# Where a rollout stands, first rule that holds: the evaluation, then placement, then the tasks, then the
# deployment, canaries first.
ROLLOUT_RULES: tuple[Rule[RolloutFacts, Assessment], ...] = (
    Rule(_evaluating, lambda f: f.assessment("evaluating", "Nomad is evaluating the job")),
    Rule(_evaluation_failed, _evaluation_failure),
    Rule(_waiting_for_capacity, _capacity_wait),
    Rule(_cannot_place, _placement_failed),
    Rule(_nothing_to_run, lambda f: f.assessment("succeeded", NOTHING_TO_RUN)),
    Rule(_unhealthy_while_deployment_settles, _unhealthy_so_far),
    Rule(_tasks_failed, _task_failure),
    Rule(_canaries_healthy, _canary_wait),
    Rule(_canaries_unpromoted, _canary_start),
    Rule(_canaries_promoted, lambda f: f.assessment("deploying", f"canary promoted, {f.new_version}")),
    Rule(_all_healthy, _every_replica_healthy),
    Rule(_deployment_successful, lambda f: f.assessment("deploying", f"deployment successful, {f.progress}")),
    Rule(_deployment_failed, _deployment_failure),
    Rule(_deployment_cancelled, _deployment_cancellation),
    Rule(_always, lambda f: f.assessment("deploying", f.progress)),
)


def assess(snapshot: Snapshot, request: GroupRequest, *, wait_for_capacity: bool = False) -> Assessment:
    """Where the rollout of `snapshot.version` stands, and whether watching is over (its verdict)."""
    return decide(ROLLOUT_RULES, RolloutFacts.of(snapshot, request, wait_for_capacity))


def deployment_of(deployments: Iterable[Deployment], version: int | None) -> Deployment | None:
    """Job version `version`'s deployment among the job's deployments: its newest (the newest of all when the
    version is not known). Not simply the job's latest: by the time a watch reads, Nomad may have moved on to a
    later version (an auto-revert registers the old spec again), and the verdict is about this one."""
    return latest_deployment(d for d in deployments if version is None or d.JobVersion == version)


def latest_deployment(deployments: Iterable[Deployment]) -> Deployment | None:
    """The newest deployment, as Nomad decides it: by CreateIndex (state_store.go LatestDeploymentByJobID)."""
    return max(deployments, key=lambda d: d.CreateIndex, default=None)


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
            why = deployment_failure_words(self.description)
            return f"Nomad rolled back to {target}, and the rollback failed too: {why}"
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
