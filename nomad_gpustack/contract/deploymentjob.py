"""A compiled deployment as the Nomad side uses it: the job, the model it serves, the file it came from.

The compiler builds it (`compile.build.Compiled` is one, with the resolution besides); the runner, the
watcher and the Ansible modules read only these plain values, so they never import the compiler.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .jobspec import Job
from .request import GroupRequest, group_request


@dataclass(frozen=True)
class DeploymentJob:
    """One deployment's Nomad job, with what messages about it need."""

    job: Job
    model: str  # the deployment's name: the model as GPUStack knows it
    file: str  # the deployment file, as messages name it

    @property
    def job_id(self) -> str:
        return self.job["ID"]

    @cached_property
    def request(self) -> GroupRequest:
        """What one replica asks the scheduler for (the first task group's request)."""
        return group_request(dict(self.job))
