"""Job text: the API JSON document (`{"Job": ...}`) or an HCL2 jobspec, from the same job model."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..contract.jobspec import Job

Format = Literal["json", "hcl"]
FORMATS: tuple[Format, ...] = ("json", "hcl")
SUFFIXES: dict[str, str] = {"json": ".nomad.json", "hcl": ".nomad.hcl"}
# A remembered render (cli/rendermemo.py) loads this module for SUFFIXES alone: the job models (pydantic,
# ~45 ms of start-up, measured) and the HCL writer are imported when there is a job to write.


def render_text(job: Job, fmt: Format) -> str:
    """The job as API JSON (`{"Job": ...}`, what the HTTP API, `nomad job run -json` and Terraform take) or HCL2."""
    if fmt == "hcl":
        from .hcl import render_hcl  # see the note on SUFFIXES

        return render_hcl(job)
    from ..contract.jobspec import api_document  # see the note on SUFFIXES

    return json.dumps(api_document(job), indent=2, ensure_ascii=False) + "\n"
