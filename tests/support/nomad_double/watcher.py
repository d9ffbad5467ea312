"""The deployment watcher: one watch per active deployment, as Nomad's leader runs them
(nomad/deploymentwatcher/deployment_watcher.go). It reacts to the deployment's allocations (fail early when an
unhealthy allocation cannot be replaced, let replacements happen, push the rollout with an evaluation,
auto-promote canaries), fails the deployment at its progress deadline, auto-reverts to the latest stable job
version, and serves the promote / fail / pause / allocation-health endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import mutations, reschedule
from .errors import NomadError
from .jobspec import JSON, group_named
from .jsoncopy import clone
from .objects import new_eval, parse_rfc3339, rfc3339
from .reconciler import (
    DEPLOYMENT_DESCRIPTIONS,
    active,
    healthy,
    requires_promotion,
    terminal,
    wants_reschedule,
)
from .state import Tx
from .validation import multierror

if TYPE_CHECKING:
    from .cluster import Cluster

EVAL_BATCH_PERIOD = 10**9  # perJobEvalBatchPeriod: 1s


def rollback_description(description: str, version: int) -> str:
    """DeploymentStatusDescriptionRollback."""
    return f"{description} - rolling back to job version {version}"


def rollback_noop_description(description: str, version: int) -> str:
    """DeploymentStatusDescriptionRollbackNoop."""
    return f"{description} - not rolling back to stable job version {version} as current job has same specification"


def no_rollback_target_description(description: str) -> str:
    """DeploymentStatusDescriptionNoRollbackTarget."""
    return f"{description} - no stable job version to auto revert to"


@dataclass
class _Watch:
    """One deploymentWatcher's memory."""

    job: JSON  # the job as it was when the watch started (w.j)
    alloc_index: int = -1  # the allocations' index last handled (its blocking query)
    deadline: int = 0  # the progress cutoff the timer is set for (0: none)
    deadline_hit: bool = False
    outstanding: dict[str, bool] = field(default_factory=dict)  # allocations allowed to be replaced
    batch_pending: bool = False


@dataclass
class _AllocResult:
    create_eval: bool = False
    fail: bool = False
    rollback: bool = False
    allow: list[str] = field(default_factory=list)


class Watchers:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.watches: dict[str, _Watch] = {}
        self._dirty: set[str] = set()

    # --- triggers ---------------------------------------------------------------------------------------------

    def touched(self, tx: Tx) -> None:
        """Commit hook: deployments whose allocations or status changed get looked at right after the write."""
        fresh = tx.touched_deployments - self._dirty
        if fresh:
            if not self._dirty:
                self.cluster.leader.soon(self._check)
            self._dirty |= fresh

    def _check(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for deployment_id in sorted(dirty):
            self._watch(deployment_id)

    # --- the watch loop ---------------------------------------------------------------------------------------

    def _watch(self, deployment_id: str) -> None:
        state = self.cluster.state
        deployment = state.deployments.get(deployment_id)
        if deployment is None or not active(deployment):
            self.watches.pop(deployment_id, None)  # StopWatch
            return
        key = (deployment["Namespace"], deployment["JobID"])
        if deployment_id not in self.watches:
            job = state.jobs.get(key)
            if job is None:
                return
            self.watches[deployment_id] = _Watch(clone(job))
        watch = self.watches[deployment_id]
        allocs = self._allocs(deployment_id)
        index = max((a["ModifyIndex"] for a in allocs), default=state.table_index["allocs"])
        if index != watch.alloc_index:
            watch.alloc_index = index
            result = self._handle_alloc_update(watch, deployment, allocs)
            if result.fail:
                self._fail(watch, deployment, result.rollback)
                return
            self._auto_promote(deployment, allocs)
            if result.create_eval or result.allow:
                self._batched_update(watch, deployment_id, result.allow)
        cutoff = self._progress_cutoff(deployment, allocs)
        if cutoff != watch.deadline:
            watch.deadline = cutoff
            if cutoff:
                self.cluster.leader.at(cutoff, lambda: self._deadline(deployment_id, cutoff))

    def _allocs(self, deployment_id: str) -> list[JSON]:
        allocs = self.cluster.state.allocs_by_deployment[deployment_id].values()
        return sorted(allocs, key=lambda a: a["CreateIndex"])

    def _handle_alloc_update(self, watch: _Watch, deployment: JSON, allocs: list[JSON]) -> _AllocResult:
        """handleAllocUpdate: fail on an unhealthy allocation that cannot be replaced; queue the others for a
        replacement; ask for an evaluation when an allocation turned healthy since the last one."""
        result = _AllocResult()
        latest_eval = self._latest_eval_index(deployment)
        for alloc in allocs:
            dstate = deployment["TaskGroups"].get(alloc["TaskGroup"])
            if dstate is None:
                continue
            fail = self._should_fail_early(watch, deployment, alloc, dstate)
            if healthy(alloc) is False and not fail and active(deployment) and not wants_reschedule(alloc):
                result.allow.append(alloc["ID"])
                continue
            if healthy(alloc) is True and (alloc["DeploymentStatus"].get("ModifyIndex") or 0) > latest_eval:
                result.create_eval = True
            if fail:
                result.rollback = result.rollback or dstate["AutoRevert"]
                result.fail = True
        return result

    def _should_fail_early(self, watch: _Watch, deployment: JSON, alloc: JSON, dstate: JSON) -> bool:
        """shouldFailEarly: an unhealthy allocation fails the deployment at once without a progress deadline,
        or when its group's reschedule policy allows no further attempt."""
        if healthy(alloc) is not False:
            return False
        if not dstate["ProgressDeadline"]:
            return True
        if active(deployment):
            try:
                policy = group_named(watch.job, alloc["TaskGroup"]).get("ReschedulePolicy")
            except KeyError:
                policy = None
            tracker = alloc.get("RescheduleTracker")
            return not reschedule.eligible(tracker, policy, self.cluster.clock.now())
        return False

    def _latest_eval_index(self, deployment: JSON) -> int:
        """jobEvalStatus: the newest index the scheduler has seen for the job (snapshot, else create index)."""
        key = (deployment["Namespace"], deployment["JobID"])
        found = 0
        for ev in self.cluster.state.evals_by_job[key].values():
            if ev["Status"] == "canceled":
                continue
            found = max(found, ev["SnapshotIndex"] or ev["CreateIndex"])
        return found

    def _batched_update(self, watch: _Watch, deployment_id: str, allow: list[str]) -> None:
        """createBatchedUpdate: one write 1s later gives the queued allocations DesiredTransition.Reschedule and
        creates a `deployment-watcher` evaluation."""
        watch.outstanding.update(dict.fromkeys(allow, True))
        if watch.batch_pending:
            return
        watch.batch_pending = True
        due = self.cluster.clock.now() + EVAL_BATCH_PERIOD
        self.cluster.leader.at(due, lambda: self._create_update(deployment_id))

    def _create_update(self, deployment_id: str) -> None:
        watch = self.watches.get(deployment_id)
        if watch is None:
            return  # the watch ended (the deployment is done): nothing to push
        allow, watch.outstanding, watch.batch_pending = list(watch.outstanding), {}, False
        state = self.cluster.state
        deployment = state.deployments[deployment_id]
        with state.transaction() as tx:
            for alloc_id in allow:
                alloc = state.allocs[alloc_id]
                alloc["DesiredTransition"] = {**alloc["DesiredTransition"], "Reschedule": True}
                tx.put_alloc(alloc, "AllocationUpdateDesiredStatus")
            tx.put_eval(self._eval(watch, deployment))

    def _eval(self, watch: _Watch, deployment: JSON) -> JSON:
        """getEval: a `deployment-watcher` evaluation at the deployment's priority."""
        return new_eval(
            watch.job,
            "deployment-watcher",
            Priority=deployment["EvalPriority"] or watch.job.get("Priority", 50),
            DeploymentID=deployment["ID"],
            JobModifyIndex=0,
        )

    def _auto_promote(self, deployment: JSON, allocs: list[JSON]) -> None:
        """autoPromoteDeployment: promote every group when each group with canaries auto-promotes and has
        exactly its desired number of healthy canaries."""
        if not any(d["PlacedCanaries"] for d in deployment["TaskGroups"].values()):
            return
        if not requires_promotion(deployment):
            return
        for dstate in deployment["TaskGroups"].values():
            if dstate["DesiredCanaries"] < 1:
                continue
            placed = dstate["PlacedCanaries"] or []
            if not dstate["AutoPromote"] or len(placed) < dstate["DesiredCanaries"]:
                return
            healthy_canaries = sum(1 for a in allocs if a["ID"] in placed and healthy(a) is True)
            if healthy_canaries != dstate["DesiredCanaries"]:
                return
        self.promote(deployment["ID"], all_groups=True, groups=[])

    def _progress_cutoff(self, deployment: JSON, allocs: list[JSON]) -> int:
        """getDeploymentProgressCutoff: the earliest RequireProgressBy of the groups not done yet."""
        healthy_now: dict[str, int] = {}
        for alloc in allocs:
            if not terminal(alloc) and healthy(alloc) is True:
                healthy_now[alloc["TaskGroup"]] = healthy_now.get(alloc["TaskGroup"], 0) + 1
        cutoff = 0
        for name, dstate in deployment["TaskGroups"].items():
            waiting = dstate["DesiredCanaries"] != 0 and not dstate["Promoted"]
            if not waiting and healthy_now.get(name, 0) >= dstate["DesiredTotal"]:
                continue  # doneGroups
            by = parse_rfc3339(dstate["RequireProgressBy"])
            if by and (cutoff == 0 or by < cutoff):
                cutoff = by
        return cutoff

    def _deadline(self, deployment_id: str, due: int) -> None:
        """The progress deadline timer: fail unless every group has made its progress (a paused deployment, or
        healthy canaries waiting for promotion, never fail here)."""
        watch = self.watches.get(deployment_id)
        deployment = self.cluster.state.deployments.get(deployment_id)
        if watch is None or deployment is None or watch.deadline != due or not active(deployment):
            return
        watch.deadline_hit = True
        fail, rollback = self._should_fail(watch, deployment)
        if fail:
            self._fail(watch, deployment, rollback)

    def _should_fail(self, watch: _Watch, deployment: JSON) -> tuple[bool, bool]:
        """shouldFail: a group without enough healthy allocations (canaries, before promotion) fails; rollback
        when such a group auto-reverts."""
        if deployment["Status"] == "paused":
            return False, False
        fail = False
        for name, dstate in deployment["TaskGroups"].items():
            if dstate["DesiredCanaries"] > 0 and not dstate["Promoted"]:
                if dstate["HealthyAllocs"] >= dstate["DesiredCanaries"]:
                    continue
            elif dstate["HealthyAllocs"] >= dstate["DesiredTotal"]:
                continue
            fail = True
            try:
                update = group_named(watch.job, name).get("Update") or {}
            except KeyError:
                update = {}
            if update.get("AutoRevert"):
                return True, True
        return fail, False

    # --- failing and reverting ----------------------------------------------------------------------------

    def _fail(self, watch: _Watch, deployment: JSON, rollback: bool) -> None:
        """The end of the watch loop on failure: `Failed due to unhealthy allocations` (or `progress deadline`
        once the deadline fired), with the rollback suffix, the failure, an evaluation and the revert in one
        write (nomad/state/state_store.go UpdateDeploymentStatus)."""
        base = DEPLOYMENT_DESCRIPTIONS["progress-deadline" if watch.deadline_hit else "failed-allocations"]
        description, revert_to = self._rollback(watch, deployment, base, rollback, no_target_suffix=True)
        self._write_failure(watch, deployment, description, revert_to)
        self.watches.pop(deployment["ID"], None)

    def _rollback(
        self, watch: _Watch, deployment: JSON, description: str, rollback: bool, no_target_suffix: bool
    ) -> tuple[str, JSON | None]:
        """latestStableJob + handleRollbackValidity: revert to the newest stable version, unless its spec is
        the job's own (then say so and do not revert)."""
        if not rollback:
            return description, None
        key = (deployment["Namespace"], deployment["JobID"])
        stable = next((v for v in reversed(self.cluster.state.job_versions.get(key, [])) if v["Stable"]), None)
        if stable is None:
            return (no_rollback_target_description(description) if no_target_suffix else description), None
        if self.cluster.spec_changed(watch.job, stable):
            return rollback_description(description, stable["Version"]), stable
        return rollback_noop_description(description, stable["Version"]), None

    def _write_failure(self, watch: _Watch, deployment: JSON, description: str, revert_to: JSON | None) -> JSON:
        state = self.cluster.state
        reverted = None
        with state.transaction() as tx:
            mutations.set_deployment_status(tx, deployment["ID"], "failed", description)
            if revert_to is not None:
                reverted = self.cluster.auto_revert(tx, deployment, revert_to)
            ev = self._eval(watch, deployment)
            tx.put_eval(ev)
            return _update_response(ev["ID"], tx.index, reverted)

    # --- the endpoints ----------------------------------------------------------------------------------------

    def _watched(self, deployment_id: str, verb: str) -> tuple[_Watch, JSON]:
        state = self.cluster.state
        deployment = state.deployments.get(deployment_id)
        if deployment is None:
            raise NomadError(500, "deployment not found")
        if not active(deployment):
            raise NomadError(500, f"can't {verb} terminal deployment")
        watch = self.watches.get(deployment_id)
        if watch is None:
            job = state.jobs.get((deployment["Namespace"], deployment["JobID"]))
            watch = self.watches[deployment_id] = _Watch(clone(job or {}))
        return watch, deployment

    def promote(self, deployment_id: str, all_groups: bool, groups: list[str]) -> JSON:
        """Deployment.Promote → UpdateDeploymentPromotion (nomad/state/state_store.go): every group in scope
        with canaries needs as many healthy canaries as it desires; then they are promoted, their canaries lose
        the canary flag, RequireProgressBy starts again, and an evaluation places the rest."""
        watch, deployment = self._watched(deployment_id, "promote")
        state = self.cluster.state
        canaries = {c for d in deployment["TaskGroups"].values() for c in d["PlacedCanaries"] or []}
        in_scope = set(deployment["TaskGroups"]) if all_groups else set(groups)
        promotable = [
            a
            for a in self._allocs(deployment_id)
            if a["ID"] in canaries and a["TaskGroup"] in in_scope and not terminal(a) and healthy(a) is True
        ]
        errors = []
        for name, dstate in deployment["TaskGroups"].items():
            need = dstate["DesiredCanaries"]
            if name not in in_scope or need == 0:
                continue
            have = sum(1 for a in promotable if a["TaskGroup"] == name)
            if have < need:
                errors.append(f"Task group {_go_quote(name)} has {have}/{need} healthy allocations")
        if errors:
            raise NomadError(500, multierror(errors))
        with state.transaction() as tx:
            for name, dstate in deployment["TaskGroups"].items():
                if name not in in_scope:
                    continue
                if dstate["ProgressDeadline"] and parse_rfc3339(dstate["RequireProgressBy"]):
                    dstate["RequireProgressBy"] = rfc3339(tx.now + int(dstate["ProgressDeadline"]))
                dstate["Promoted"] = True
            if not requires_promotion(deployment) and deployment["Status"] == "running":
                deployment["StatusDescription"] = DEPLOYMENT_DESCRIPTIONS["running"]
            tx.put_deployment(deployment, "DeploymentPromotion")
            ev = self._eval(watch, deployment)
            tx.put_eval(ev)
            for alloc in promotable:
                stored = state.allocs[alloc["ID"]]
                stored["DeploymentStatus"] = {**stored["DeploymentStatus"], "Canary": False, "ModifyIndex": tx.index}
                tx.put_alloc(stored, "DeploymentPromotion")
                tx.promoted.append(stored["ID"])
            return _update_response(ev["ID"], tx.index, None)

    def fail(self, deployment_id: str) -> JSON:
        """Deployment.Fail → FailDeployment: `Deployment marked as failed`, reverting when any group
        auto-reverts."""
        watch, deployment = self._watched(deployment_id, "fail")
        rollback = any(d["AutoRevert"] for d in deployment["TaskGroups"].values())
        description, revert_to = self._rollback(
            watch, deployment, DEPLOYMENT_DESCRIPTIONS["failed-by-user"], rollback, no_target_suffix=True
        )
        response = self._write_failure(watch, deployment, description, revert_to)
        self.watches.pop(deployment_id, None)
        return response

    def pause(self, deployment_id: str, pause: bool) -> JSON:
        """Deployment.Pause → PauseDeployment: paused without an evaluation; resumed with one."""
        watch, deployment = self._watched(deployment_id, "pause" if pause else "resume")
        state = self.cluster.state
        with state.transaction() as tx:
            status = "paused" if pause else "running"
            mutations.set_deployment_status(tx, deployment_id, status, DEPLOYMENT_DESCRIPTIONS[status])
            ev = None
            if not pause:
                ev = self._eval(watch, deployment)
                tx.put_eval(ev)
            response = _update_response(ev["ID"] if ev else "", tx.index if ev else 0, None)
            response["DeploymentModifyIndex"] = response["Index"] = tx.index
            return response

    def set_alloc_health(self, deployment_id: str, healthy_ids: list[str], unhealthy_ids: list[str]) -> JSON:
        """Deployment.SetAllocHealth → setAllocHealth: the allocations' health as given; an unhealthy one fails
        the deployment (`Failed due to unhealthy allocations`, with a rollback when its group auto-reverts and a
        stable version exists: this path adds no `no stable job` suffix)."""
        watch, deployment = self._watched(deployment_id, "set health of allocations for a")
        state = self.cluster.state
        description, revert_to = DEPLOYMENT_DESCRIPTIONS["failed-allocations"], None
        for alloc in self._allocs(deployment_id):
            if alloc["ID"] in unhealthy_ids and deployment["TaskGroups"].get(alloc["TaskGroup"], {}).get("AutoRevert"):
                description, revert_to = self._rollback(watch, deployment, description, True, no_target_suffix=False)
                break
        reverted = None
        with state.transaction() as tx:
            for ids, value in ((healthy_ids, True), (unhealthy_ids, False)):
                for alloc_id in ids:
                    if alloc_id in state.allocs and state.allocs[alloc_id]["DeploymentID"] == deployment_id:
                        mutations.set_alloc_health(tx, alloc_id, value)
            if unhealthy_ids:
                mutations.set_deployment_status(tx, deployment_id, "failed", description)
                if revert_to is not None:
                    reverted = self.cluster.auto_revert(tx, deployment, revert_to)
            ev = self._eval(watch, deployment)
            tx.put_eval(ev)
            return _update_response(ev["ID"], tx.index, reverted)


def _update_response(eval_id: str, index: int, reverted: int | None) -> JSON:
    """structs.DeploymentUpdateResponse as the HTTP API returns it."""
    return {
        "EvalID": eval_id,
        "EvalCreateIndex": index,
        "DeploymentModifyIndex": index,
        "RevertedJobVersion": reverted,
        "Index": index,
    }


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
