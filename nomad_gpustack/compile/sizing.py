"""GPUs and GPU memory per replica, from the memory estimate: resolve's sizing stage (`plan_gpus`), and what
the estimate reads of a deployment (`engine_inputs`: the one reading, for `resolve` and `nomadgs estimate`).

The estimate package takes plain inputs; this module reads the deployment for it and says its findings as
errors located in the deployment file. The estimate loads inside the functions: rendering explicit values
without model metadata never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from ..estimate.gpus import KNOWN_GPUS_MIB, known_gpu_memory
from ..estimate.lookup import NO_METADATA_HINT
from ..spec.base import AUTO
from .parameters import split_parameter

# The estimate's engine (estimate.plan, .engine, .memory, .facts: ~25 ms of start-up, measured) is imported
# inside the functions that estimate: every compile passes through this module, and only a deployment with
# `auto`, or GPUs of known size to check, needs it (ARCHITECTURE.md, "Imports inside functions").

if TYPE_CHECKING:
    from ..contract.frameworks import Framework
    from ..errors import InputError
    from ..estimate.engine import EngineSettings
    from ..estimate.facts import ModelFacts, ModelLookup
    from ..estimate.plan import Estimate, GpuSize
    from ..spec.deployment import Deployment, DeploymentNomad
    from ..spec.specfile import Sourced
    from ..spec.yamlsource import Path


@dataclass(frozen=True)
class Sizing:
    """What the memory estimate said about the replica's GPUs (see nomad_gpustack.estimate)."""

    need: str  # "vLLM needs 17.2 GiB per GPU at --max-model-len 32768 (weights 14.2, KV 2.0, overhead 1.0)"
    gpu_need: int  # bytes each GPU must have for the engine to start
    auto: str | None = None  # why `auto` chose the values it did


class GpuPlan(NamedTuple):
    """Nodes, GPUs and GPU memory per replica, and what the estimate said about them."""

    gpus: int  # accelerators per replica and node; 0 runs on the CPU
    gpu_memory: int | None  # bytes each accelerator must have at least; None: any
    sizing: Sizing | None = None  # None: no estimate was made
    warnings: tuple[str, ...] = ()
    nodes: int = 1  # Nomad clients per replica (nomad.nodes, or what `nodes: auto` chose)


@dataclass(frozen=True)
class EngineInputs:
    """What the estimate reads of a deployment: its engine's memory settings, and the size of its GPUs."""

    settings: EngineSettings
    gpu: GpuSize | None  # None: neither nomad.gpu_memory nor a known nomad.gpu_model says


def gpu_size(nomad: DeploymentNomad) -> GpuSize | None:
    """The memory of the deployment's GPUs: a known `gpu_model`'s, else an explicit `gpu_memory`."""
    from ..estimate.plan import GpuSize  # the estimate's engine: see the note above

    known = known_gpu_memory(nomad.gpu_model)
    if known:
        return GpuSize(known, f"nomad.gpu_model {nomad.gpu_model}")
    if isinstance(nomad.gpu_memory, int) and nomad.gpu_memory:
        return GpuSize(nomad.gpu_memory, "nomad.gpu_memory")
    return None


def engine_inputs(deployment: Sourced[Deployment], backend_name: str, env: Mapping[str, str]) -> EngineInputs:
    """The estimate's inputs for a deployment on its backend, with the task's `env` as `resolve` merges it.

    A backend_parameters element whose quotes do not close is refused here as the compiler refuses it
    (InputError at the element), never left out of the estimate.
    """
    from ..estimate.engine import engine_settings  # the estimate's engine: see the note above

    d = deployment.spec
    tokens = [
        token
        for index, element in enumerate(d.backend_parameters or [])
        for token in split_parameter(deployment, index, element)
    ]
    return EngineInputs(engine_settings(backend_name, tokens, env, d.categories or ()), gpu_size(d.nomad))


def estimate_for(facts: ModelFacts, inputs: EngineInputs, nodes: int | None = 1) -> Estimate:
    """The estimate of a model with these `facts` for a deployment's inputs, a replica over `nodes` nodes;
    None (`nodes: auto`): over the fewest nodes on which it fits, when the GPUs' size is known (else one)."""
    from ..estimate.plan import estimate, fewest_nodes  # the estimate's engine: see the note above

    if nodes is None and inputs.gpu is not None:
        return fewest_nodes(facts, inputs.settings, inputs.gpu)
    return estimate(facts, inputs.settings, inputs.gpu, nodes=nodes or 1)


def plan_gpus(
    deployment: Sourced[Deployment],
    framework: Framework,
    gpus: int | None,
    model: ModelLookup | None,
    backend_name: str,
    env: Mapping[str, str],
    nodes: int | None = 1,
) -> GpuPlan:
    """Nodes, GPUs and GPU memory per replica: `auto` filled in from the estimate, explicit values checked by it.

    `gpus`: the GPUs (per node) the deployment asks for, None for `auto`; `nodes`: its nodes per replica, None
    for `auto` (which comes with `gpus: auto`: resolve checks that); `model`: the model's metadata, None when
    none was looked up. Raises InputError when `auto` cannot be decided, or the engine would not start.
    """
    nomad = deployment.spec.nomad
    stated = nomad.gpu_memory if isinstance(nomad.gpu_memory, int) else None
    auto_gpus, auto_memory = gpus is None, nomad.gpu_memory == AUTO
    if not framework.uses_gpus:
        if nodes is None:
            raise deployment.error(
                ("nomad", "nodes"),
                "nodes: auto sizes a replica by its GPUs' memory, and this version runs on the CPU",
                hint="write the number of nodes (nodes: 3), or choose a GPU version with backend_version",
            )
        return GpuPlan(0, stated, nodes=nodes)
    if not (auto_gpus or auto_memory) and model is None:
        return GpuPlan(gpus or 1, stated, nodes=nodes or 1)  # nothing asked of the estimate, nothing to make one with
    field: Path = ("nomad", "gpus") if auto_gpus else ("nomad", "gpu_memory")
    gpu = gpu_size(nomad)
    if auto_gpus and gpu is None:
        raise _no_gpu_size(deployment, field)
    if model is None or model.facts is None:
        plan = GpuPlan(gpus or 1, stated, nodes=nodes or 1)
        return _without_metadata(deployment, field, model, plan, auto_gpus or auto_memory)
    est = estimate_for(model.facts, engine_inputs(deployment, backend_name, env), nodes)
    if auto_gpus or auto_memory:
        return _auto(deployment, field, est, gpus, auto_memory, stated, auto_nodes=nodes is None)
    return _checked(deployment, est, gpus or 1, stated)


def _no_gpu_size(deployment: Sourced[Deployment], field: Path) -> InputError:
    gpu_model = deployment.spec.nomad.gpu_model
    if gpu_model:
        return deployment.error(
            ("nomad", "gpu_model"),
            f"gpus: auto cannot tell the memory of a '{gpu_model}'",
            hint="set nomad.gpu_memory (e.g. 24 GiB), or use a known model: " + ", ".join(KNOWN_GPUS_MIB),
        )
    return deployment.error(
        field,
        "gpus: auto needs the GPUs' memory",
        hint="set nomad.gpu_memory (e.g. 24 GiB) or a nomad.gpu_model with known memory (see `nomadgs estimate`)",
    )


def _without_metadata(
    deployment: Sourced[Deployment], field: Path, model: ModelLookup | None, plan: GpuPlan, auto: bool
) -> GpuPlan:
    """No metadata: `auto` cannot be decided; explicit values (`plan`) are taken as they are, with a warning
    when a lookup was made for GPUs of known size."""
    reason = model.reason if model is not None and model.reason else "no model metadata was looked up"
    if auto:
        raise deployment.error(
            field,
            f"auto needs the model's metadata, and there is none: {reason}",
            hint="give --model PATH (a GGUF file, or a folder with config.json), or set the value yourself",
        )
    if model is None or gpu_size(deployment.spec.nomad) is None:
        return plan
    warning = f"cannot check that the model fits its GPUs: {reason} ({NO_METADATA_HINT})"
    return plan._replace(warnings=(warning,))


def _auto(
    deployment: Sourced[Deployment],
    field: Path,
    est: Estimate,
    gpus: int | None,
    auto_memory: bool,
    stated: int | None,
    auto_nodes: bool = False,
) -> GpuPlan:
    """`auto` decided by the estimate (`est` on the nodes `nodes: auto` chose); explicit GPUs of known size are
    checked too."""
    from ..estimate.plan import NoFit, check, choose  # the estimate's engine: see the note above

    try:
        chosen = choose(est, gpus, gpus is None, auto_memory, auto_nodes)
    except NoFit as exc:
        raise deployment.error(
            ("nomad", "nodes") if auto_nodes and est.engine_refusal is None else field,
            str(exc),
            hint="use bigger GPUs, a shorter context, or a smaller model",
        ) from None
    if gpus is not None and est.gpu is not None:
        verdict = check(est, chosen.gpus)
        if verdict.refusal:
            raise deployment.error(("nomad", "gpu_model"), verdict.refusal)
    memory = chosen.gpu_memory if auto_memory else stated
    sizing = Sizing(est.need(chosen.row), chosen.row.min_gpu_memory, chosen.reason)
    return GpuPlan(chosen.gpus, memory, sizing, est.warnings, est.nodes)


def _checked(deployment: Sourced[Deployment], est: Estimate, count: int, stated: int | None) -> GpuPlan:
    """Explicit values, checked by the estimate when the GPUs' size is known (else only sized by it)."""
    from ..estimate.plan import check  # the estimate's engine: see the note above

    if est.gpu is None:
        row = est.row(count)
        return GpuPlan(count, stated, Sizing(est.need(row), row.min_gpu_memory), est.warnings, est.nodes)
    verdict = check(est, count)
    if verdict.refusal:
        raise deployment.error(("nomad", "gpus"), verdict.refusal)
    sizing = Sizing(est.need(verdict.row), verdict.row.min_gpu_memory)
    return GpuPlan(count, stated, sizing, verdict.warnings, est.nodes)
