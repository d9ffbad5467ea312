"""From a deployment to a Nomad job: resolve, then compile. The pure core of `nomadgs render` and `submit`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..contract.deploymentjob import DeploymentJob
from ..contract.jobspec import validate_job
from ..spec.catalog import Catalog
from ..spec.deployment import Deployment
from ..spec.specfile import Sourced
from .distributed_job import distributed_job
from .job import compile_job
from .resolve import Resolved, resolve

if TYPE_CHECKING:
    from ..estimate.facts import ModelLookup


@dataclass(frozen=True)
class Compiled(DeploymentJob):
    """A deployment, its resolution and its job: what the Nomad side reads (`DeploymentJob`), and more."""

    source: Sourced[Deployment]
    resolved: Resolved


def build(
    deployment: Sourced[Deployment], catalog: Catalog, *, check: bool = False, model: ModelLookup | None = None
) -> Compiled:
    """Resolve and compile one deployment.

    With `check`, the job also goes through the strict run-time models (`validate_job`); `validate` and
    `submit` ask for it, `render` relies on the static typing of the compiler and starts faster. `model`:
    the model's metadata for the memory estimate (`auto`, and the check of explicit values), looked up by
    the caller (`compile.estimation.metadata_for_compile`).
    """
    resolved = resolve(deployment, catalog, model)
    job = distributed_job(compile_job(resolved), resolved)
    if check:
        validate_job(job)
    return Compiled(job, deployment.spec.name, deployment.filename, deployment, resolved)
