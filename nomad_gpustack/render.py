"""From a deployment to job text: resolve, compile, render. The data flow of `nomadgs render` and `submit`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from .catalog import Catalog
from .compile import compile_job
from .deployment import Deployment
from .jobspec import Job, api_document
from .resolve import Resolved, resolve
from .specfile import Sourced

Format = Literal["json", "hcl"]
SUFFIXES: dict[str, str] = {"json": ".nomad.json", "hcl": ".nomad.hcl"}


@dataclass(frozen=True)
class Compiled:
    """A deployment, its resolution and its job."""

    source: Sourced[Deployment]
    resolved: Resolved
    job: Job

    @property
    def job_id(self) -> str:
        return self.job.ID


def build(deployment: Sourced[Deployment], catalog: Catalog) -> Compiled:
    """Resolve and compile one deployment; the job is re-validated by the strict job models."""
    resolved = resolve(deployment, catalog)
    job = compile_job(resolved)
    # Round-trip through the strict models: the compiler cannot hand out a job they would refuse.
    Job.model_validate(job.api())
    return Compiled(deployment, resolved, job)


def render_text(job: Job, fmt: Format) -> str:
    """The job as API JSON (`{"Job": ...}`) or as an HCL2 jobspec."""
    if fmt == "hcl":
        from .hcl import render_hcl

        return render_hcl(job)
    return json.dumps(api_document(job), indent=2, ensure_ascii=False) + "\n"
