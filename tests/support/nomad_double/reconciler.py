"""Nomad's reconciler for service and batch jobs (scheduler/reconciler/reconcile_cluster.go, filters.go,
allocs.go), over the double's JSON: what an evaluation changes, given the job, its allocations and its latest
deployment. Pure: it returns a `Result` and changes nothing; `scheduler` applies it.

The double has one client node that is always ready, so no allocation is ever lost, migrating, disconnected or
on a tainted node: those branches of Nomad's reconciler are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import reschedule
from .jobspec import JSON, groups
from .objects import alloc_index, alloc_name, new_deployment, new_deployment_state, new_eval, rfc3339

# scheduler/structs/const.go
NOT_NEEDED = "alloc not needed due to job update"
UPDATING = "alloc is being updated due to job update"
RESCHEDULED = "alloc was rescheduled because it failed"
FOLLOWUP_DESCRIPTION = "created for delayed rescheduling"
# scheduler/reconciler/reconcile_cluster.go
BATCHED_FAILED_ALLOC_WINDOW = 5 * 10**9  # batchedFailedAllocWindowSize
RESCHEDULE_WINDOW = 10**9  # rescheduleWindowSize
# nomad/structs/deployment.go
DEPLOYMENT_DESCRIPTIONS = {
    "running": "Deployment is running",
    "running-needs-promotion": "Deployment is running but requires manual promotion",
    "running-auto-promotion": "Deployment is running pending automatic promotion",
    "paused": "Deployment is paused",
    "successful": "Deployment completed successfully",
    "stopped-job": "Cancelled because job is stopped",
    "newer-job": "Cancelled due to newer version of job",
    "failed-allocations": "Failed due to unhealthy allocations",
    "progress-deadline": "Failed due to progress deadline",
    "failed-by-user": "Deployment marked as failed",
}
ACTIVE = ("running", "paused", "blocked", "unblocking", "initializing", "pending")

AllocSet = dict[str, JSON]
UPDATE_KEYS = (
    "Ignore", "Place", "Migrate", "Stop", "InPlaceUpdate", "DestructiveUpdate", "Canary", "Preemptions",
    "Reconnect", "RescheduleNow", "RescheduleLater", "Disconnect",
)  # fmt: skip


def desired_updates() -> JSON:
    """structs.DesiredUpdates with every counter at 0."""
    return dict.fromkeys(UPDATE_KEYS, 0)


# --- predicates on allocations and deployments ---------------------------------------------------------------


def server_terminal(alloc: JSON) -> bool:
    return alloc["DesiredStatus"] in ("stop", "evict")


def client_terminal(alloc: JSON) -> bool:
    return alloc["ClientStatus"] in ("complete", "failed", "lost")


def terminal(alloc: JSON) -> bool:
    """Allocation.TerminalStatus."""
    return server_terminal(alloc) or client_terminal(alloc)


def healthy(alloc: JSON) -> bool | None:
    return (alloc.get("DeploymentStatus") or {}).get("Healthy")


def is_canary(alloc: JSON) -> bool:
    return bool((alloc.get("DeploymentStatus") or {}).get("Canary"))


def wants_reschedule(alloc: JSON) -> bool:
    return bool((alloc.get("DesiredTransition") or {}).get("Reschedule"))


def active(deployment: JSON | None) -> bool:
    """Deployment.Active."""
    return deployment is not None and deployment["Status"] in ACTIVE


def requires_promotion(deployment: JSON | None) -> bool:
    """Deployment.RequiresPromotion."""
    if deployment is None or deployment["Status"] != "running":
        return False
    return any(g["DesiredCanaries"] > 0 and not g["Promoted"] for g in deployment["TaskGroups"].values())


def has_auto_promote(deployment: JSON | None) -> bool:
    """Deployment.HasAutoPromote: every group with canaries promotes itself."""
    if deployment is None or not deployment["TaskGroups"] or deployment["Status"] != "running":
        return False
    return all(g["AutoPromote"] for g in deployment["TaskGroups"].values() if g["DesiredCanaries"] > 0)


def update_empty(update: JSON | None) -> bool:
    """UpdateStrategy.IsEmpty."""
    return not update or int(update.get("MaxParallel") or 0) == 0


def stopped(job: JSON | None) -> bool:
    """Job.Stopped: a purged job counts as stopped."""
    return job is None or bool(job.get("Stop"))


# --- what changed between two versions of a group (scheduler/util.go) ------------------------------------------

_GROUP_DESTRUCTIVE = ("EphemeralDisk", "Networks", "Consul", "Volumes")
_TASK_DESTRUCTIVE = (
    "Driver", "User", "Config", "Env", "Artifacts", "Vault", "Secrets", "Consul", "Templates", "CSIPluginConfig",
    "VolumeMounts", "Identity", "Identities",
)  # fmt: skip
_RESOURCES_DESTRUCTIVE = ("CPU", "Cores", "MemoryMB", "MemoryMaxMB", "Devices", "NUMA", "SecretsMB", "Networks")


def _render_templates(policy: JSON | None) -> bool:
    return bool((policy or {}).get("RenderTemplates"))


def _combined_meta(job: JSON, group: JSON, task: JSON) -> JSON:
    """Job.CombinedTaskMeta: job, then group, then task meta."""
    return {**(job.get("Meta") or {}), **(group.get("Meta") or {}), **(task.get("Meta") or {})}


def tasks_updated(old_job: JSON, new_job: JSON, group_name: str) -> bool:
    """scheduler/util.go tasksUpdated: whether the group changed in a way no running task can take in place."""
    a = next((g for g in groups(old_job) if g["Name"] == group_name), None)
    b = next((g for g in groups(new_job) if g["Name"] == group_name), None)
    if a is None or b is None:
        return True
    if len(a.get("Tasks") or []) != len(b.get("Tasks") or []):
        return True
    if any(a.get(k) != b.get(k) for k in _GROUP_DESTRUCTIVE):
        return True
    if _render_templates(a.get("RestartPolicy")) != _render_templates(b.get("RestartPolicy")):
        return True
    b_tasks = {t["Name"]: t for t in b.get("Tasks") or []}
    for at in a.get("Tasks") or []:
        bt = b_tasks.get(at["Name"])
        if bt is None or any(at.get(k) != bt.get(k) for k in _TASK_DESTRUCTIVE):
            return True
        if _combined_meta(old_job, a, at) != _combined_meta(new_job, b, bt):
            return True
        ar, br = at.get("Resources") or {}, bt.get("Resources") or {}
        if any(ar.get(k) != br.get(k) for k in _RESOURCES_DESTRUCTIVE):
            return True
        if bool((at.get("LogConfig") or {}).get("Disabled")) != bool((bt.get("LogConfig") or {}).get("Disabled")):
            return True
        if _render_templates(at.get("RestartPolicy")) != _render_templates(bt.get("RestartPolicy")):
            return True
    return False


def alloc_update(existing: JSON, job: JSON, group: JSON) -> str:
    """genericAllocUpdateFn: "ignore" (same job index, or a terminal alloc), "destructive" or "inplace". The
    double's node always fits an in-place update."""
    if existing["Job"]["JobModifyIndex"] == job["JobModifyIndex"]:
        return "ignore"
    if tasks_updated(job, existing["Job"], group["Name"]):
        return "destructive"
    if terminal(existing):
        return "ignore"
    return "inplace"


# --- names (scheduler/reconciler/allocs.go AllocNameIndex) ---------------------------------------------------------


class NameIndex:
    """Which `job.group[i]` names are taken, to pick names for placements and for removal."""

    def __init__(self, job_id: str, group: str, count: int, taken: Iterable[JSON]) -> None:
        self.job_id, self.group, self.count = job_id, group, count
        self.used: set[int] = set()
        self.duplicates: dict[int, int] = {}
        for alloc in taken:
            index = alloc_index(alloc)
            if index in self.used:
                self.duplicates[index] = self.duplicates.get(index, 0) + 1
            else:
                self.used.add(index)

    def name(self, index: int) -> str:
        return alloc_name(self.job_id, self.group, index)

    def highest(self, n: int) -> set[str]:
        """Highest: remove and return the n highest names in use."""
        found: set[str] = set()
        for index in sorted(self.used, reverse=True):
            if len(found) >= n:
                break
            self.used.discard(index)
            found.add(self.name(index))
        return found

    def is_duplicate(self, index: int) -> bool:
        return self.duplicates.get(index, 0) > 0

    def unset(self, index: int) -> None:
        if index in self.duplicates:
            self.duplicates[index] -= 1
            if self.duplicates[index] == 0:
                del self.duplicates[index]
        else:
            self.used.discard(index)

    def next(self, n: int) -> list[str]:
        """Next: the lowest free names below Count, then overlapping ones from 0."""
        found: list[str] = []
        for index in range(self.count):
            if len(found) == n:
                return found
            if index not in self.used:
                self.used.add(index)
                found.append(self.name(index))
        for index in range(n - len(found)):
            self.used.add(index)
            found.append(self.name(index))
        return found

    def next_canaries(self, n: int, existing: AllocSet, destructive: AllocSet) -> list[str]:
        """NextCanaries: first the names of allocations being replaced, then free names, then Count, Count+1..."""
        taken = {a["Name"] for a in existing.values()}
        found: list[str] = []
        replaced = sorted({alloc_index(a) for a in destructive.values()})
        free = [i for i in range(self.count) if i not in self.used]
        for index in [i for i in replaced if i < self.count] + free:
            name = self.name(index)
            if name not in taken and name not in found:
                found.append(name)
                self.used.add(index)
                if len(found) == n:
                    return found
        remainder = n - len(found)
        found += [self.name(i) for i in range(self.count, self.count + remainder)]
        return found


def name_order(allocs: AllocSet) -> list[JSON]:
    return sorted(allocs.values(), key=alloc_index)


# --- the result ---------------------------------------------------------------------------------------------------


@dataclass
class Place:
    """AllocPlaceResult (or a destructive update's new half when `stop` is set)."""

    name: str
    group: JSON
    previous: JSON | None = None
    reschedule: bool = False
    canary: bool = False
    stop: JSON | None = None  # a destructive update stops this allocation for the new one
    stop_description: str = ""


@dataclass
class Stop:
    alloc: JSON
    description: str
    client_status: str = ""
    followup_eval: str = ""


@dataclass
class Result:
    deployment: JSON | None = None  # a deployment to create
    current: JSON | None = None  # the deployment this evaluation works for (created or existing)
    deployment_updates: list[tuple[str, str, str]] = field(default_factory=list)  # (ID, status, description)
    place: list[Place] = field(default_factory=list)
    destructive: list[Place] = field(default_factory=list)
    inplace: list[JSON] = field(default_factory=list)
    stop: list[Stop] = field(default_factory=list)
    attribute_updates: dict[str, JSON] = field(default_factory=dict)  # alloc ID → FollowupEvalID to set
    desired: dict[str, JSON] = field(default_factory=dict)
    followup_evals: list[JSON] = field(default_factory=list)
    name_indexes: dict[str, NameIndex] = field(default_factory=dict)

    def merge(self, other: Result) -> None:
        """ReconcileResults.Merge."""
        self.deployment = other.deployment or self.deployment
        self.deployment_updates += other.deployment_updates
        self.place += other.place
        self.destructive += other.destructive
        self.inplace += other.inplace
        self.stop += other.stop
        self.attribute_updates.update(other.attribute_updates)
        self.desired.update(other.desired)
        self.followup_evals += other.followup_evals
        self.name_indexes.update(other.name_indexes)


@dataclass
class _Job:
    """ReconcilerState."""

    job: JSON | None
    job_id: str
    batch: bool
    old: JSON | None
    current: JSON | None
    paused: bool
    failed: bool
    eval_id: str
    eval_priority: int
    now: int


def reconcile(
    job: JSON | None,
    job_id: str,
    allocs: list[JSON],
    deployment: JSON | None,
    eval_id: str,
    eval_priority: int,
    now: int,
) -> Result:
    """AllocReconciler.Compute for one evaluation. `job` is the current version (None once purged),
    `deployment` the job's latest one (a copy: the result may hold it changed)."""
    batch = job is not None and job.get("Type") == "batch"
    result = Result()
    old, current, updates = _cancel_unneeded(job, deployment)
    result.deployment_updates += updates
    state = _Job(job, job_id, batch, old, current, False, False, eval_id, eval_priority, now)
    matrix: dict[str, AllocSet] = {g["Name"]: {} for g in groups(job)} if job is not None else {}
    for alloc in allocs:
        matrix.setdefault(alloc["TaskGroup"], {})[alloc["ID"]] = alloc
    if stopped(job):
        for name, allocs_of_group in matrix.items():
            live = {i: a for i, a in allocs_of_group.items() if not terminal(a)}
            result.desired[name] = {**desired_updates(), "Stop": len(live)}
            result.stop += [Stop(a, NOT_NEEDED) for a in live.values()]
        return result
    assert job is not None
    if current is not None:
        state.paused = current["Status"] in ("paused", "pending", "initializing")
        state.failed = current["Status"] == "failed"
    complete = True
    for name, allocs_of_group in matrix.items():
        group_result = Result()
        complete = _compute_group(state, name, allocs_of_group, group_result) and complete
        result.merge(group_result)
    result.current = state.current
    if state.current is not None and complete:
        result.deployment_updates.append((state.current["ID"], "successful", DEPLOYMENT_DESCRIPTIONS["successful"]))
    created = result.deployment
    if created is not None and requires_promotion(created):
        key = "running-auto-promotion" if has_auto_promote(created) else "running-needs-promotion"
        created["StatusDescription"] = DEPLOYMENT_DESCRIPTIONS[key]
    return result


def _cancel_unneeded(job: JSON | None, d: JSON | None) -> tuple[JSON | None, JSON | None, list[tuple[str, str, str]]]:
    """cancelUnneededServiceDeployments: (old deployment, current deployment, status updates)."""
    if stopped(job):
        if d is not None and active(d):
            return d, None, [(d["ID"], "cancelled", DEPLOYMENT_DESCRIPTIONS["stopped-job"])]
        return d, None, []
    assert job is not None
    if d is None:
        return None, None, []
    if d["JobCreateIndex"] != job["CreateIndex"] or d["JobVersion"] != job["Version"]:
        if active(d):
            return d, None, [(d["ID"], "cancelled", DEPLOYMENT_DESCRIPTIONS["newer-job"])]
        return d, None, []
    if d["Status"] == "successful":
        return d, None, []
    return None, d, []


def _compute_group(state: _Job, name: str, all_allocs: AllocSet, result: Result) -> bool:
    """computeGroup: the changes for one task group; True when its part of the deployment is complete."""
    job = state.job
    assert job is not None
    desired = result.desired.setdefault(name, desired_updates())
    group = next((g for g in groups(job) if g["Name"] == name), None)
    # filterServerTerminalAllocs
    all_allocs = {
        i: a
        for i, a in all_allocs.items()
        if not server_terminal(a) or (a["Job"].get("Type") == "batch" and not wants_reschedule(a))
    }
    if group is None or group["Count"] == 0:
        desired["Stop"] = len(all_allocs)
        result.stop += [Stop(a, NOT_NEEDED) for a in all_allocs.values()]
        return True
    update = group.get("Update")
    existing = state.current is not None and name in state.current["TaskGroups"]
    if existing and state.current is not None:
        dstate = state.current["TaskGroups"][name]
    else:  # initializeDeploymentState
        dstate = new_deployment_state(None if update_empty(update) else update)

    if state.batch:  # filterOldTerminalAllocs
        older = {
            i: a
            for i, a in all_allocs.items()
            if (a["Job"]["Version"] < job["Version"] or a["Job"]["CreateIndex"] < job["CreateIndex"]) and terminal(a)
        }
        desired["Ignore"] += len(older)
        all_allocs = {i: a for i, a in all_allocs.items() if i not in older}

    canaries = _cancel_unneeded_canaries(state, all_allocs, desired, result)
    all_allocs = {i: a for i, a in all_allocs.items() if i not in {s.alloc["ID"] for s in result.stop}}
    untainted, reschedule_now, reschedule_later = _filter_by_reschedulable(state, all_allocs)
    if reschedule_later:
        _reschedule_later_evals(state, reschedule_later, all_allocs, name, desired, result)
    name_index = NameIndex(state.job_id, name, group["Count"], [*untainted.values(), *reschedule_now.values()])
    result.name_indexes[name] = name_index

    canarying = dstate["DesiredCanaries"] != 0 and not dstate["Promoted"]
    untainted = _compute_stop(group, name_index, untainted, canaries, canarying, desired, result)
    inplace, destructive = _compute_updates(untainted, job, group, desired, result)
    if not existing:
        dstate["DesiredTotal"] += len(destructive) + len(inplace)
    if canarying:
        untainted = {i: a for i, a in untainted.items() if i not in canaries}
    needs_canaries = (
        not update_empty(update)
        and len(destructive) != 0
        and len(canaries) < int((update or {}).get("Canary") or 0)
        and not dstate["Promoted"]
    )
    if needs_canaries:
        assert update is not None
        dstate["DesiredCanaries"] = update["Canary"]
        if not state.paused and not state.failed:
            count = update["Canary"] - len(canaries)
            desired["Canary"] += count
            for canary_name in name_index.next_canaries(count, canaries, destructive):
                result.place.append(Place(canary_name, group, canary=True))
    canarying = dstate["DesiredCanaries"] != 0 and not dstate["Promoted"]
    under = _under_provisioned_by(state, group, untainted, destructive, canarying)

    place = _compute_placements(group, name_index, untainted, reschedule_now, canarying)
    if not existing:
        dstate["DesiredTotal"] += len(place)
    place_ready = not state.paused and not state.failed and not canarying
    under = _place_allocs(state, place_ready, desired, place, reschedule_now, under, result)
    if place_ready:
        take = min(len(destructive), under)
        desired["DestructiveUpdate"] += take
        desired["Ignore"] += len(destructive) - take
        for alloc in name_order(destructive)[:take]:
            result.destructive.append(Place(alloc["Name"], group, stop=alloc, stop_description=UPDATING))
    else:
        desired["Ignore"] += len(destructive)
    _create_deployment(state, name, update, existing, dstate, all_allocs, destructive, desired["InPlaceUpdate"], result)
    if len(result.place) > group["Count"]:
        result.place = result.place[: group["Count"]]
        desired["Place"] = group["Count"]
    return _deployment_complete(
        state, name, destructive, inplace, reschedule_now, result.place, reschedule_later, needs_canaries
    )


def _cancel_unneeded_canaries(state: _Job, all_allocs: AllocSet, desired: JSON, result: Result) -> AllocSet:
    """cancelUnneededCanaries: stop non-promoted canaries of an older or failed deployment; the current
    deployment's canaries."""
    stop: list[str] = []
    for deployment in (state.old, state.current if state.current and state.current["Status"] == "failed" else None):
        if deployment is None:
            continue
        for dstate in deployment["TaskGroups"].values():
            if not dstate["Promoted"]:
                stop += dstate["PlacedCanaries"] or []
    stopping = [all_allocs[i] for i in dict.fromkeys(stop) if i in all_allocs]
    desired["Stop"] += len(stopping)
    result.stop += [Stop(a, NOT_NEEDED) for a in stopping]
    canaries: AllocSet = {}
    if state.current is not None:
        ids = {c for d in state.current["TaskGroups"].values() for c in d["PlacedCanaries"] or []}
        canaries = {i: a for i, a in all_allocs.items() if i in ids and i not in {s["ID"] for s in stopping}}
    return canaries


def _filter_by_reschedulable(state: _Job, allocs: AllocSet) -> tuple[AllocSet, AllocSet, list[tuple[JSON, int]]]:
    """filterByRescheduleable: (untainted, reschedule now, [(alloc, reschedule time)] for later)."""
    untainted: AllocSet = {}
    now_set: AllocSet = {}
    later: list[tuple[JSON, int]] = []
    for alloc in allocs.values():
        if alloc["NextAllocation"] and terminal(alloc):
            continue  # already replaced
        is_untainted, ignore = _should_filter(alloc, state.batch)
        if is_untainted:
            untainted[alloc["ID"]] = alloc
            continue
        if ignore:
            continue
        eligible_now, eligible_later, when = _update_by_reschedulable(state, alloc)
        if eligible_now:
            now_set[alloc["ID"]] = alloc
            continue
        untainted[alloc["ID"]] = alloc
        if eligible_later:
            later.append((alloc, when))
    return untainted, now_set, later


def _should_filter(alloc: JSON, batch: bool) -> tuple[bool, bool]:
    """shouldFilter: (untainted, ignore)."""
    if batch:
        if (alloc.get("DesiredTransition") or {}).get("MigrateDisablePlacement"):
            return True, False
        if wants_reschedule(alloc):
            return False, False
        if alloc["DesiredStatus"] == "stop":
            if _ran_successfully(alloc):
                return True, False
            if reschedule.last_reschedule_failed(alloc):
                return False, False
            return False, True
        if alloc["DesiredStatus"] == "evict":
            return False, True
        if alloc["ClientStatus"] == "failed":
            return False, False
        return True, False
    if alloc["DesiredStatus"] in ("stop", "evict"):
        return (False, False) if reschedule.last_reschedule_failed(alloc) else (False, True)
    if alloc["ClientStatus"] in ("complete", "lost"):
        return False, True
    return False, False


def _ran_successfully(alloc: JSON) -> bool:
    """Allocation.RanSuccessfully: every task finished without failing."""
    states = alloc.get("TaskStates") or {}
    return bool(states) and all(s["State"] == "dead" and not s["Failed"] for s in states.values())


def _update_by_reschedulable(state: _Job, alloc: JSON) -> tuple[bool, bool, int]:
    """updateByReschedulable: (now, later, reschedule time). An allocation of the active deployment waits for
    the deployment watcher's permission (DesiredTransition.Reschedule)."""
    d = state.current
    if d is not None and alloc["DeploymentID"] == d["ID"] and active(d) and not wants_reschedule(alloc):
        return False, False, 0
    now = bool((alloc.get("DesiredTransition") or {}).get("ForceReschedule")) and client_terminal(alloc)
    when, eligible = reschedule.next_reschedule_time(alloc)
    if eligible and (alloc["FollowupEvalID"] == state.eval_id or when - state.now <= RESCHEDULE_WINDOW):
        return True, False, when
    return now, eligible and not alloc["FollowupEvalID"], when


def _reschedule_later_evals(
    state: _Job, later: list[tuple[JSON, int]], all_allocs: AllocSet, group: str, desired: JSON, result: Result
) -> None:
    """createRescheduleLaterEvals + createLaterEvals: follow-up evaluations batched within 5s of each other,
    and the failed allocations marked with theirs (an attribute update, not a stop)."""
    assert state.job is not None
    later = sorted(later, key=lambda item: item[1])
    batch_start = later[0][1]
    ev = _followup_eval(state, "alloc-reschedule", batch_start, FOLLOWUP_DESCRIPTION)
    result.followup_evals.append(ev)
    for alloc, when in later:
        if when - batch_start >= BATCHED_FAILED_ALLOC_WINDOW:
            batch_start = when
            ev = _followup_eval(state, "alloc-failure", when, "")
            result.followup_evals.append(ev)
        result.attribute_updates[alloc["ID"]] = {"FollowupEvalID": ev["ID"]}
    desired["RescheduleLater"] = len(later)


def _followup_eval(state: _Job, triggered_by: str, wait_until: int, description: str) -> JSON:
    assert state.job is not None
    return new_eval(
        state.job,
        triggered_by,
        Priority=state.eval_priority,
        JobModifyIndex=state.job["ModifyIndex"],
        StatusDescription=description,
        WaitUntil=rfc3339(wait_until),
    )


def _compute_stop(
    group: JSON,
    name_index: NameIndex,
    untainted: AllocSet,
    canaries: AllocSet,
    canarying: bool,
    desired: JSON,
    result: Result,
) -> AllocSet:
    """computeStop: stop what exceeds Count (old allocations named like promoted canaries first, then the
    highest names). Returns the untainted set without them."""
    working = dict(untainted)
    if canarying:
        working = {i: a for i, a in working.items() if i not in canaries}
    remove = len(working) - group["Count"]
    stop: AllocSet = {}
    if remove > 0:
        working = {i: a for i, a in working.items() if not server_terminal(a)}
        if not canarying and canaries:
            canary_names = {a["Name"] for a in canaries.values()}
            for alloc in name_order({i: a for i, a in working.items() if i not in canaries}):
                if remove == 0:
                    break
                if alloc["Name"] in canary_names:
                    stop[alloc["ID"]] = alloc
                    del working[alloc["ID"]]
                    remove -= 1
        if remove > 0:
            names = name_index.highest(remove)
            for alloc in name_order(working):
                if remove == 0:
                    break
                if alloc["Name"] in names:
                    stop[alloc["ID"]] = alloc
                    del working[alloc["ID"]]
                    remove -= 1
        for alloc in name_order(working):  # duplicate names
            if remove <= 0:
                break
            stop[alloc["ID"]] = alloc
            remove -= 1
    desired["Stop"] += len(stop)
    result.stop += [Stop(a, NOT_NEEDED) for a in stop.values()]
    return {i: a for i, a in untainted.items() if i not in stop}


def _compute_updates(
    untainted: AllocSet, job: JSON, group: JSON, desired: JSON, result: Result
) -> tuple[AllocSet, AllocSet]:
    """computeUpdates: (in place, destructive); the rest is ignored."""
    inplace: AllocSet = {}
    destructive: AllocSet = {}
    for alloc in untainted.values():
        kind = alloc_update(alloc, job, group)
        if kind == "ignore":
            desired["Ignore"] += 1
        elif kind == "destructive":
            destructive[alloc["ID"]] = alloc
        else:
            inplace[alloc["ID"]] = alloc
    result.inplace += list(inplace.values())
    desired["InPlaceUpdate"] += len(inplace)
    return inplace, destructive


def _under_provisioned_by(state: _Job, group: JSON, untainted: AllocSet, destructive: AllocSet, canarying: bool) -> int:
    """computeUnderProvisionedBy: how many more allocations this evaluation may start (MaxParallel minus the
    deployment's allocations of undecided health; nothing while one is unhealthy)."""
    update = group.get("Update")
    if update_empty(update) or not destructive:
        return int(group["Count"])
    assert update is not None
    if state.current is None:
        return int(update["MaxParallel"])
    if state.paused or state.failed or canarying:
        return 0
    limit = int(update["MaxParallel"])
    for alloc in untainted.values():
        if alloc["DeploymentID"] != state.current["ID"]:
            continue
        if healthy(alloc) is False:
            return 0
        if healthy(alloc) is not True:
            limit -= 1
    return max(limit, 0)


def _compute_placements(
    group: JSON, name_index: NameIndex, untainted: AllocSet, reschedule_now: AllocSet, canarying: bool
) -> list[Place]:
    """computePlacements: the rescheduled allocations keep their names; then new names up to Count."""
    place = [Place(a["Name"], group, previous=a, reschedule=True, canary=is_canary(a)) for a in reschedule_now.values()]
    existing = len(untainted) + len(reschedule_now)
    if existing < group["Count"]:
        place += [Place(n, group) for n in name_index.next(group["Count"] - existing)]
    return place


def _place_allocs(
    state: _Job,
    ready: bool,
    desired: JSON,
    place: list[Place],
    reschedule_now: AllocSet,
    under: int,
    result: Result,
) -> int:
    """placeAllocs: all placements when the deployment allows them; otherwise only the replacements of failed
    allocations that are not part of a failed deployment. The failed allocations are stopped."""
    if ready:
        desired["Place"] += len(place)
        result.place += place
        result.stop += [Stop(a, RESCHEDULED) for a in reschedule_now.values()]
        desired["Stop"] += len(reschedule_now)
        return under - min(len(place), under)
    if not reschedule_now or not place:
        return under
    for p in place:
        prev = p.previous
        current = state.current
        part_of_failed = (
            state.failed and prev is not None and current is not None and current["ID"] == prev["DeploymentID"]
        )
        if not part_of_failed and p.reschedule and prev is not None:
            result.place.append(p)
            desired["Place"] += 1
            result.stop.append(Stop(prev, RESCHEDULED))
            desired["Stop"] += 1
    return under


def _create_deployment(
    state: _Job,
    name: str,
    update: JSON | None,
    existing: bool,
    dstate: JSON,
    all_allocs: AllocSet,
    destructive: AllocSet,
    inplace_updates: int,
    result: Result,
) -> None:
    """createDeployment: a new deployment when the group has an update strategy, something to deploy, and this
    version either has no allocation yet or this evaluation updates the spec."""
    assert state.job is not None
    if existing or update_empty(update) or dstate["DesiredTotal"] == 0:
        return
    updating_spec = len(destructive) != 0 or inplace_updates != 0
    had_running = any(
        a["Job"]["Version"] == state.job["Version"] and a["Job"]["CreateIndex"] == state.job["CreateIndex"]
        for a in all_allocs.values()
    )
    if had_running and not updating_spec:
        return
    if state.current is None:
        state.current = new_deployment(state.job, state.eval_priority, state.now)
        result.deployment = state.current
    state.current["TaskGroups"][name] = dstate


def _deployment_complete(
    state: _Job,
    name: str,
    destructive: AllocSet,
    inplace: AllocSet,
    reschedule_now: AllocSet,
    place: list[Place],
    reschedule_later: list[tuple[JSON, int]],
    needs_canaries: bool,
) -> bool:
    """isDeploymentComplete: nothing left to do and enough healthy allocations (and promoted, with canaries)."""
    pending = len(destructive) + len(inplace) + len(place) + len(reschedule_now) + len(reschedule_later)
    if pending or needs_canaries or state.current is None:
        return False
    dstate = state.current["TaskGroups"].get(name)
    if dstate is not None:
        if dstate["HealthyAllocs"] < max(dstate["DesiredTotal"], dstate["DesiredCanaries"]):
            return False
        if dstate["DesiredCanaries"] > 0 and not dstate["Promoted"]:
            return False
    return True
