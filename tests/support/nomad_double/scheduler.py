"""The scheduler: one evaluation of a service or batch job, as Nomad's generic scheduler runs it
(scheduler/generic_sched.go process, computeJobAllocs, computePlacements) and as its plan is applied
(nomad/state/state_store.go UpsertPlanResults): the reconciler's result written in one transaction, with the
evaluation's own status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import mutations, reschedule
from .jobspec import JSON, groups, ports
from .jsoncopy import clone
from .objects import ZERO_TIME, alloc_metric, new_alloc, new_eval, parse_rfc3339
from .reconciler import Place, Result, active, reconcile
from .state import State, Tx

if TYPE_CHECKING:
    from .cluster import Cluster

BLOCKED_DESCRIPTION = "created to place remaining allocations"  # scheduler/structs DescBlockedEvalFailedPlacements
DISTINCT_HOSTS = "distinct_hosts"  # nomad/structs ConstraintDistinctHosts: also the metric's filter name


@dataclass
class Placements:
    """What computePlacements did: the allocations it made and the groups it could not place."""

    placed: list[JSON] = field(default_factory=list)
    failed: dict[str, JSON] = field(default_factory=dict)  # group → AllocMetric
    queued: dict[str, int] = field(default_factory=dict)
    unstop: set[str] = field(default_factory=set)  # stops taken back (their replacement found no node)


def job_allocs(state: State, namespace: str, job_id: str) -> list[JSON]:
    """AllocsByJob with anyCreateIndex: every allocation of the job ID, oldest first."""
    return sorted(state.allocs_by_job[(namespace, job_id)].values(), key=lambda a: a["CreateIndex"])


def latest_deployment(state: State, namespace: str, job_id: str) -> JSON | None:
    """LatestDeploymentByJobID: the job's deployment with the highest CreateIndex."""
    found = state.deployments_by_job[(namespace, job_id)].values()
    return max(found, key=lambda d: d["CreateIndex"], default=None)


def _distinct_hosts(constraints: list[JSON] | None) -> bool:
    """scheduler/feasible/feasible.go hasDistinctHostsConstraint: an empty RTarget means true, an unparsable one
    enforces it too."""
    for constraint in constraints or []:
        if constraint.get("Operand") == DISTINCT_HOSTS:
            target = str(constraint.get("RTarget") or "").lower()
            return target not in ("false", "0", "f")
    return False


def choose_node(nodes: list[tuple[str, str]], job: JSON, group: JSON, proposed: list[JSON]) -> tuple[str, str] | None:
    """The node a placement of `group` goes to, or None when the feasibility checks filter out every node.

    Only distinct_hosts is checked (scheduler/feasible/feasible.go DistinctHostsIterator.satisfiesDistinctHosts):
    with the job's constraint no other allocation of the job may be on the node, with the group's none of the
    same group. `proposed` are the allocations the plan would leave running (EvalContext.ProposedAllocs: the
    node's allocations that are not client-terminal and not stopped by this plan, plus this plan's
    placements). The first feasible node in order wins (the double does not rank nodes)."""
    job_wide = _distinct_hosts(job.get("Constraints"))
    group_wide = _distinct_hosts(group.get("Constraints"))
    for node in nodes:
        taken = False
        for alloc in proposed:
            if alloc["NodeID"] != node[0]:
                continue
            job_collision = (alloc["JobID"], alloc["Namespace"]) == (job["ID"], job["Namespace"])
            if (job_wide and job_collision) or (group_wide and job_collision and alloc["TaskGroup"] == group["Name"]):
                taken = True
                break
        if not taken:
            return node
    return None


def distinct_hosts_metric(nodes: int) -> JSON:
    """The AllocMetric of a placement every node of which distinct_hosts filtered out (Metrics().FilterNode)."""
    return alloc_metric(
        NodesEvaluated=nodes,
        NodesFiltered=nodes,
        NodesInPool=nodes,
        NodesAvailable={"dc1": nodes},
        ConstraintFiltered={DISTINCT_HOSTS: nodes},
    )


def _proposed(state: State, job: JSON, stopped: set[str], placed: list[JSON]) -> list[JSON]:
    """The proposed allocations `choose_node` checks: only the job's own can collide under distinct_hosts, so
    they are read from the job index (AllocsByJob), not from every allocation of the cluster at each placement."""
    allocs = state.allocs_by_job[(job["Namespace"], job["ID"])].values()
    running = [a for a in allocs if a["ClientStatus"] not in ("complete", "failed", "lost") and a["ID"] not in stopped]
    return [*running, *placed]


class Scheduler:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def process(self, eval_id: str) -> None:
        """Run one pending (or unblocked) evaluation. Call with the state lock held."""
        state = self.cluster.state
        ev = state.evals.get(eval_id)
        if ev is None or ev["Status"] not in ("pending", "blocked"):
            return
        job = state.jobs.get((ev["Namespace"], ev["JobID"]))
        allocs = job_allocs(state, ev["Namespace"], ev["JobID"])
        latest = clone(latest_deployment(state, ev["Namespace"], ev["JobID"]))
        with state.transaction() as tx:
            snapshot = tx.index - 1
            result = reconcile(clone(job), ev["JobID"], allocs, latest, ev["ID"], ev["Priority"], tx.now)
            self._apply(tx, ev, job, result, latest, snapshot)

    # --- applying the plan ----------------------------------------------------------------------------------

    def _apply(self, tx: Tx, ev: JSON, job: JSON | None, result: Result, latest: JSON | None, snapshot: int) -> None:
        state = tx.state
        deployment = result.deployment or latest  # the scheduler's s.deployment
        if result.deployment is not None:
            tx.put_deployment(result.deployment, "PlanResult")
        for deployment_id, status, description in result.deployment_updates:
            if active(state.deployments.get(deployment_id)):
                mutations.set_deployment_status(tx, deployment_id, status, description)
        placements = Placements()
        if job is not None and (result.place or result.destructive):
            placements = self._place(tx, ev, job, result, deployment)
        elif job is not None:
            placements.queued = {g["Name"]: 0 for g in groups(job)}
        for stop in result.stop:
            alloc = state.allocs[stop.alloc["ID"]]
            if alloc["ID"] in placements.unstop or alloc["DesiredStatus"] == "stop":
                continue
            if stop.followup_eval:
                alloc["FollowupEvalID"] = stop.followup_eval
            mutations.stop_alloc(tx, alloc, stop.description, stop.client_status)
        for alloc_id, fields in result.attribute_updates.items():
            alloc = state.allocs[alloc_id]
            alloc.update(fields)
            tx.put_alloc(alloc, "PlanResult")
        for updated in result.inplace:
            self._in_place(tx, ev, job, updated, deployment)
        for new in placements.placed:
            tx.put_alloc(new, "PlanResult")
            previous = state.allocs.get(new["PreviousAllocation"]) if new["PreviousAllocation"] else None
            if previous is not None:  # upsertAllocsImpl links the replaced allocation to its replacement
                previous["NextAllocation"] = new["ID"]
                tx.put_alloc(previous, "PlanResult")
        followups = result.followup_evals if ev.get("WaitUntil") is None else []
        for followup in followups:
            followup["PreviousEval"] = ev["ID"]
            ev["NextEval"] = followup["ID"]
            tx.put_eval(followup)
        blocked = None
        now_past_wait = not followups or tx.now > parse_rfc3339(ev.get("WaitUntil"))
        if job is not None and placements.failed and ev["Status"] != "blocked" and now_past_wait:
            blocked = new_eval(  # Evaluation.CreateBlockedEval
                job,
                "queued-allocs",
                status="blocked",
                Priority=ev["Priority"],
                Type=ev["Type"],
                JobModifyIndex=ev["JobModifyIndex"],
                PreviousEval=ev["ID"],
                FailedTGAllocs=placements.failed,
                StatusDescription=BLOCKED_DESCRIPTION,
            )
            tx.put_eval(blocked)
        if ev["Status"] == "blocked" and placements.failed:
            ev.update(FailedTGAllocs=placements.failed)  # ReblockEval: it waits for capacity again
            tx.put_eval(ev)
            return
        ev.update(
            Status="complete",
            DeploymentID=deployment["ID"] if deployment else "",
            FailedTGAllocs=placements.failed or None,
            QueuedAllocations=placements.queued,
            SnapshotIndex=snapshot,
        )
        if blocked is not None:
            ev["BlockedEval"] = blocked["ID"]
        tx.put_eval(ev)

    def _in_place(self, tx: Tx, ev: JSON, job: JSON | None, updated: JSON, deployment: JSON | None) -> None:
        """An in-place update: same allocation, new job version, this evaluation; moved into the current
        deployment with its health cleared (computeJobAllocs)."""
        assert job is not None
        alloc = tx.state.allocs[updated["ID"]]
        alloc.update(Job=clone(job), JobVersion=job["Version"], EvalID=ev["ID"])
        deployment_id = deployment["ID"] if deployment else ""
        if alloc["DeploymentID"] != deployment_id:
            alloc["DeploymentID"] = deployment_id
            alloc["DeploymentStatus"] = None
        tx.updated_in_place.append(alloc["ID"])
        tx.put_alloc(alloc, "PlanResult")

    def _place(self, tx: Tx, ev: JSON, job: JSON, result: Result, deployment: JSON | None) -> Placements:
        """computePlacements: destructive updates first, then placements; a group the node cannot take fails
        every placement of it (CoalescedFailures counts the rest)."""
        out = Placements()
        version = self.cluster.version(job)
        failures = version.runnable.placement_failures(version)
        deployment_id = deployment["ID"] if deployment is not None and active(deployment) else ""
        stopping = {s.alloc["ID"] for s in result.stop} | {p.stop["ID"] for p in result.destructive if p.stop}
        for place in [*result.destructive, *result.place]:
            group = place.group["Name"]
            out.queued[group] = out.queued.get(group, 0) + 1
            if group in out.failed:
                out.failed[group]["CoalescedFailures"] += 1
                self._undo(tx, place, out)
                continue
            if failures is not None and group in failures:
                out.failed[group] = {**failures[group], "CoalescedFailures": 0}
                self._undo(tx, place, out)
                continue
            node = choose_node(self.cluster.nodes, job, place.group, _proposed(tx.state, job, stopping, out.placed))
            if node is None:
                out.failed[group] = {**distinct_hosts_metric(len(self.cluster.nodes)), "CoalescedFailures": 0}
                self._undo(tx, place, out)
                continue
            out.queued[group] -= 1
            if place.stop is not None:  # the destructive update's stop, made with the placement
                mutations.stop_alloc(tx, tx.state.allocs[place.stop["ID"]], place.stop_description)
            out.placed.append(self._new_alloc(tx, ev, job, place, deployment_id, result, version.runnable, node))
        return out

    def _undo(self, tx: Tx, place: Place, out: Placements) -> None:
        """No node for it: a destructive update keeps its old allocation; a rescheduled one stays failed and is
        marked `no placement` (markFailedToReschedule), so the blocked evaluation retries it."""
        if place.reschedule and place.previous is not None:
            previous = tx.state.allocs[place.previous["ID"]]
            out.unstop.add(previous["ID"])
            tracker = previous.get("RescheduleTracker") or {"Events": None}
            previous["RescheduleTracker"] = {**tracker, "LastReschedule": reschedule.LAST_RESCHEDULE_NO_PLACEMENT}
            tx.put_alloc(previous, "PlanResult")

    def _new_alloc(
        self,
        tx: Tx,
        ev: JSON,
        job: JSON,
        place: Place,
        deployment_id: str,
        result: Result,
        runnable: object,
        node: tuple[str, str],
    ) -> JSON:
        group = next(g for g in groups(job) if g["Name"] == place.group["Name"])
        name = place.name
        names = result.name_indexes.get(group["Name"])
        index = int(name[name.rindex("[") + 1 : -1])
        if names is not None and names.is_duplicate(index):  # a name used twice gets the next free one
            name = names.next(1)[0]
            names.unset(index)
        port_of = getattr(runnable, "port", None)
        values = {}
        for spec in ports(group):
            chosen = port_of(spec) if port_of is not None else None
            values[spec.label] = spec.static or chosen or self.cluster.fake_port(spec)
        alloc = new_alloc(job, group, name, ev["ID"], deployment_id, node, values)
        alloc["Metrics"] = alloc_metric()
        previous = place.previous if place.previous is not None else place.stop
        if previous is not None:
            alloc["PreviousAllocation"] = previous["ID"]
            if place.reschedule:
                stored = tx.state.allocs[previous["ID"]]
                alloc["RescheduleTracker"] = reschedule.replacement_tracker(stored, tx.now)
                tracker = stored.get("RescheduleTracker") or {"Events": None}
                stored["RescheduleTracker"] = {**tracker, "LastReschedule": reschedule.LAST_RESCHEDULE_OK}
        if place.canary and deployment_id:
            alloc["DeploymentStatus"] = {"Healthy": None, "Timestamp": ZERO_TIME, "Canary": True, "ModifyIndex": 0}
        return alloc


def plan_updates(cluster: Cluster, existing: JSON | None, job: JSON) -> tuple[JSON, JSON | None]:
    """What `Job.Plan` reports (nomad/job_endpoint.go Plan): the reconciler run on a snapshot where the
    submitted job is registered (with the next JobModifyIndex when its spec changed), nothing written.
    Returns (DesiredTGUpdates, FailedTGAllocs)."""
    state = cluster.state
    allocs = job_allocs(state, job["Namespace"], job["ID"])
    latest = clone(latest_deployment(state, job["Namespace"], job["ID"]))
    result = reconcile(job, job["ID"], allocs, latest, "plan", job.get("Priority", 50), cluster.clock.now())
    failed: JSON = {}
    failures = cluster.scenario_for(job["ID"]).plan_failures(job)
    stopping = {s.alloc["ID"] for s in result.stop} | {p.stop["ID"] for p in result.destructive if p.stop}
    placed: list[JSON] = []
    for place in [*result.destructive, *result.place]:
        group = place.group["Name"]
        if group in failed:
            failed[group]["CoalescedFailures"] += 1
        elif failures is not None and group in failures:
            failed[group] = {**failures[group], "CoalescedFailures": 0}
        elif (node := choose_node(cluster.nodes, job, place.group, _proposed(state, job, stopping, placed))) is None:
            failed[group] = {**distinct_hosts_metric(len(cluster.nodes)), "CoalescedFailures": 0}
        else:
            placed.append({"NodeID": node[0], "JobID": job["ID"], "Namespace": job["Namespace"], "TaskGroup": group})
    return result.desired, failed or None
