"""From a deployment to job text: resolve, compile, render. The data flow of `nomadgs render` and `submit`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from ..nomad.jobspec import Job, api_document, validate_job
from ..spec.catalog import Catalog
from ..spec.deployment import Deployment
from ..spec.specfile import Sourced
from .job import compile_job
from .resolve import Resolved, resolve

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
        return self.job["ID"]


def build(deployment: Sourced[Deployment], catalog: Catalog, *, check: bool = False) -> Compiled:
    """Resolve and compile one deployment.

    With `check`, the job also goes through the strict run-time models (`validate_job`); `validate` and
    `submit` ask for it, `render` relies on the static typing of the compiler and starts faster.
    """
    resolved = resolve(deployment, catalog)
    job = compile_job(resolved)
    if check:
        validate_job(job)
    return Compiled(deployment, resolved, job)


def render_text(job: Job, fmt: Format) -> str:
    """The job as API JSON (`{"Job": ...}`) or as an HCL2 jobspec."""
    if fmt == "hcl":
        from ..nomad.hcl import render_hcl

        return render_hcl(job)
    return json.dumps(api_document(job), indent=2, ensure_ascii=False) + "\n"
