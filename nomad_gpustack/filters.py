"""Jinja2 filters: `nomad_job` compiles a deployment into a Nomad job inside any Jinja2 template.

    import jinja2, nomad_gpustack.filters

    env = jinja2.Environment()
    env.filters.update(nomad_gpustack.filters.FILTERS)
    env.from_string("{{ deployment | nomad_job(format='hcl') }}").render(deployment={...})

The Ansible collection's `nomad_gpustack.nomad.nomad_job` filter is this function; it only turns the errors
into Ansible's filter error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError, Problem

INPUT_NAME = "nomad_job input"  # how an inline deployment is named in messages (it has no file)


def nomad_job(
    deployment: Mapping[str, Any] | str | Path,
    backends: Sequence[str | Path] | str | None = None,
    format: str = "json",
    *,
    name: str = INPUT_NAME,
) -> dict[str, Any] | str:
    """A deployment (its content as a mapping, or the path of its file) compiled into a Nomad job.

    `format="json"` gives the API document `{"Job": {...}}` as a dict (what Nomad's HTTP API, `nomad job run
    -json` and other Nomad modules take); `format="hcl"` gives the HCL2 jobspec text. `backends` are extra
    backend files or folders added to the built-in catalog. Bad input raises `InputError`, one line per
    problem; `name` is how an inline deployment is named in them.
    """
    from .compile.build import build
    from .nomad.jobspec import api_document
    from .nomad.render import FORMATS, render_text
    from .spec.loader import deployment_from_data, load_catalog, load_deployment

    if format not in FORMATS:
        raise InputError(Problem(f"format '{format}' is not known", field="format", hint="use 'json' or 'hcl'"))
    extra = [backends] if isinstance(backends, str | Path) else list(backends or [])
    if isinstance(deployment, Mapping):
        source = deployment_from_data(deployment, name)
    elif isinstance(deployment, str | Path):
        source = load_deployment(deployment)
    else:
        raise InputError(
            Problem(
                f"expected a deployment (a mapping) or the path of a deployment file, got {type(deployment).__name__}",
                name,
            )
        )
    compiled = build(source, load_catalog(extra), check=True)
    if format == "hcl":
        return render_text(compiled.job, "hcl")
    return api_document(compiled.job)


FILTERS: dict[str, Callable[..., Any]] = {"nomad_job": nomad_job}
