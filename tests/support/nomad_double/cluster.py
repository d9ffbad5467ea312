"""The double's server side: job register / plan / deregister semantics, and the runs that act as scheduler,
client and deployment watcher for each registered job version.
"""

from __future__ import annotations

import copy
import itertools
import sys
import threading
import traceback
from collections.abc import Callable

from . import diff as diffs
from . import mutations
from .context import Runnable, ScenarioAborted, ScenarioContext
from .jobspec import JSON, PortSpec, canonicalize, groups, spec_of
from .objects import ZERO_TIME, new_eval, new_id, now_ns
from .state import JobKey, State, Tx
from .validation import multierror, validate

ENFORCE_PREFIX = "Enforcing job modify index"  # nomad/job_endpoint.go RegisterEnforceIndexErrPrefix


class NomadError(Exception):
    """An API error: the HTTP status and Nomad's plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Cluster:
    """Jobs and their runs. Every registered job version gets a run of its scenario in a background thread."""

    def __init__(self, default_scenario: Runnable, node_name: str, step_delay: float = 0.02) -> None:
        self.state = State()
        self.node = (new_id(), node_name)
        self.default_scenario = default_scenario
        self.scenarios: dict[str, Runnable] = {}
        self.step_delay = step_delay  # delay of background scheduler work (unchanged-job eval, job stop)
        self.job_max_count = 0  # the server's `job_max_count` (0: no limit)
        self.runs: dict[JobKey, ScenarioContext] = {}
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.closing = threading.Event()
        self._fake_ports = itertools.count(20000)
        self.state.on_commit.append(self._update_job_statuses)

    def fake_port(self, _spec: PortSpec) -> int:
        """Dynamic ports in scenario mode: unique numbers nothing listens on."""
        return next(self._fake_ports)

    def scenario_for(self, job_id: str) -> Runnable:
        return self.scenarios.get(job_id, self.default_scenario)

    # --- writes -------------------------------------------------------------------------------------------

    def register(
        self,
        namespace: str,
        submitted: JSON,
        enforce: bool = False,
        enforce_index: int = 0,
        scenario: Runnable | None = None,
    ) -> JSON:
        """`PUT /v1/jobs`: store a new job version (or, for an unchanged job, only a new evaluation)."""
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
                if existing is not None and spec_of(existing) == spec_of(job):
                    # Unchanged: a new evaluation, no new version, no new deployment (nomad-api.md §3.9).
                    ev = new_eval(existing, "job-register")
                    tx.put_eval(ev)
                    self._later(lambda: self._finish_noop_eval(ev["ID"], existing))
                    job_modify_index = existing["JobModifyIndex"]
                else:
                    job.update(
                        Version=existing["Version"] + 1 if existing else 0,
                        Status="pending",
                        StatusDescription="",
                        Stable=False,
                        SubmitTime=now_ns(),
                        JobModifyIndex=tx.index,
                        CreateIndex=existing["CreateIndex"] if existing else 0,
                        ModifyIndex=0,
                    )
                    tx.add_job_version(job)
                    _cancel_blocked_evals(tx, key)
                    ev = new_eval(job, "job-register", JobModifyIndex=tx.index)
                    tx.put_eval(ev)
                    self._start(job, ev["ID"], scenario or self.scenario_for(job["ID"]))
                    job_modify_index = tx.index
            return {
                "EvalID": ev["ID"],
                "EvalCreateIndex": tx.index,
                "JobModifyIndex": job_modify_index,
                "Warnings": "",
                "Index": tx.index,
                "LastContact": 0,
                "KnownLeader": False,
            }

    def revert(self, key: JobKey, version: int, scenario: Runnable) -> None:
        """Auto-revert: register the spec of `version` again, as a new version that runs `scenario`."""
        with self.state.cond:
            old = next(v for v in self.state.job_versions[key] if v["Version"] == version)
            self.register(key[0], spec_of(copy.deepcopy(old)), scenario=scenario)

    def deregister(self, namespace: str, job_id: str, purge: bool) -> JSON:
        """`DELETE /v1/job/:id`: stop the job (a new version with Stop=true) or purge it."""
        key = (namespace, job_id)
        with self.state.cond:
            existing = self.state.jobs.get(key)
            if existing is None:
                raise NomadError(404, "job not found")
            with self.state.transaction() as tx:
                if purge:
                    tx.delete_job(key)
                    job = existing
                else:
                    job = copy.deepcopy(existing)
                    job.update(Stop=True, Version=existing["Version"] + 1, Stable=False, JobModifyIndex=tx.index)
                    tx.add_job_version(job)
                _cancel_blocked_evals(tx, key)
                ev = new_eval(job, "job-deregister", JobModifyIndex=tx.index)
                tx.put_eval(ev)
                run = self.runs.pop(key, None)
                if run is not None:
                    run.stop.set()
            self._later(lambda: self._finish_stop(key, ev["ID"]))
            return {"EvalID": ev["ID"], "EvalCreateIndex": tx.index, "JobModifyIndex": tx.index, "Index": tx.index}

    def modify_job(self, namespace: str, job_id: str, meta: dict[str, str] | None) -> int:
        """A concurrent change by someone else: a new job version (no evaluation). Returns its JobModifyIndex."""
        key = (namespace, job_id)
        with self.state.cond, self.state.transaction() as tx:
            job = copy.deepcopy(self.state.jobs[key])
            job["Meta"] = {**(job.get("Meta") or {}), **(meta or {})}
            job.update(Version=job["Version"] + 1, Stable=False, JobModifyIndex=tx.index)
            tx.add_job_version(job)
            return tx.index

    # --- plan ---------------------------------------------------------------------------------------------

    def plan(self, namespace: str, submitted: JSON, diff: bool) -> JSON:
        """`PUT /v1/job/:id/plan`: what a register would do, without doing it."""
        job = canonicalize(submitted, namespace)
        errors = validate(job, job_max_count=self.job_max_count)
        if errors:
            raise NomadError(500, multierror(errors))  # as `register` refuses it
        key = (namespace, job["ID"])
        with self.state.cond:
            existing = self.state.jobs.get(key)
            live = [
                a
                for a in self.state.allocs.values()
                if (a["Namespace"], a["JobID"]) == key and not mutations.alloc_terminal(a)
            ]
            old_groups = {g["Name"]: g for g in groups(existing)} if existing and not existing["Stop"] else {}
            updates: dict[str, JSON] = {}
            for group in groups(job):
                name, count = group["Name"], group["Count"]
                running = sum(1 for a in live if a["TaskGroup"] == name)
                old = old_groups.get(name)
                same = old is not None and _without_count(old) == _without_count(group)
                kept = min(running, count)
                updates[name] = _desired(
                    Ignore=kept if same else 0,
                    Place=max(0, count - running),
                    Stop=max(0, running - count),
                    DestructiveUpdate=0 if same else kept,
                )
            for name in old_groups.keys() - {g["Name"] for g in groups(job)}:
                updates[name] = _desired(Stop=sum(1 for a in live if a["TaskGroup"] == name))
            return {
                "JobModifyIndex": existing["JobModifyIndex"] if existing else 0,
                "CreatedEvals": None,
                # nomad/job_endpoint.go Plan: oldJob.Diff(job, contextual=true), then scheduler.Annotate
                "Diff": diffs.annotate(diffs.job_diff(existing, job), updates) if diff else None,
                "Annotations": {"DesiredTGUpdates": updates, "PreemptedAllocs": None},
                "FailedTGAllocs": self.scenario_for(job["ID"]).plan_failures(job),
                "NextPeriodicLaunch": ZERO_TIME,
                "Warnings": "",
                "Index": self.state.index,
            }

    # --- background work ----------------------------------------------------------------------------------

    def _start(self, job: JSON, eval_id: str, scenario: Runnable) -> None:
        key = (job["Namespace"], job["ID"])
        previous = self.runs.get(key)
        if previous is not None:
            previous.stop.set()
        ctx = ScenarioContext(self, job, eval_id)
        self.runs[key] = ctx
        self._thread(f"run-{job['ID']}-v{job['Version']}", lambda: self._run(scenario, ctx))

    def _run(self, scenario: Runnable, ctx: ScenarioContext) -> None:
        try:
            scenario.run(ctx)
        except ScenarioAborted:
            pass
        except Exception as exc:  # a broken scenario must fail the test, not vanish in a thread
            traceback.print_exc(file=sys.stderr)
            self.errors.append(exc)

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _later(self, work: Callable[[], None]) -> None:
        """Scheduler work that happens shortly after a request, as Nomad's workers do."""

        def body() -> None:
            if not self.closing.wait(self.step_delay):
                self._run_unaborted(work)

        self._thread("scheduler", body)

    def _run_unaborted(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.errors.append(exc)

    def _finish_noop_eval(self, eval_id: str, job: JSON) -> None:
        with self.state.transaction() as tx:
            ev = tx.state.evals[eval_id]
            current = [
                d
                for d in tx.state.deployments.values()
                if (d["Namespace"], d["JobID"]) == (job["Namespace"], job["ID"]) and d["JobVersion"] == job["Version"]
            ]
            ev.update(Status="complete", DeploymentID=current[-1]["ID"] if current else "", SnapshotIndex=tx.index - 1)
            tx.put_eval(ev)

    def _finish_stop(self, key: JobKey, eval_id: str) -> None:
        with self.state.transaction() as tx:
            for alloc in list(tx.state.allocs.values()):
                if (alloc["Namespace"], alloc["JobID"]) == key and not mutations.alloc_terminal(alloc):
                    mutations.stop_alloc(tx, alloc, "alloc not needed since job is stopped")
            mutations.cancel_deployments(tx, key, "Cancelled because job is stopped")
            ev = tx.state.evals[eval_id]
            ev.update(Status="complete", SnapshotIndex=tx.index - 1)
            tx.put_eval(ev)

    def _update_job_statuses(self, tx: Tx) -> None:
        """After every change: jobs whose allocations or evaluations changed get their status recomputed. The
        Job event carries the type of the change, as every event of one raft apply does in Nomad."""
        for key in sorted(tx.touched_jobs):
            job = tx.state.jobs.get(key)
            if job is None:
                continue
            status = mutations.job_status(tx.state, key)
            if status != job["Status"]:
                job["Status"] = status
                tx.put_job(job, tx.events[0].type if tx.events else "JobRegistered")

    def close(self, timeout: float) -> None:
        """Abort every run and wait for the threads (client mode stops its processes there)."""
        self.closing.set()
        with self.state.cond:
            for ctx in self.runs.values():
                ctx.stop.set()
        self.state.close()
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
    for ev in list(tx.state.evals.values()):
        if (ev["Namespace"], ev["JobID"]) == key and ev["Status"] == "blocked":
            ev.update(Status="canceled", StatusDescription="evaluation canceled: job updated or stopped")
            tx.put_eval(ev)


def _without_count(group: JSON) -> JSON:
    return {k: v for k, v in group.items() if k != "Count"}


def _desired(**counts: int) -> JSON:
    """api.DesiredUpdates with every counter."""
    fields = ("Ignore", "Place", "Migrate", "Stop", "InPlaceUpdate", "DestructiveUpdate", "Canary", "Preemptions")
    extra = ("Reconnect", "RescheduleNow", "RescheduleLater", "Disconnect")
    return {f: counts.get(f, 0) for f in (*fields, *extra)}
