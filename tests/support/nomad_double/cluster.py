"""The double's server side: the job endpoints' writes (register, plan, revert, scale, stable, deregister), the
evaluation broker, and the hooks through which every write reaches the scheduler (`scheduler`), the deployment
watcher (`watcher`) and the client node (`context`: each allocation run by its version's scenario or by the
local client). The rules of time (reschedule delays, progress deadlines, batching) live here once, for every
mode.
"""

from __future__ import annotations

import functools
import itertools
import sys
import threading
import traceback

from . import diff as diffs
from . import mutations, reschedule
from .clock import Clock
from .context import AllocContext, Runnable, ScenarioAborted, Version
from .errors import NomadError
from .jobspec import JSON, PortSpec, canonicalize, group_named, groups, spec_of
from .jsoncopy import clone
from .leader import Leader
from .objects import ZERO_TIME, new_eval, new_id, parse_rfc3339
from .reconciler import active
from .scheduler import Scheduler, latest_deployment, plan_updates
from .state import JobKey, State, Tx
from .validation import multierror, validate
from .watcher import Watchers

__all__ = ["Cluster", "NomadError"]

ENFORCE_PREFIX = "Enforcing job modify index"  # nomad/job_endpoint.go RegisterEnforceIndexErrPrefix
MAX_SCALING_EVENTS = 20  # nomad/structs JobTrackedScalingEvents


class Cluster:
    """Jobs, their versions, and what runs their allocations."""

    def __init__(
        self,
        default_scenario: Runnable,
        node_name: str,
        step_delay: float = 0.02,
        time_scale: float = 1.0,
        node_names: list[str] | None = None,
    ) -> None:
        self.clock = Clock(time_scale)
        self.state = State(self.clock)
        # The client nodes, (ID, name), in the order the scheduler tries them; `node` is the first.
        self.nodes = [(new_id(), name) for name in (node_names or [node_name])]
        self.node = self.nodes[0]
        self.default_scenario = default_scenario
        self.scenarios: dict[str, Runnable] = {}
        self.step_delay = step_delay  # the scheduler's latency when the runnable does not say
        self.job_max_count = 0  # the server's `job_max_count` (0: no limit)
        self.versions: dict[tuple[str, str, int], Version] = {}
        self.runs: dict[str, AllocContext] = {}  # allocation ID → its run on the client
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.closing = threading.Event()
        self._fake_ports = itertools.count(20000)
        self._queued: set[str] = set()  # evaluations handed to the leader
        self.leader = Leader(self.state, self.clock, self.errors)
        self.scheduler = Scheduler(self)
        self.watchers = Watchers(self)
        self.state.on_alloc.append(mutations.count_alloc)
        self.state.on_commit += [
            self._alloc_failure_evals,
            self._update_job_statuses,
            self._enqueue_evals,
            self.watchers.touched,
            self._client,
        ]
        self.leader.start()

    def fake_port(self, _spec: PortSpec) -> int:
        """Dynamic ports in scenario mode: unique numbers nothing listens on."""
        return next(self._fake_ports)

    def scenario_for(self, job_id: str) -> Runnable:
        return self.scenarios.get(job_id, self.default_scenario)

    def version(self, job: JSON) -> Version:
        """The registered version `job` is (its runnable), or the job's scenario for one registered behind the
        cluster's back."""
        key = (job["Namespace"], job["ID"], job["Version"])
        if key not in self.versions:
            self.versions[key] = Version(self, job, self.scenario_for(job["ID"]))
        return self.versions[key]

    def _add_version(self, tx: Tx, job: JSON, runnable: Runnable) -> None:
        tx.add_job_version(job)
        self.versions[(job["Namespace"], job["ID"], job["Version"])] = Version(self, job, runnable)

    @staticmethod
    def spec_changed(a: JSON, b: JSON) -> bool:
        """Job.SpecChanged: anything but the server's fields."""
        return spec_of(a) != spec_of(b)

    # --- register, revert, scale, stable, deregister ------------------------------------------------------

    def register(
        self,
        namespace: str,
        submitted: JSON,
        enforce: bool = False,
        enforce_index: int = 0,
        scenario: Runnable | None = None,
        preserve_counts: bool = False,
        eval_priority: int = 0,
    ) -> JSON:
        """`PUT /v1/jobs` (nomad/job_endpoint.go Register): a new job version and a `job-register` evaluation;
        an unchanged job gets only the evaluation. `preserve_counts` keeps the groups' current counts
        (state_store.go updatePreservedValues): without it a re-submit resets them to the submitted ones."""
        job = canonicalize(submitted, namespace)
        errors = validate(job, job_max_count=self.job_max_count)
        if errors:
            # Job.Register and Job.Plan (nomad/job_endpoint.go) run the validators before anything else; the
            # RPC error becomes a 500 with its text (`wrap` in command/agent/http.go).
            raise NomadError(500, multierror(errors))
        key = (namespace, job["ID"])
        with self.state.cond:
            existing = self.state.jobs.get(key)
            if enforce:
                _enforce(existing, enforce_index)
            with self.state.transaction() as tx:
                ev = new_eval(job, "job-register", Priority=eval_priority or job["Priority"])
                if existing is not None and not self.spec_changed(existing, job):
                    # Unchanged: only an evaluation; the reply's JobModifyIndex is the job's ModifyIndex.
                    ev["JobModifyIndex"] = existing["JobModifyIndex"]
                    tx.put_eval(ev)
                    job_modify_index = existing["ModifyIndex"]
                else:
                    if preserve_counts and existing is not None:
                        counts = {g["Name"]: g["Count"] for g in groups(existing)}
                        for group in groups(job):
                            group["Count"] = counts.get(group["Name"], group["Count"])
                    job.update(
                        Version=existing["Version"] + 1 if existing else 0,
                        Status="pending",
                        StatusDescription="",
                        Stable=False,
                        SubmitTime=tx.now,
                        JobModifyIndex=tx.index,
                        CreateIndex=existing["CreateIndex"] if existing else 0,
                        ModifyIndex=0,
                    )
                    self._add_version(tx, job, scenario or self.scenario_for(job["ID"]))
                    _cancel_blocked_evals(tx, key)
                    ev["JobModifyIndex"] = tx.index
                    tx.put_eval(ev)
                    job_modify_index = tx.index
            return {
                "EvalID": ev["ID"],
                "EvalCreateIndex": tx.index,
                "JobModifyIndex": job_modify_index,
                "Warnings": "",
                "Index": tx.index,
                "LastContact": 0,
                "KnownLeader": False,
                "NextToken": "",
            }

    def revert(self, namespace: str, job_id: str, version: int, enforce_prior: int | None) -> JSON:
        """`POST /v1/job/:id/revert` (nomad/job_endpoint.go Revert): register a copy of `version` with Stable
        false; with EnforcePriorVersion, only if the job is still at that version (and check-and-set)."""
        with self.state.cond:
            current = self.state.jobs.get((namespace, job_id))
            if current is None:
                raise NomadError(500, f'job "{job_id}" not found')
            if version == current["Version"]:
                raise NomadError(500, "can't revert to current version")
            target = next((v for v in self.state.job_versions[(namespace, job_id)] if v["Version"] == version), None)
            if target is None:
                raise NomadError(500, f'job "{job_id}" in namespace "{namespace}" at version {version} not found')
            if enforce_prior is not None and current["Version"] != enforce_prior:
                message = f"Current job has version {current['Version']}; enforcing version {enforce_prior}"
                raise NomadError(500, message)
            submitted = clone(spec_of(target))
            return self.register(
                namespace, submitted, enforce=enforce_prior is not None, enforce_index=current["JobModifyIndex"]
            )

    def auto_revert(self, tx: Tx, deployment: JSON, stable: JSON) -> int:
        """The deployment watcher's revert (UpdateDeploymentStatus with a job): the stable version again as a new
        version, still Stable, with its old SubmitTime; it runs what the failed version's runnable says."""
        key = (deployment["Namespace"], deployment["JobID"])
        current = tx.state.jobs[key]
        failed = self.versions.get((*key, deployment["JobVersion"]))
        runnable = failed.runnable.after_revert() if failed is not None else self.scenario_for(key[1])
        expected = getattr(failed.runnable, "rollback_to", None) if failed is not None else None
        if expected is not None and expected != stable["Version"]:
            message = f"the scenario expected a rollback to version {expected}, Nomad chose {stable['Version']}"
            self.errors.append(AssertionError(message))
        job = clone(stable)
        job.update(Version=current["Version"] + 1, JobModifyIndex=tx.index, ModifyIndex=0, Status=current["Status"])
        self._add_version(tx, job, runnable)
        version: int = job["Version"]
        return version

    def set_stable(self, namespace: str, job_id: str, version: int, stable: bool) -> JSON:
        """`PUT /v1/job/:id/stable` (nomad/job_endpoint.go Stable)."""
        with self.state.cond, self.state.transaction() as tx:
            if (namespace, job_id) not in self.state.jobs:
                raise NomadError(500, f'job "{job_id}" not found')
            if not mutations.set_job_stability(tx, (namespace, job_id), version, stable):
                raise NomadError(500, f'job "{job_id}" at version {version} not found')
            return {"JobModifyIndex": tx.index, "Index": tx.index}

    def scale(self, namespace: str, job_id: str, request: JSON) -> JSON:
        """`POST /v1/job/:id/scale` (nomad/job_endpoint.go Scale): a count makes a new job version (Stable and
        everything but Count and SubmitTime copied) and a `job-scaling` evaluation; with or without a count, a
        scaling event is recorded for the group."""
        target = request.get("Target") or {}
        if target.get("Namespace") and target["Namespace"] != namespace:
            raise NomadError(400, "namespace in payload did not match header")
        group_name = target.get("Group") or ""
        if not group_name:
            raise NomadError(400, "missing task group name for scaling action")
        count = request.get("Count")
        if count is not None:
            if count < 0:
                raise NomadError(400, "scaling action count can't be negative")
            if request.get("Error"):
                raise NomadError(400, "scaling action should not contain count if error is true")
            if count > 2**63 - 1:
                raise NomadError(400, f"new scaling count is too large for TaskGroup.Count (int): {count}")
        with self.state.cond:
            key = (namespace, job_id)
            current = self.state.jobs.get(key)
            if current is None:
                raise NomadError(404, f'job "{job_id}" not found')
            if current["Type"] == "system" and count is not None and count > 1:
                raise NomadError(400, 'jobs of type "system" can only be scaled between 0 and 1')
            job = clone(current)
            group = next((g for g in groups(job) if g["Name"] == group_name), None)
            if group is None:
                raise NomadError(400, f'task group "{group_name}" specified for scaling does not exist in job')
            previous = group["Count"]
            if count is not None:
                self._check_scale(job, group, count, request)
            response: JSON = {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": current["ModifyIndex"]}
            with self.state.transaction() as tx:
                event: JSON = {
                    "Time": tx.now,
                    "Count": count,
                    "PreviousCount": previous,
                    "Message": request.get("Message") or "",
                    "Error": bool(request.get("Error")),
                    "Meta": request.get("Meta"),
                    "EvalID": None,
                    "CreateIndex": tx.index,
                }
                if count is not None:
                    group["Count"] = count
                    job.update(
                        Version=current["Version"] + 1, SubmitTime=tx.now, JobModifyIndex=tx.index, ModifyIndex=0
                    )
                    self._add_version(tx, job, self.version(current).runnable)
                    ev = new_eval(job, "job-scaling", JobModifyIndex=tx.index)
                    tx.put_eval(ev)
                    event["EvalID"] = ev["ID"]
                    response.update(EvalID=ev["ID"], EvalCreateIndex=tx.index, JobModifyIndex=tx.index)
                events = self.state.scaling_events[(namespace, job_id, group_name)]
                events.insert(0, event)
                del events[MAX_SCALING_EVENTS:]
                self.state.table_index["scaling_event"] = tx.index
                tx.touched_jobs.add(key)
                response.update(Index=tx.index, Warnings="", LastContact=0, KnownLeader=False, NextToken="")
            return response

    def _check_scale(self, job: JSON, group: JSON, count: int, request: JSON) -> None:
        scaling = group.get("Scaling")
        if scaling is not None:
            minimum = scaling.get("Min") or 0
            maximum = scaling.get("Max") or 0
            if count < minimum:
                raise NomadError(400, f"group count was less than scaling policy minimum: {count} < {minimum}")
            if maximum < count:
                raise NomadError(400, f"group count was greater than scaling policy maximum: {count} > {maximum}")
        total = sum(g["Count"] for g in groups(job)) - group["Count"] + count
        if self.job_max_count > 0 and total > self.job_max_count:
            raise NomadError(
                500, f"total count was greater than configured job_max_count: {total} > {self.job_max_count}"
            )
        deployment = latest_deployment(self.state, job["Namespace"], job["ID"])
        if active(deployment) and deployment is not None and deployment["JobCreateIndex"] == job["CreateIndex"]:
            raise NomadError(400, "job scaling blocked due to active deployment")
        index = int(request.get("JobModifyIndex") or 0)
        if index > 0 and index != job["JobModifyIndex"]:
            raise NomadError(
                500,
                f"{ENFORCE_PREFIX} {index}: job exists with conflicting job modify index: {job['JobModifyIndex']}",
            )

    def deregister(self, namespace: str, job_id: str, purge: bool) -> JSON:
        """`DELETE /v1/job/:id` (nomad/job_endpoint.go Deregister): stop the job (a new version with Stop) or
        purge it; a missing job is no error, just an empty answer."""
        key = (namespace, job_id)
        with self.state.cond:
            existing = self.state.jobs.get(key)
            empty = {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0, "VolumeEvalID": "", "VolumeEvalIndex": 0}
            if existing is None:
                return {**empty, "Index": 0, "LastContact": 0, "KnownLeader": False, "NextToken": ""}
            with self.state.transaction() as tx:
                if purge:
                    tx.delete_job(key)
                    job = existing
                else:
                    job = clone(existing)
                    job.update(Stop=True, Version=existing["Version"] + 1, SubmitTime=tx.now, JobModifyIndex=tx.index)
                    self._add_version(tx, job, self.version(existing).runnable)
                _cancel_blocked_evals(tx, key)
                ev = new_eval(job, "job-deregister", Type="service", JobModifyIndex=tx.index)
                tx.put_eval(ev)
            return {**empty, "EvalID": ev["ID"], "EvalCreateIndex": tx.index, "JobModifyIndex": tx.index,
                    "Index": tx.index}  # fmt: skip

    def modify_job(self, namespace: str, job_id: str, meta: dict[str, str] | None) -> int:
        """A concurrent change by someone else: a new job version (no evaluation). Returns its JobModifyIndex."""
        key = (namespace, job_id)
        with self.state.cond, self.state.transaction() as tx:
            job = clone(self.state.jobs[key])
            job["Meta"] = {**(job.get("Meta") or {}), **(meta or {})}
            job.update(Version=job["Version"] + 1, Stable=False, JobModifyIndex=tx.index)
            self._add_version(tx, job, self.scenario_for(job_id))
            return tx.index

    # --- plan ---------------------------------------------------------------------------------------------

    def plan(self, namespace: str, submitted: JSON, diff: bool) -> JSON:
        """`PUT /v1/job/:id/plan` (nomad/job_endpoint.go Plan): the scheduler's answer for the job as if it were
        registered, nothing written. Index and JobModifyIndex are the existing job's JobModifyIndex (0 new)."""
        job = canonicalize(submitted, namespace)
        errors = validate(job, job_max_count=self.job_max_count)
        if errors:
            raise NomadError(500, multierror(errors))  # as `register` refuses it
        with self.state.cond:
            existing = self.state.jobs.get((namespace, job["ID"]))
            if existing is not None and not self.spec_changed(existing, job):
                planned = existing
            else:
                base = existing["JobModifyIndex"] + 1 if existing else 100
                planned = clone(job)
                planned.update(
                    Version=existing["Version"] + 1 if existing else 0,
                    CreateIndex=existing["CreateIndex"] if existing else base,
                    JobModifyIndex=base,
                    ModifyIndex=base,
                    Stable=False,
                )
            updates, failed = plan_updates(self, existing, planned)
            index = existing["JobModifyIndex"] if existing else 0
            return {
                "JobModifyIndex": index,
                "CreatedEvals": None,
                # nomad/job_endpoint.go Plan: oldJob.Diff(job, contextual=true), then scheduler.Annotate
                "Diff": diffs.annotate(diffs.job_diff(existing, job), updates) if diff else None,
                "Annotations": {"DesiredTGUpdates": updates, "PreemptedAllocs": None},
                "FailedTGAllocs": failed,
                "NextPeriodicLaunch": ZERO_TIME,
                "Warnings": "",
                "Index": index,
            }

    # --- the broker and the hooks -------------------------------------------------------------------------

    def unblock(self, namespace: str, job_id: str) -> None:
        """The job's blocked evaluations run again."""
        with self.state.cond:
            for ev in list(self.state.evals.values()):
                if (ev["Namespace"], ev["JobID"]) == (namespace, job_id) and ev["Status"] == "blocked":
                    self._queued.add(ev["ID"])
                    self.leader.soon(functools.partial(self._process, ev["ID"]))

    def _process(self, eval_id: str) -> None:
        self._queued.discard(eval_id)
        self.scheduler.process(eval_id)

    def _latency(self, ev: JSON) -> float:
        """How long (real seconds) the scheduler takes to act on `ev`: a registration's evaluation waits the
        version's `start_after` (so tests can look at the state before the plan); Nomad's own evaluations
        (failures, the deployment watcher's, delayed ones) run as soon as the leader gets to them."""
        job = self.state.jobs.get((ev["Namespace"], ev["JobID"]))
        if job is None:
            return self.step_delay
        if ev["TriggeredBy"] != "job-register":
            return 0.0
        return float(getattr(self.version(job).runnable, "start_after", self.step_delay))

    def _enqueue_evals(self, tx: Tx) -> None:
        """The eval broker: a pending evaluation runs after the scheduler's latency, a delayed one at its
        WaitUntil."""
        for eval_id in dict.fromkeys(tx.evals):
            ev = tx.state.evals[eval_id]
            if ev["Status"] != "pending" or eval_id in self._queued:
                continue
            self._queued.add(eval_id)
            due = max(parse_rfc3339(ev.get("WaitUntil")), tx.now + self.clock.nomad_ns(self._latency(ev)))
            self.leader.at(due, functools.partial(self._process, eval_id))

    def _alloc_failure_evals(self, tx: Tx) -> None:
        """nomad/node_endpoint.go UpdateAlloc: a client update that fails an allocation creates an
        `alloc-failure` evaluation when the job's reschedule policy allows another attempt now."""
        for alloc_id in dict.fromkeys(tx.failed):
            alloc = tx.state.allocs[alloc_id]
            job = tx.state.jobs.get((alloc["Namespace"], alloc["JobID"]))
            if job is None or alloc["FollowupEvalID"]:
                continue
            try:
                policy = group_named(job, alloc["TaskGroup"]).get("ReschedulePolicy")
            except KeyError:
                continue
            if reschedule.eligible(alloc.get("RescheduleTracker"), policy, tx.now):
                tx.put_eval(new_eval(job, "alloc-failure", JobModifyIndex=0))

    def _update_job_statuses(self, tx: Tx) -> None:
        """Jobs whose allocations or evaluations changed get their status recomputed. The Job event carries the
        type of the change, as every event of one raft apply does in Nomad."""
        for key in sorted(tx.touched_jobs):
            job = tx.state.jobs.get(key)
            if job is None:
                continue
            status = mutations.job_status(tx.state, key)
            if status != job["Status"]:
                job["Status"] = status
                tx.put_job(job, tx.events[0].type if tx.events else "JobRegistered")

    def _client(self, tx: Tx) -> None:
        """The client node: it runs the allocations placed on it, kills those the server stops, and learns of
        in-place updates."""
        for alloc_id in dict.fromkeys(tx.placed):
            alloc = tx.state.allocs[alloc_id]
            if alloc["DesiredStatus"] == "run" and alloc_id not in self.runs and not self.closing.is_set():
                self._start_run(alloc)
        for alloc_id in tx.stopped:
            run = self.runs.get(alloc_id)
            if run is not None:
                run.abort()
        for alloc_id in tx.updated_in_place + tx.promoted:
            run = self.runs.get(alloc_id)
            if run is not None:
                run.updated_in_place()
        for alloc_id in tx.promoted:  # the service hook registers the promoted canary's services again
            mutations.retag_nomad_services(tx, tx.state.allocs[alloc_id])
        # The client's own end of an allocation whose tasks are all dead (the double keeps a dead raw_exec
        # task's services until then): when the job is stopped or purged, or the allocation is replaced.
        # The touched jobs' allocations by the job index (AllocsByJob), not every run of the cluster at each write.
        for key in tx.touched_jobs:
            job = tx.state.jobs.get(key)
            for alloc_id, alloc in tx.state.allocs_by_job[key].items():
                run = self.runs.get(alloc_id)
                if run is None or alloc["ClientStatus"] not in ("complete", "failed"):
                    continue
                if job is None or job["Stop"] or alloc["NextAllocation"]:
                    run.abort()

    def _start_run(self, alloc: JSON) -> None:
        version = self.versions.get((alloc["Namespace"], alloc["JobID"], alloc["JobVersion"]))
        runnable = version.runnable if version is not None else self.scenario_for(alloc["JobID"])
        ctx = AllocContext(self, alloc, runnable)
        self.runs[alloc["ID"]] = ctx

        def body() -> None:
            try:
                runnable.run_alloc(ctx)
            except ScenarioAborted:
                pass
            except Exception as exc:  # a broken scenario must fail the test, not vanish in a thread
                traceback.print_exc(file=sys.stderr)
                self.errors.append(exc)

        thread = threading.Thread(target=body, name=f"alloc-{alloc['Name']}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def close(self, timeout: float) -> None:
        """Abort every allocation run and wait for the threads (client mode stops its processes there)."""
        self.closing.set()
        with self.state.cond:
            for run in self.runs.values():
                run.abort()
        self.state.close()
        self.leader.join(timeout)
        for thread in self.threads:
            thread.join(timeout)


def _enforce(existing: JSON | None, index: int) -> None:
    """EnforceIndex check-and-set, with Nomad's messages; the HTTP layer returns them as 500 (§3.9)."""
    if existing is not None:
        if index == 0:
            raise NomadError(500, f"{ENFORCE_PREFIX} 0: job already exists")
        if index != existing["JobModifyIndex"]:
            raise NomadError(
                500,
                f"{ENFORCE_PREFIX} {index}: job exists with conflicting job modify index: {existing['JobModifyIndex']}",
            )
    elif index != 0:
        raise NomadError(500, f"{ENFORCE_PREFIX} {index}: job does not exist")


def _cancel_blocked_evals(tx: Tx, key: JobKey) -> None:
    """A new version or a stop supersedes evaluations still waiting for capacity (spelled `canceled`)."""
    for ev in list(tx.state.evals_by_job[key].values()):
        if ev["Status"] == "blocked":
            ev.update(Status="canceled", StatusDescription="evaluation canceled: job updated or stopped")
            tx.put_eval(ev)
