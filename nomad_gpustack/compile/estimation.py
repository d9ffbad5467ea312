"""A deployment's memory estimate, where the deployment and the estimate meet: the estimate as `nomadgs
estimate` prints it (`estimate_document`: what the Ansible `return_estimate` returns), or an `Estimate` from
metadata already looked up with `estimate.lookup.lookup_model` (`estimate_deployment`). To compile with the
estimate, pass `lookup_model(...)` as `model=` to `compile.build.build`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..estimate.facts import ModelLookup
    from ..estimate.plan import Estimate
    from ..spec.catalog import Catalog
    from ..spec.deployment import Deployment
    from ..spec.specfile import Sourced


def estimate_deployment(
    deployment: Deployment,
    model: ModelLookup,
    backend_name: str,
    env: dict[str, str] | None = None,
) -> Estimate:
    """The estimate for a deployment whose metadata was found (`model.facts` set), for its backend's engine,
    on the GPUs its `gpu_memory` or known `gpu_model` describe. Raises ValueError when `model.facts` is None."""
    from ..estimate.engine import engine_settings
    from ..estimate.gpus import known_gpu_memory
    from ..estimate.plan import GpuSize, estimate
    from .parameters import tokenize

    if model.facts is None:
        raise ValueError(model.reason or "no model metadata")
    n = deployment.nomad
    known = known_gpu_memory(n.gpu_model)
    gpu = None
    if known:
        gpu = GpuSize(known, f"nomad.gpu_model {n.gpu_model}")
    elif isinstance(n.gpu_memory, int):
        gpu = GpuSize(n.gpu_memory, "nomad.gpu_memory")
    tokens: list[str] = []
    for element in deployment.backend_parameters or []:
        try:
            tokens.extend(tokenize(element))
        except ValueError:
            continue
    settings = engine_settings(
        backend_name, tokens, {**(deployment.env or {}), **(env or {})}, deployment.categories or ()
    )
    return estimate(model.facts, settings, gpu)


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
    `found`: metadata already looked up for the compile (`lookup.metadata_for_compile`), not looked up again.

    Raises InputError (bad `model_path`, unknown backend, no metadata) or UnreachableError (the Hub did not
    answer); `model_field` names `model_path` in messages. With explicit `gpus` on GPUs of known size,
    "check" holds the verdict `validate` would give: {"gpus", "starts", "refusal", "warnings"}.
    """
    from ..errors import InputError, Problem, UnreachableError
    from ..estimate.local import ModelReadError
    from ..estimate.lookup import NO_METADATA_HINT, lookup_model
    from .resolve import backend_and_env

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
    from ..estimate.plan import check

    est = estimate_deployment(deployment.spec, found, backend, env)
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
