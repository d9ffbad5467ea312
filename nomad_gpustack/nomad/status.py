"""What runs: the models nomadgs deployed, found by job ID or model name, with replicas and endpoints.

What `nomadgs status` shows and the Ansible `model_info` module returns. Reads only; never changes anything.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..contract.metadata import model_labels, model_name
from ..contract.request import GroupRequest
from ..errors import InputError, Problem, suggestion
from .client import NomadAPI
from .responses import Deployment, Evaluation, JobStub
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

    `status` is one word for the whole: running, deploying, failed, pending, idle (replicas: 0), stopped or
    dead. A job nomadgs did not create (`managed` false, found by its ID) has no model, backend or version.
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
        }


async def model_status(api: NomadAPI, job: JobStub) -> ModelStatus:
    """One job's deployment, replicas and endpoints, read without blocking."""
    async with api.async_client() as http:
        (allocs, _), (deployment, _) = await asyncio.gather(
            api.allocations(http, job.ID), api.latest_deployment(http, job.ID)
        )
        group = job.TaskGroups[0] if job.TaskGroups else {}
        request = GroupRequest(group=group.get("Name", ""), count=int(group.get("Count", 0) or 0))
        snapshot = Snapshot(job.ID, job.Version, Evaluation(ID="", Status="complete"), None, deployment, tuple(allocs))
        assessment = assess(snapshot, request)
        endpoints = await running_endpoints(api, http, assessment) if not job.Stop else []
    managed = is_managed(job)
    labels = model_labels(job.Name, (), job.Meta)
    return ModelStatus(
        job=job.ID,
        model=labels.model if managed else None,  # a foreign job's name is not a model name
        backend=(labels.backend or "") if managed else "",
        backend_version=(labels.version or "") if managed else "",
        job_version=job.Version,
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
        return "running" if desired else "idle"
    if assessment.phase in ("failed", "placement-failed"):
        return "failed"
    if job.Status in ("pending", "dead"):
        return job.Status
    return "deploying"


async def all_model_statuses(api: NomadAPI) -> list[ModelStatus]:
    """Every model nomadgs deployed in the namespace."""
    jobs = [api.job(j.ID) for j in managed_jobs(api)]
    return list(await asyncio.gather(*(model_status(api, j) for j in jobs if j is not None)))
