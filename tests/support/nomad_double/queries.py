"""The read endpoints: each query returns `(index, payload)` from the state, called with the state lock held.

The index is what a blocking query waits on, chosen as Nomad does: a single object's ModifyIndex when it exists,
otherwise the index of the table the endpoint reads (so a list wakes up on any change in its table, and a return
does not guarantee a change). A payload of `NotFound` becomes a 404 once the query has stopped blocking.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from . import bexpr
from . import diff as diffs
from .errors import NomadError
from .jobspec import JSON, groups
from .jsoncopy import clone
from .mutations import alloc_terminal
from .objects import alloc_stub, eval_stub, full_alloc, full_eval
from .state import State

Result = tuple[int, Any]

JOB_STUB_FIELDS = (
    "ID", "ParentID", "Name", "Namespace", "Datacenters", "NodePool", "Multiregion", "Type", "Priority",
    "Periodic", "ParameterizedJob", "Stop", "Status", "StatusDescription", "CreateIndex", "ModifyIndex",
    "JobModifyIndex", "SubmitTime",
)  # fmt: skip
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class NotFound:
    message: str


@dataclass(frozen=True)
class Query:
    """The query string of a request, with the namespace resolved (`?namespace=`, default "default")."""

    params: dict[str, list[str]]

    def get(self, name: str, default: str = "") -> str:
        values = self.params.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return self.get(name).lower() in ("true", "1")

    def filtered(self, objects: list[JSON]) -> list[JSON]:
        """`?filter=`: the objects a go-bexpr expression selects (the stored objects, before stubbing)."""
        text = self.get("filter")
        return bexpr.select(bexpr.compile_filter(text), objects) if text else objects

    @property
    def namespace(self) -> str:
        return self.get("namespace") or "default"

    def in_namespace(self, obj: JSON) -> bool:
        return self.namespace == "*" or obj["Namespace"] == self.namespace


def parse_bool(q: Query, name: str, default: bool = False) -> bool:
    """strconv.ParseBool of a query parameter; a bad value is the agent's 500 (command/agent/http.go
    parseBool)."""
    text = q.get(name)
    if not text:
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    reason = f'strconv.ParseBool: parsing "{text}": invalid syntax'
    raise NomadError(500, f'Failed to parse value of "{name}" ({text}) as a bool: {reason}')


def _index(state: State, *tables: str) -> int:
    return max(state.table_index[t] for t in tables) or 1


def _of_job(objs: dict[str, JSON], q: Query, job_id: str) -> list[JSON]:
    found = [o for o in objs.values() if o["JobID"] == job_id and o["Namespace"] == q.namespace]
    return sorted(found, key=lambda o: o["CreateIndex"])


# --- jobs -------------------------------------------------------------------------------------------------


def list_jobs(state: State, q: Query) -> Result:
    """`/v1/jobs` (nomad/job_endpoint.go List): JobListStubs by (namespace, ID); `filter` on the full job;
    `meta=true` adds Meta when it is not empty (structs.go Job.Stub, `json:",omitempty"`)."""
    prefix = q.get("prefix")
    meta = parse_bool(q, "meta")
    jobs = [
        job
        for job in sorted(state.jobs.values(), key=lambda j: (j["Namespace"], j["ID"]))
        if q.in_namespace(job) and job["ID"].startswith(prefix)
    ]
    # Nomad keeps each job's summary in a table of its own (state_store.go updateSummaryWithAlloc) and reads it
    # per stub; the double counts it from the allocations, sorted by job once for the whole list.
    allocs_of, blocked = _by_job(state)
    stubs = []
    for job in q.filtered(jobs):
        stub = {k: job.get(k) for k in JOB_STUB_FIELDS}
        stub["JobSummary"] = _summary(state, job, allocs_of, blocked)
        if meta and job.get("Meta"):
            stub["Meta"] = job["Meta"]
        stubs.append(stub)
    return _index(state, "jobs", "allocs"), stubs


def list_allocations(state: State, q: Query) -> Result:
    """`/v1/allocations` (nomad/alloc_endpoint.go List): AllocListStubs by CreateIndex (by ID with `prefix`);
    `filter` on the full allocation, its Job included; `task_states=false`, `resources=true`."""
    prefix = q.get("prefix")
    allocs = [a for a in state.allocs.values() if q.in_namespace(a) and a["ID"].startswith(prefix)]
    allocs.sort(key=lambda a: a["ID"] if prefix else a["CreateIndex"])
    task_states = parse_bool(q, "task_states", default=True)
    resources = parse_bool(q, "resources")
    return _index(state, "allocs"), [alloc_stub(a, task_states, resources) for a in q.filtered(allocs)]


def list_deployments(state: State, q: Query) -> Result:
    """`/v1/deployments` (nomad/deployment_endpoint.go List): full deployments by CreateIndex; `filter`."""
    prefix = q.get("prefix")
    found = [d for d in state.deployments.values() if q.in_namespace(d) and d["ID"].startswith(prefix)]
    found.sort(key=lambda d: d["ID"] if prefix else d["CreateIndex"])
    return _index(state, "deployment"), q.filtered(found)


def list_evaluations(state: State, q: Query) -> Result:
    """`/v1/evaluations` (command/agent/eval_endpoint.go evalsListRequest, nomad/eval_endpoint.go List): full
    evaluations (not stubs) by CreateIndex (by ID with `prefix`); `job` and `status` are the legacy filters,
    refused beside `filter` with structs.ErrIncompatibleFiltering (nomad/structs/errors.go; an RPC error without a
    code, so a 500); the index is the evals table's."""
    prefix, job, status = q.get("prefix"), q.get("job"), q.get("status")
    if q.get("filter") and (job or status):
        raise NomadError(500, "Filter expression cannot be used with other filter parameters")
    found = [
        e
        for e in state.evals.values()
        if q.in_namespace(e)
        and e["ID"].startswith(prefix)
        and (not job or e["JobID"] == job)
        and (not status or e["Status"] == status)
    ]
    found.sort(key=lambda e: e["ID"] if prefix else e["CreateIndex"])
    return _index(state, "evals"), [full_eval(e) for e in q.filtered(found)]


def read_job(state: State, q: Query, job_id: str) -> Result:
    job = state.jobs.get((q.namespace, job_id))
    if job is None:
        return _index(state, "jobs"), NotFound("job not found")
    return job["ModifyIndex"], job


def job_allocations(state: State, q: Query, job_id: str) -> Result:
    allocs = _of_job(state.allocs, q, job_id)
    job = state.jobs.get((q.namespace, job_id))
    if job is not None and not q.flag("all"):
        # Without ?all=true, allocations of an earlier job that had the same ID (purged) are left out.
        allocs = [a for a in allocs if a["Job"]["CreateIndex"] == job["CreateIndex"]]
    task_states = parse_bool(q, "task_states", default=True)
    return _index(state, "allocs"), [alloc_stub(a, task_states, parse_bool(q, "resources")) for a in allocs]


def job_versions(state: State, q: Query, job_id: str) -> Result:
    """`/v1/job/:id/versions` (nomad/job_endpoint.go GetJobVersions): every kept version, newest first; with
    `diffs=true` the diff of each from the one before it (or from `diff_version`)."""
    wants_diffs = parse_bool(q, "diffs")
    versions = list(reversed(state.job_versions.get((q.namespace, job_id), [])))
    if not versions:
        return _index(state, "job_version", "jobs"), NotFound("job versions not found")
    against = q.get("diff_version")
    found: list[JSON] | None = None
    if against:
        base = next((v for v in versions if str(v["Version"]) == against), None)
        if base is None:
            raise NomadError(500, f"version {against} not found")
        found = [diffs.job_diff(base, v) for v in versions]
    elif wants_diffs:
        found = [diffs.job_diff(versions[i + 1], versions[i]) for i in range(len(versions) - 1)]
    index = max(v["ModifyIndex"] for v in versions)
    body = {"Versions": versions, "Diffs": found, "Index": index}
    body.update(LastContact=0, KnownLeader=True, NextToken="")
    return index, body


def job_scale_status(state: State, q: Query, job_id: str) -> Result:
    """`GET /v1/job/:id/scale` (nomad/job_endpoint.go ScaleStatus): each group's count, its non-terminal
    non-canary allocations, and its scaling events (newest first, null when never scaled)."""
    job = state.jobs.get((q.namespace, job_id))
    if job is None:
        return state.index, NotFound("job not found")
    groups_status: JSON = {}
    for group in groups(job):
        events = state.scaling_events.get((job["Namespace"], job["ID"], group["Name"]))
        groups_status[group["Name"]] = {
            "Desired": group["Count"],
            "Placed": 0,
            "Running": 0,
            "Healthy": 0,
            "Unhealthy": 0,
            "Events": clone(events) if events else None,
        }
    index = job["ModifyIndex"]
    for alloc in _of_job(state.allocs, q, job_id):
        status = alloc.get("DeploymentStatus") or {}
        if status.get("Canary") or alloc_terminal(alloc) or alloc["TaskGroup"] not in groups_status:
            continue
        counts = groups_status[alloc["TaskGroup"]]
        counts["Placed"] += 1
        counts["Running"] += alloc["ClientStatus"] == "running"
        counts["Healthy"] += status.get("Healthy") is True
        counts["Unhealthy"] += status.get("Healthy") is False
        index = max(index, alloc["ModifyIndex"])
    index = max(index, state.table_index["scaling_event"])
    return index, {
        "JobID": job["ID"],
        "Namespace": job["Namespace"],
        "JobCreateIndex": job["CreateIndex"],
        "JobModifyIndex": job["ModifyIndex"],
        "JobStopped": job["Stop"],
        "TaskGroups": groups_status,
    }


def job_evaluations(state: State, q: Query, job_id: str) -> Result:
    return _index(state, "evals"), [full_eval(e) for e in _of_job(state.evals, q, job_id)]


def job_deployments(state: State, q: Query, job_id: str) -> Result:
    deployments = _of_job(state.deployments, q, job_id)
    job = state.jobs.get((q.namespace, job_id))
    if job is not None and not q.flag("all"):
        # Without ?all=true, deployments of an earlier job that had the same ID (purged) are left out
        # (nomad/state/state_store.go DeploymentsByJobID).
        deployments = [d for d in deployments if d["JobCreateIndex"] == job["CreateIndex"]]
    return _index(state, "deployment"), list(reversed(deployments))


def job_latest_deployment(state: State, q: Query, job_id: str) -> Result:
    """The newest deployment, or null (before the first one, and for batch jobs; kept after a purge)."""
    deployments = _of_job(state.deployments, q, job_id)
    return _index(state, "deployment"), deployments[-1] if deployments else None


def job_summary(state: State, q: Query, job_id: str) -> Result:
    job = state.jobs.get((q.namespace, job_id))
    if job is None:
        return _index(state, "jobs"), NotFound("job not found")
    return _index(state, "jobs", "allocs"), _summary(state, job, *_by_job(state))


def _by_job(state: State) -> tuple[dict[tuple[str, str], list[JSON]], set[tuple[str, str]]]:
    """The allocations by (namespace, job ID), and the jobs with a blocked evaluation."""
    allocs_of: dict[tuple[str, str], list[JSON]] = defaultdict(list)
    for a in state.allocs.values():
        allocs_of[(a["Namespace"], a["JobID"])].append(a)
    blocked = {(e["Namespace"], e["JobID"]) for e in state.evals.values() if e["Status"] == "blocked"}
    return allocs_of, blocked


def _summary(
    state: State, job: JSON, allocs_of: dict[tuple[str, str], list[JSON]], blocked_jobs: set[tuple[str, str]]
) -> JSON:
    """structs.JobSummary: the counts of the job's allocations by client status (Failed and Complete never go
    down, as state_store.go updateSummaryWithAlloc keeps them); a purged job's allocations are not counted."""
    key = (job["Namespace"], job["ID"])
    allocs = [a for a in allocs_of.get(key, []) if a["Job"]["CreateIndex"] == job["CreateIndex"]]
    blocked = key in blocked_jobs
    summary: JSON = {}
    for group in groups(job):
        mine = [a for a in allocs if a["TaskGroup"] == group["Name"]]
        summary[group["Name"]] = _group_summary(mine, group["Count"], blocked)
    return {
        "JobID": job["ID"],
        "Namespace": job["Namespace"],
        "Summary": summary,
        "Children": {"Pending": 0, "Running": 0, "Dead": 0},
        "CreateIndex": job["CreateIndex"],
        "ModifyIndex": max([job["ModifyIndex"], *(a["ModifyIndex"] for a in allocs)]),
    }


def _group_summary(allocs: list[JSON], count: int, blocked: bool) -> JSON:
    """structs.TaskGroupSummary of one group's allocations, counted in one pass: a terminal allocation counts as
    complete, failed, lost or unknown as its client says; a live one as running or starting (pending)."""
    counts = {"Complete": 0, "Failed": 0, "Running": 0, "Starting": 0, "Lost": 0, "Unknown": 0}
    live = 0
    for a in allocs:
        status = a["ClientStatus"]
        terminal = alloc_terminal(a)
        live += not terminal
        if status in _ANY_ALLOC:
            counts[_ANY_ALLOC[status]] += 1
        elif not terminal and status in _LIVE_ALLOC:
            counts[_LIVE_ALLOC[status]] += 1
    return {"Queued": max(0, count - live) if blocked else 0, **counts}


_ANY_ALLOC = {"complete": "Complete", "failed": "Failed", "lost": "Lost", "unknown": "Unknown"}  # terminal or not
_LIVE_ALLOC = {"running": "Running", "pending": "Starting"}  # counted only while the allocation is live


def job_services(state: State, q: Query, job_id: str) -> Result:
    return _index(state, "service_registrations"), _of_job(state.services, q, job_id)


# --- evaluations, allocations, deployments ----------------------------------------------------------------


def evaluation(state: State, q: Query, eval_id: str) -> Result:
    ev = state.evals.get(eval_id)
    if ev is None:
        return _index(state, "evals"), NotFound("eval not found")
    out = full_eval(ev)
    if q.flag("related"):
        out["RelatedEvals"] = [eval_stub(e) for e in _related(state, ev)]
    return ev["ModifyIndex"], out


def _related(state: State, start: JSON) -> list[JSON]:
    """Every evaluation linked to `start` through NextEval / PreviousEval / BlockedEval, in either direction."""
    links = ("NextEval", "PreviousEval", "BlockedEval")
    seen = {start["ID"]}
    queue = deque([start])
    while queue:
        ev = queue.popleft()
        neighbours = {ev[k] for k in links if ev[k]}
        neighbours |= {e["ID"] for e in state.evals.values() if ev["ID"] in (e[k] for k in links)}
        for other in sorted(neighbours - seen):
            if other in state.evals:
                seen.add(other)
                queue.append(state.evals[other])
    return sorted((state.evals[i] for i in seen - {start["ID"]}), key=lambda e: e["CreateIndex"])


def evaluation_allocations(state: State, q: Query, eval_id: str) -> Result:
    allocs = sorted((a for a in state.allocs.values() if a["EvalID"] == eval_id), key=lambda a: a["CreateIndex"])
    return _index(state, "allocs"), [alloc_stub(a) for a in allocs]


def allocation(state: State, q: Query, alloc_id: str) -> Result:
    alloc = state.allocs.get(alloc_id)
    if alloc is None:
        return _index(state, "allocs"), NotFound("alloc not found")
    return alloc["ModifyIndex"], full_alloc(alloc)


def allocation_services(state: State, q: Query, alloc_id: str) -> Result:
    found = sorted((s for s in state.services.values() if s["AllocID"] == alloc_id), key=lambda s: s["ID"])
    return _index(state, "service_registrations"), found


def allocation_checks(state: State, q: Query, alloc_id: str) -> Result:
    if alloc_id not in state.allocs:
        return _index(state, "allocs"), NotFound(f'Unknown allocation "{alloc_id}"')
    return _index(state, "checks", "allocs"), clone(state.checks.get(alloc_id, {}))


def deployment(state: State, q: Query, deployment_id: str) -> Result:
    found = state.deployments.get(deployment_id)
    if found is None:
        return _index(state, "deployment"), NotFound("deployment not found")
    return found["ModifyIndex"], found


def deployment_allocations(state: State, q: Query, deployment_id: str) -> Result:
    allocs = sorted(
        (a for a in state.allocs.values() if a["DeploymentID"] == deployment_id), key=lambda a: a["CreateIndex"]
    )
    return _index(state, "allocs"), [alloc_stub(a) for a in allocs]


# --- services (nomad provider) ----------------------------------------------------------------------------


def list_services(state: State, q: Query) -> Result:
    by_namespace: dict[str, dict[str, set[str]]] = {}
    for reg in state.services.values():
        if q.in_namespace(reg):
            tags = by_namespace.setdefault(reg["Namespace"], {}).setdefault(reg["ServiceName"], set())
            tags.update(reg["Tags"] or [])
    payload = [
        {"Namespace": ns, "Services": [{"ServiceName": n, "Tags": sorted(t)} for n, t in sorted(names.items())]}
        for ns, names in sorted(by_namespace.items())
    ]
    return _index(state, "service_registrations"), payload


def service(state: State, q: Query, name: str) -> Result:
    found = sorted(
        (s for s in state.services.values() if s["ServiceName"] == name and q.in_namespace(s)), key=lambda s: s["ID"]
    )
    return _index(state, "service_registrations"), found
