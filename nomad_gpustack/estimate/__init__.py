"""GPU memory estimation from model headers: how many GPUs a deployment needs, and of what size.

Pure core: `gguf`, `safetensors` (header readers), `facts` (ModelFacts), `engine` (the deployment's
settings), `memory` (formulas per engine), `plan` (estimate, check, choose), `gpus` (known GPU models).
I/O: `local` (local files, headers only), `hub` (the Hugging Face Hub and its cache), `lookup` (which one).

Other code (the CLI, the compiler's callers, the Ansible plugins) uses `estimate_deployment` below, or
`lookup.lookup_model` + `plan.estimate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..spec.deployment import Deployment
    from .facts import ModelLookup
    from .plan import Estimate


def estimate_deployment(
    deployment: Deployment,
    model: ModelLookup,
    backend_name: str,
    env: dict[str, str] | None = None,
) -> Estimate:
    """The estimate for a deployment whose metadata was found (`model.facts` set), for its backend's engine,
    on the GPUs its `gpu_memory` or known `gpu_model` describe. Raises ValueError when `model.facts` is None."""
    from ..compile.parameters import tokenize
    from .engine import engine_settings
    from .gpus import known_gpu_memory
    from .plan import GpuSize, estimate

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


__all__ = ["estimate_deployment"]
