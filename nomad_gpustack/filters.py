"""Jinja2 filters: `nomad_job` compiles a deployment into a Nomad job inside any Jinja2 template, and
`model_estimate` gives its GPU memory estimate.

    import jinja2, nomad_gpustack.filters

    env = jinja2.Environment()
    env.filters.update(nomad_gpustack.filters.FILTERS)
    env.from_string("{{ deployment | nomad_job(format='hcl') }}").render(deployment={...})
    env.from_string("{{ (deployment | model_estimate(model='/models/qwen')).suggestion.gpus }}").render(...)

The Ansible collection's `nomad_gpustack.nomad.nomad_job` and `nomad_gpustack.nomad.model_estimate` filters are
these functions; they only turn the errors into Ansible's filter error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cachefolder import cache_folder
from .compile.build import build
from .compile.estimation import estimate_document, metadata_for_compile
from .contract.jobspec import api_document
from .errors import InputError, Problem, UnreachableError
from .nomad.render import FORMATS, render_text
from .spec.loader import deployment_from_data, load_catalog, load_deployment

if TYPE_CHECKING:
    from .estimate.facts import ModelLookup
    from .spec.catalog import Catalog
    from .spec.deployment import Deployment
    from .spec.specfile import Sourced

INPUT_NAME = "nomad_job input"  # how an inline deployment is named in messages (it has no file)
ESTIMATE_INPUT_NAME = "model_estimate input"
MODEL_ARGUMENT = "model"
# The package's messages name the command's flag; in a filter it is the `model` argument.
FILTER_WORDS = (("give --model PATH", "give model=PATH"), ("(--model PATH)", "(model=PATH)"))


def nomad_job(
    deployment: Mapping[str, Any] | str | Path,
    backends: Sequence[str | Path] | str | None = None,
    format: str = "json",
    model: str | Path | None = None,
    *,
    name: str = INPUT_NAME,
) -> dict[str, Any] | str:
    """A deployment (its content as a mapping, or the path of its file) compiled into a Nomad job.

    `format="json"` gives the API document `{"Job": {...}}` as a dict (what Nomad's HTTP API, `nomad job run
    -json` and other Nomad modules take); `format="hcl"` gives the HCL2 jobspec text. `backends` are extra
    backend files or folders added to the built-in catalog. `model`: the path of the model on this machine
    (a GGUF file, or a folder with config.json and safetensors headers), for `gpus: auto` / `gpu_memory: auto`
    and the check of explicit values, as `nomadgs render --model PATH`; without it only `auto` looks the
    model up (the deployment's local path, the Hugging Face Hub and its cache). Bad input raises
    `InputError`, one line per problem; `name` is how an inline deployment is named in them.
    """
    if format not in FORMATS:
        raise InputError(Problem(f"format '{format}' is not known", field="format", hint="use 'json' or 'hcl'"))
    try:
        source = _deployment(deployment, name)
        catalog = _catalog(backends)
        compiled = build(source, catalog, check=True, model=_metadata(source, model))
    except InputError as exc:
        raise exc.reworded(FILTER_WORDS) from None
    if format == "hcl":
        return render_text(compiled.job, "hcl")
    return api_document(compiled.job)


def model_estimate(
    deployment: Mapping[str, Any] | str | Path,
    backends: Sequence[str | Path] | str | None = None,
    model: str | Path | None = None,
    *,
    name: str = ESTIMATE_INPUT_NAME,
) -> dict[str, Any]:
    """The GPU memory estimate of a deployment (its content as a mapping, or the path of its file): the
    document `nomadgs estimate --output json` prints (per GPU count: weights, KV cache, overhead, total,
    whether it fits; the suggestion; with explicit `gpus` on GPUs of known size, `check`: the verdict
    `nomadgs validate` gives).

    The model's headers come from `model` (a GGUF file, or a folder with config.json and safetensors
    headers), else the deployment's local path, else the Hugging Face Hub and its cache, as for the
    command. Raises InputError (bad input, no metadata) or UnreachableError (the Hub did not answer).
    """
    try:
        source = _deployment(deployment, name)
        return estimate_document(
            source, _catalog(backends), model_path=model, cache_dir=cache_folder(), model_field=MODEL_ARGUMENT
        )
    except InputError as exc:
        raise exc.reworded(FILTER_WORDS) from None
    except UnreachableError as exc:  # says what to give, as the input errors do
        text = str(exc)
        for flag, argument in FILTER_WORDS:
            text = text.replace(flag, argument)
        raise UnreachableError(text) from None


def _deployment(deployment: Mapping[str, Any] | str | Path, name: str) -> Sourced[Deployment]:
    if isinstance(deployment, Mapping):
        return deployment_from_data(deployment, name)
    if isinstance(deployment, str | Path):
        return load_deployment(deployment)
    raise InputError(
        Problem(
            f"expected a deployment (a mapping) or the path of a deployment file, got {type(deployment).__name__}",
            name,
        )
    )


def _catalog(backends: Sequence[str | Path] | str | Path | None) -> Catalog:
    return load_catalog([backends] if isinstance(backends, str | Path) else list(backends or []))


def _metadata(source: Sourced[Deployment], model: str | Path | None) -> ModelLookup | None:
    """As `nomadgs render`: `auto` looks the model up, explicit values are checked only with `model`."""
    return metadata_for_compile(
        source.spec, model_path=model, cache_dir=cache_folder(), hub=False, model_field=MODEL_ARGUMENT
    )


FILTERS: dict[str, Callable[..., Any]] = {"nomad_job": nomad_job, "model_estimate": model_estimate}
