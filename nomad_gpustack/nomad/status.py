"""What runs: the models nomadgs deployed, found by job ID or model name, with replicas and endpoints.

What `nomadgs status` shows and the Ansible `model_info` module returns. Reads only; never changes anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..contract.metadata import META_MANAGED, model_labels, model_name, scale_to_zero
from ..contract.ranks import worker_of
from ..contract.request import GroupRequest
from ..errors import InputError, Problem, suggestion
from .client import NomadAPI
from .responses import Allocation, Deployment, Evaluation, JobStub
from .rollout import Assessment, Replica, Snapshot, assess
from .runner import is_managed
from .watcher import running_endpoints


def managed_jobs(api: NomadAPI) -> list[JobStub]:
    """The jobs of the namespace that nomadgs created."""
    return [j for j in api.jobs() if is_managed(j)]


def find_job(api: NomadAPI, name: str) -> JobStub:
    """A job by ID, or a nomadgs job by its model name (case-insensitive); InputError with a hint otherwise."""
    job = api.job(name)
    if job is not None:
        return job
    managed = managed_jobs(api)
    for candidate in managed:
        if (model_name(candidate.Meta) or "").lower() == name.lower():
            found = api.job(candidate.ID)
            if found is not None:
                return found
    names = [j.ID for j in managed] + [model_name(j.Meta) or "" for j in managed]
    raise InputError(Problem(f"no job or model named '{name}'", hint=suggestion(name, names) or "see `nomadgs status`"))


@dataclass(frozen=True)
class ModelStatus:
    """One deployed model: its job, latest deployment, replicas in GPUStack's states, and endpoints.

    `status` is one word for the whole: running, deploying, failed, pending, idle (replicas: 0; "idle (scaled
    to zero)" for a job the gateway scales to zero and back), stopped or dead. A job nomadgs did not create
    (`managed` false, found by its ID) has no model, backend or version.
    """

    job: str
    model: str | None
    backend: str
    backend_version: str
    job_version: int
    job_status: str
    deployment: Deployment | None
    desired: int
    replicas: tuple[Replica, ...]
    endpoints: tuple[str, ...]
    status: str = ""
    managed: bool = True
    ranks: tuple[str, ...] = ()  # a distributed replica's worker ranks that are not running, in words

    @property
    def healthy(self) -> int:
        return sum(1 for r in self.replicas if r.state == "running")

    def to_json(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "job": self.job,
            "model": self.model,
            "backend": self.backend,
            "backend_version": self.backend_version,
            "job_version": self.job_version,
            "job_status": self.job_status,
            "status": self.status,
            "managed": self.managed,
            "deployment": {"id": d.ID, "status": d.Status, "description": d.StatusDescription} if d else None,
            "healthy": self.healthy,
            "desired": self.desired,
            "replicas": [
                {"index": r.index, "state": r.state, "detail": r.detail, "node": r.node} for r in self.replicas
            ],
            "endpoints": list(self.endpoints),
            "ranks": list(self.ranks),
        }


async def model_status(api: NomadAPI, job: JobStub) -> ModelStatus:
    """One job's deployment, replicas and endpoints, read without blocking."""
    async with api.async_client() as http:
        (allocs, _), (deployment, _) = await asyncio.gather(
            api.allocations(http, job.ID), api.latest_deployment(http, job.ID)
        )
        group = job.TaskGroups[0] if job.TaskGroups else {}
        request = GroupRequest(group=group.get("Name", ""), count=int(group.get("Count", 0) or 0))
        assessment = _assess(job, job.Version, request, deployment, allocs)
        endpoints = await running_endpoints(api, http, assessment) if not job.Stop else []
    found = _model_status(job, job.Version, request, deployment, assessment, endpoints)
    return found if job.Stop else dataclasses.replace(found, ranks=rank_troubles(allocs))


def rank_troubles(allocs: Sequence[Allocation]) -> tuple[str, ...]:
    """What stops a distributed replica: each worker rank whose allocation is lost or failed, or whose engine
    exited, in words (ARCHITECTURE.md, "Distributed replicas": the leader's engine fails without it, and Nomad
    restarts it once the rank is back). The latest allocation of each rank's group counts."""
    latest: dict[str, Allocation] = {}
    for alloc in sorted(allocs, key=lambda a: a.CreateIndex):
        if worker_of(alloc.TaskGroup) is not None and alloc.DesiredStatus == "run":
            latest[alloc.TaskGroup] = alloc
    out = []
    for group, alloc in sorted(latest.items(), key=lambda item: worker_of(item[0]) or (0, 0)):
        replica, rank = worker_of(group) or (0, 0)
        what = _rank_trouble(alloc)
        if what:
            node = f" on node {alloc.NodeName}" if alloc.NodeName else ""
            out.append(
                f"replica {replica}: worker rank {rank}{node} {what}; the engine cannot continue without it; "
                "Nomad restarts the replica once the rank is back"
            )
    return tuple(out)


def _rank_trouble(alloc: Allocation) -> str:
    if alloc.ClientStatus in ("lost", "failed"):
        return alloc.ClientStatus  # Nomad places a replacement for the same rank (same group)
    for task in alloc.TaskStates.values():
        ends = [e for e in task.Events if e.Type in ("Started", "Terminated")]
        if task.State != "running" and ends and ends[-1].Type == "Terminated":
            return f"stopped (exit code {ends[-1].ExitCode})"
    return ""


def _assess(
    job: JobStub, version: int, request: GroupRequest, deployment: Deployment | None, allocs: Sequence[Allocation]
) -> Assessment:
    snapshot = Snapshot(job.ID, version, _SETTLED, None, deployment, tuple(allocs))
    return assess(snapshot, request)


# The evaluation `status` assesses every job with (it reads none): one, read only, not one model built per job.
_SETTLED = Evaluation(ID="", Status="complete")


def _model_status(
    job: JobStub,
    version: int,
    request: GroupRequest,
    deployment: Deployment | None,
    assessment: Assessment,
    endpoints: Sequence[str],
) -> ModelStatus:
    managed = is_managed(job)
    labels = model_labels(job.Name, (), job.Meta)
    return ModelStatus(
        job=job.ID,
        model=labels.model if managed else None,  # a foreign job's name is not a model name
        backend=(labels.backend or "") if managed else "",
        backend_version=(labels.version or "") if managed else "",
        job_version=version,
        job_status="stopped" if job.Stop else job.Status,
        deployment=deployment,
        desired=request.count,
        replicas=() if job.Stop else assessment.replicas,
        endpoints=tuple(endpoints),
        status=status_word(job, assessment, request.count),
        managed=managed,
    )


def status_word(job: JobStub, assessment: Assessment, desired: int) -> str:
    """One word for where a job stands (the STATUS column of `nomadgs status`)."""
    if job.Stop:
        return "stopped"
    if assessment.phase == "succeeded":
        if desired:
            return "running"
        # A job the gateway scales to zero and back: at 0 it is asleep, and a request wakes it.
        return IDLE_SCALED if scale_to_zero(job.Meta) else "idle"
    if assessment.phase in ("failed", "placement-failed"):
        return "failed"
    if job.Status in ("pending", "dead"):
        return job.Status
    return "deploying"


IDLE_SCALED = "idle (scaled to zero)"
MANAGED_FILTER = f'Meta.{META_MANAGED} == "true"'  # on /v1/jobs; on /v1/allocations through the allocation's Job
JOB_READS = 8  # jobs read one by one at once, when the lists do not tell their version and count


async def all_model_statuses(api: NomadAPI) -> list[ModelStatus]:
    """Every model nomadgs deployed in the namespace, in a constant number of requests whatever their number:
    the managed jobs (`/v1/jobs?meta=true`), their allocations (`/v1/allocations` with their resources, for the
    endpoints) and the namespace's deployments (`/v1/deployments`), each with a `filter` expression.

    A job list stub has neither the job's version nor its count: its latest deployment tells both when it was
    made for the job's current version (`JobSpecModifyIndex`, `JobCreateIndex`). A job whose current version has
    no deployment (stopped, scaled to 0, a job without update strategy) is read on its own, JOB_READS at once."""
    async with api.async_client() as http:
        # The jobs first: an address that is not Nomad's API is told by one request, and no model, no more.
        stubs, _ = await api.get(http, "/v1/jobs", list[JobStub], params={"meta": "true", "filter": MANAGED_FILTER})
        if not stubs:
            return []
        (allocations, _), (deployments, _) = await asyncio.gather(
            api.get(
                http,
                "/v1/allocations",
                list[Allocation],
                params={"resources": "true", "filter": f"Job.{MANAGED_FILTER}"},
            ),
            api.get(http, "/v1/deployments", list[Deployment]),
        )
        stubs = [j for j in stubs if is_managed(j)]
        allocs_of: dict[str, list[Allocation]] = defaultdict(list)
        for alloc in allocations:
            allocs_of[alloc.JobID].append(alloc)
        latest: dict[str, Deployment] = {}
        for d in deployments:
            if d.JobID not in latest or d.CreateIndex > latest[d.JobID].CreateIndex:
                latest[d.JobID] = d
        reads = asyncio.Semaphore(JOB_READS)

        async def one(stub: JobStub) -> ModelStatus | None:
            deployment = latest.get(stub.ID)
            # Allocations of an earlier job of the same ID (purged) are not this job's.
            allocs = [a for a in allocs_of.get(stub.ID, []) if a.CreateIndex >= stub.CreateIndex]
            current = (
                deployment is not None
                and deployment.JobCreateIndex == stub.CreateIndex
                and deployment.JobSpecModifyIndex == stub.JobModifyIndex
                and len(deployment.TaskGroups) == 1
            )
            if deployment is not None and current:
                ((group, state),) = deployment.TaskGroups.items()
                job, version, request = stub, deployment.JobVersion, GroupRequest(group=group, count=state.DesiredTotal)
            else:
                async with reads:
                    full = await asyncio.to_thread(api.job, stub.ID)
                if full is None:
                    return None  # purged since it was listed
                if deployment is not None and deployment.JobCreateIndex != full.CreateIndex:
                    deployment = None
                group_spec = full.TaskGroups[0] if full.TaskGroups else {}
                count = int(group_spec.get("Count", 0) or 0)
                job, version, request = full, full.Version, GroupRequest(group=group_spec.get("Name", ""), count=count)
            assessment = _assess(job, version, request, deployment, allocs)
            endpoints = [] if job.Stop else await running_endpoints(api, http, assessment, allocs)
            return _model_status(job, version, request, deployment, assessment, endpoints)

        found = await asyncio.gather(*(one(stub) for stub in stubs))
    return [status for status in found if status is not None]
