"""The read endpoints: each query returns `(index, payload)` from the state, called with the state lock held.

The index is what a blocking query waits on, chosen as Nomad does: a single object's ModifyIndex when it exists,
otherwise the index of the table the endpoint reads (so a list wakes up on any change in its table, and a return
does not guarantee a change). A payload of `NotFound` becomes a 404 once the query has stopped blocking.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from typing import Any

from .jobspec import JSON, groups
from .mutations import alloc_terminal
from .objects import alloc_stub, eval_stub, full_alloc, full_eval
from .state import State

Result = tuple[int, Any]

JOB_STUB_FIELDS = (
    "ID", "ParentID", "Name", "Namespace", "Datacenters", "NodePool", "Multiregion", "Type", "Priority",
    "Periodic", "ParameterizedJob", "Stop", "Status", "StatusDescription", "CreateIndex", "ModifyIndex",
    "JobModifyIndex", "SubmitTime",
)  # fmt: skip


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

    @property
    def namespace(self) -> str:
        return self.get("namespace") or "default"

    def in_namespace(self, obj: JSON) -> bool:
        return self.namespace == "*" or obj["Namespace"] == self.namespace


def _index(state: State, *tables: str) -> int:
    return max(state.table_index[t] for t in tables) or 1


def _of_job(objs: dict[str, JSON], q: Query, job_id: str) -> list[JSON]:
    found = [o for o in objs.values() if o["JobID"] == job_id and o["Namespace"] == q.namespace]
    return sorted(found, key=lambda o: o["CreateIndex"])


# --- jobs -------------------------------------------------------------------------------------------------


def list_jobs(state: State, q: Query) -> Result:
    prefix = q.get("prefix")
    stubs = []
    for job in sorted(state.jobs.values(), key=lambda j: (j["Namespace"], j["ID"])):
        if not q.in_namespace(job) or not job["ID"].startswith(prefix):
            continue
        stub = {k: job.get(k) for k in JOB_STUB_FIELDS}
        stub["JobSummary"] = _summary(state, job)
        if q.flag("meta"):
            stub["Meta"] = job.get("Meta")
        stubs.append(stub)
    return _index(state, "jobs", "allocs"), stubs


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
    return _index(state, "allocs"), [alloc_stub(a) for a in allocs]


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
    return _index(state, "jobs", "allocs"), _summary(state, job)


def _summary(state: State, job: JSON) -> JSON:
    allocs = [a for a in state.allocs.values() if (a["Namespace"], a["JobID"]) == (job["Namespace"], job["ID"])]
    blocked = any(
        e["Status"] == "blocked" and (e["Namespace"], e["JobID"]) == (job["Namespace"], job["ID"])
        for e in state.evals.values()
    )
    summary: JSON = {}
    for group in groups(job):
        mine = [a for a in allocs if a["TaskGroup"] == group["Name"]]
        live = [a for a in mine if not alloc_terminal(a)]
        summary[group["Name"]] = {
            "Queued": max(0, group["Count"] - len(live)) if blocked else 0,
            "Complete": sum(a["ClientStatus"] == "complete" for a in mine),
            "Failed": sum(a["ClientStatus"] == "failed" for a in mine),
            "Running": sum(a["ClientStatus"] == "running" for a in live),
            "Starting": sum(a["ClientStatus"] == "pending" for a in live),
            "Lost": sum(a["ClientStatus"] == "lost" for a in mine),
            "Unknown": sum(a["ClientStatus"] == "unknown" for a in mine),
        }
    return {
        "JobID": job["ID"],
        "Namespace": job["Namespace"],
        "Summary": summary,
        "Children": {"Pending": 0, "Running": 0, "Dead": 0},
        "CreateIndex": job["CreateIndex"],
        "ModifyIndex": max([job["ModifyIndex"], *(a["ModifyIndex"] for a in allocs)]),
    }


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
    return _index(state, "checks", "allocs"), copy.deepcopy(state.checks.get(alloc_id, {}))


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
