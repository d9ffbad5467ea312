"""A compiled deployment as the Nomad side uses it: the job, the model it serves, the file it came from.

The compiler builds it (`compile.build.Compiled` is one, with the resolution besides); the runner, the
watcher and the Ansible modules read only these plain values, so they never import the compiler.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .jobspec import Job
from .metadata import scale_to_zero
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

    @property
    def counts_follow_load(self) -> bool:
        """Whether something else sets its groups' counts once it runs (the Autoscaler, through an enabled
        `scaling` block, or the gateway, which scales it to zero and back): registering it again must keep
        the counts Nomad has (`PreserveCounts`), not reset them to the file's starting count."""
        if scale_to_zero(self.job.get("Meta") or {}) is not None:
            return True
        for group in self.job.get("TaskGroups") or []:
            scaling = group.get("Scaling")
            if scaling and scaling.get("Enabled", True):  # Nomad's Canonicalize: an unset Enabled is true
                return True
        return False

    @cached_property
    def request(self) -> GroupRequest:
        """What one replica asks the scheduler for (the first task group's request)."""
        return group_request(dict(self.job))
