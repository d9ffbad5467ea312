"""A deployment's memory estimate, where the deployment and the estimate meet: its model's metadata looked up
(`lookup_model`, and `metadata_for_compile` for a compile), and the estimate as `nomadgs estimate` prints it
(`estimate_deployment`, `estimate_document`: what the Ansible `return_estimate` returns).

The estimate package takes plain values; this module reads the deployment for it, the backend and env as
`resolve` decides them, and the engine's inputs as resolve's sizing reads them (`sizing.engine_inputs`).
To compile with the estimate, pass `lookup_model(...)` (or `metadata_for_compile(...)`) as `model=` to
`compile.build.build`. The metadata is read by `estimate.lookup` (local headers, the Hub and its cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EstimateError, InputError, Problem, UnreachableError
from ..estimate.gpus import known_gpu_memory
from ..estimate.lookup import NO_METADATA_HINT, ModelSource, find_model
from ..spec.base import AUTO
from .resolve import backend_and_env
from .sizing import engine_inputs, estimate_for

# Every render loads this module (`metadata_for_compile`); the estimate's readers and engine (estimate.local,
# .plan: ~25 ms of start-up, measured) are imported inside the functions that look a model up or estimate.

if TYPE_CHECKING:
    from ..estimate.facts import ModelLookup
    from ..estimate.local import ReadStats
    from ..estimate.plan import Estimate
    from ..spec.catalog import Catalog
    from ..spec.deployment import Deployment
    from ..spec.specfile import Sourced


def has_auto(deployment: Deployment) -> bool:
    """Whether the deployment leaves `gpus` or `gpu_memory` to the estimate."""
    return AUTO in (deployment.nomad.gpus, deployment.nomad.gpu_memory)


def can_check(deployment: Deployment) -> bool:
    """Whether explicit values can be checked: the GPUs' memory is stated, or known from the model name."""
    n = deployment.nomad
    return n.gpus != 0 and (isinstance(n.gpu_memory, int) or known_gpu_memory(n.gpu_model) is not None)


def model_source(deployment: Deployment) -> ModelSource:
    """Where the deployment says its model is."""
    return ModelSource(
        deployment.model_source,
        repo=deployment.huggingface_repo_id,
        file=deployment.huggingface_filename,
        local_path=deployment.local_path,
    )


def lookup_model(
    deployment: Deployment,
    *,
    model_path: str | Path | None = None,
    cache_dir: Path | None = None,
    hub: bool = True,
    stats: ReadStats | None = None,
) -> ModelLookup:
    """The model's facts, or the reason there are none: `model_path`, else the deployment's local path, else
    the Hub (`hub`: whether it may be asked; the cache in `cache_dir` is read either way).

    A `model_path` that cannot be read raises ModelReadError (it is the user's input); everything else
    becomes a reason, which says what is missing, not what to do (`NO_METADATA_HINT` says that).
    """
    return find_model(model_source(deployment), model_path=model_path, cache_dir=cache_dir, hub=hub, stats=stats)


def metadata_for_compile(
    deployment: Deployment,
    *,
    model_path: str | Path | None,
    cache_dir: Path | None,
    hub: bool,
    model_field: str = "--model",
) -> ModelLookup | None:
    """The model's metadata a compile should use, or None when nothing asks for one.

    `auto` always looks (the Hub included). Explicit values are checked when `hub` (validate, submit, the
    Ansible module: with `model_path`, a local path, the cache or the Hub) or when `model_path` is given; a
    plain render looks nothing up, so its output never depends on the network or on a cache. A `model_path`
    that cannot be read is the user's bad input (InputError, naming `model_field`).
    """
    if not has_auto(deployment) and not hub and model_path is None:
        return None
    if not has_auto(deployment) and not can_check(deployment):
        return None
    from ..estimate.local import ModelReadError  # the readers: see the note above

    try:
        return lookup_model(deployment, model_path=model_path, cache_dir=cache_dir, hub=True)
    except ModelReadError as exc:
        raise InputError(Problem(str(exc), field=model_field)) from None


def estimate_deployment(
    deployment: Sourced[Deployment], model: ModelLookup, backend_name: str, env: dict[str, str]
) -> Estimate:
    """The estimate for a deployment whose metadata was found (`model.facts` set), for its backend's engine
    and the task's `env` (`resolve.backend_and_env`), on the GPUs its `gpu_memory` or known `gpu_model`
    describe, a replica over its `nomad.nodes` (`auto`: the fewest that hold it, as the compiler chooses).
    Raises EstimateError when `model.facts` is None, InputError for a parameter that cannot be split.
    """
    if model.facts is None:
        raise EstimateError(model.reason or "no model metadata")
    nodes = deployment.spec.nomad.nodes
    inputs = engine_inputs(deployment, backend_name, env)
    return estimate_for(model.facts, inputs, nodes if isinstance(nodes, int) else None)


def estimate_document(
    deployment: Sourced[Deployment],
    catalog: Catalog,
    *,
    model_path: str | Path | None = None,
    cache_dir: Path | None = None,
    hub: bool = True,
    model_field: str = "model",
    found: ModelLookup | None = None,
) -> dict[str, Any]:
    """The estimate of a loaded deployment as a JSON document, its metadata looked up as `nomadgs estimate`
    does (`model_path`, the deployment's local path, the cache in `cache_dir`, the Hub when `hub`), or
    `found`: metadata already looked up for the compile (`metadata_for_compile`), not looked up again.

    Raises InputError (bad `model_path`, unknown backend, no metadata, a parameter that cannot be split) or
    UnreachableError (the Hub did not answer); `model_field` names `model_path` in messages. With explicit
    `gpus` on GPUs of known size, "check" holds the verdict `validate` would give:
    {"gpus", "starts", "refusal", "warnings"}. A replica over several nodes: "nodes", each row's "gpus" per
    node, its "per_node" (what one node's GPUs hold) and "split" (how the engine divides the model).
    """
    from ..estimate.local import ModelReadError  # the readers: see the note above
    from ..estimate.plan import check  # the estimate's engine: see the note above

    backend, env = backend_and_env(deployment, catalog)
    if found is None:
        try:
            found = lookup_model(deployment.spec, model_path=model_path, cache_dir=cache_dir, hub=hub)
        except ModelReadError as exc:
            raise InputError(Problem(str(exc), field=model_field)) from None
    if found.facts is None:
        # One wording whatever the reason (offline, unreachable, not on this machine, ...): the file, why, the fix.
        problem = Problem(f"no metadata for the model: {found.reason}", deployment.filename, hint=NO_METADATA_HINT)
        if found.unreachable:
            raise UnreachableError(str(problem))
        raise InputError(problem)
    est = estimate_deployment(deployment, found, backend, env)
    document: dict[str, Any] = {"file": deployment.filename, **est.to_json(), "check": None}
    gpus = deployment.spec.nomad.gpus
    if est.gpu is not None and isinstance(gpus, int) and gpus > 0:
        verdict = check(est, gpus)
        document["check"] = {
            "gpus": gpus,
            "starts": verdict.row.starts,
            "refusal": verdict.refusal,
            "warnings": [w for w in verdict.warnings if w not in est.warnings],
        }
    return document
