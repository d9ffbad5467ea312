"""From model facts and a deployment's settings to an estimate, a verdict on explicit values, or a choice for
`auto`. Pure: `estimate()` is what `nomadgs estimate`, the compiler and the Ansible plugins all call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import EstimateError
from ..sizes import GIB
from .engine import EngineSettings
from .facts import ModelFacts
from .memory import VLLM_DEFAULT_GMU, GpuFigures, figures_for, sglang_mem_fraction

GPU_COUNTS = (1, 2, 4, 8)  # the tensor-parallel sizes the table shows (GPUs per node)
MAX_AUTO_NODES = 16  # `nodes: auto` looks no further: more is a cluster question, not a sizing one
DISPLAY = {"vllm": "vLLM", "sglang": "SGLang", "llama.cpp": "llama.cpp"}


@dataclass(frozen=True)
class GpuSize:
    """The memory of the GPUs a deployment runs on, and where that figure comes from."""

    bytes: int
    source: str  # "nomad.gpu_memory" or "nomad.gpu_model NVIDIA L4"


def gib(n: int) -> str:
    """Bytes as GiB with one decimal, for messages (26.3)."""
    return f"{n / GIB:.1f}"


def gib_size(n: int) -> str:
    """A GPU's size for messages: "24 GiB", "22.5 GiB"."""
    text = gib(n)
    return f"{text.removesuffix('.0')} GiB"


@dataclass(frozen=True)
class Estimate:
    """Per-GPU memory of one replica for each GPU count, for one engine, context and GPU size."""

    facts: ModelFacts
    settings: EngineSettings
    context: int
    context_source: str  # "--max-model-len 32768" or "the model's maximum (131072)"
    gpu: GpuSize | None
    rows: tuple[GpuFigures, ...]
    warnings: tuple[str, ...] = field(default=())
    engine_refusal: str | None = None  # the engine refuses these settings on any GPUs (see `refusal_of`)
    nodes: int = 1  # the replica's nodes; each row is one GPU of `row.gpus` on each node (`across_nodes`)

    @property
    def engine(self) -> str:
        return DISPLAY.get(self.settings.engine, self.settings.backend)

    def row(self, gpus: int) -> GpuFigures:
        """The figures for `gpus` GPUs (computed when the table does not hold that count)."""
        for row in self.rows:
            if row.gpus == gpus:
                return row
        return _figures(self.facts, self.settings, self.context, gpus, self.gpu, self.engine_refusal, self.nodes)

    def refusal_on(self, gpus: int) -> str | None:
        """Why the engine refuses to start on `gpus` GPUs whatever their size, or None: the one source of
        the verdict's refusal, the table's FITS and the warnings (`check`)."""
        if self.engine_refusal is not None:
            return self.engine_refusal
        return _split_refusal(self.facts, self.settings, gpus * self.nodes)

    def smallest_fit(self) -> GpuFigures | None:
        """The fewest GPUs on which the engine starts with one full-length sequence (needs a GPU size)."""
        return next((r for r in self.rows if r.fits), None)

    def usable_text(self, row: GpuFigures) -> str:
        """How much of each GPU the engine uses: "at 0.90", "at mem-fraction-static 0.85", ""."""
        s = self.settings
        if s.engine == "vllm":
            return f" at {s.gpu_memory_utilization or VLLM_DEFAULT_GMU:.2f}"
        if s.engine == "sglang" and self.gpu is not None:
            tp = max(1, row.gpus * self.nodes // s.pipeline_parallel)
            fraction = s.mem_fraction_static or sglang_mem_fraction(self.gpu.bytes, tp, s.pipeline_parallel)
            return f" at mem-fraction-static {fraction:.3g}"
        return ""

    def split(self, row: GpuFigures) -> str:
        """How a replica over several nodes divides the model: "tensor parallel 8 within a node, pipeline
        parallel 2 across nodes"; "" on one node."""
        if self.nodes == 1:
            return ""
        s, total = self.settings, row.gpus * self.nodes
        how = f"GPUStack's rule spread over {total} GPUs"
        if s.engine in ("vllm", "sglang"):
            tp, pp = max(1, total // s.pipeline_parallel), s.pipeline_parallel
            how = f"tensor parallel {tp} within a node, pipeline parallel {pp} across nodes"
        elif s.engine == "llama.cpp":
            how = f"layers split over {total} GPUs, the workers' over RPC"
        return how

    def need(self, row: GpuFigures) -> str:
        """ "vLLM needs 26.3 GiB per GPU at --max-model-len 32768 (weights 14.2, KV 4.0, overhead 8.1)"; on
        several nodes, "per GPU on 2 nodes × 8 GPUs at ..."."""
        per = f"per GPU on {self.nodes} nodes × {row.gpus} GPUs" if self.nodes > 1 else "per GPU"
        if self.settings.vram_claim is not None:
            return f"{self.engine} needs {gib(row.total)} GiB {per} (GPUSTACK_MODEL_VRAM_CLAIM)"
        at = f" at {self.settings.context_name} {self.context}" if self.settings.engine != "other" else ""
        parts = f"weights {gib(row.weights)}, KV {gib(row.kv_context)}, overhead {gib(row.overhead)}"
        if self.settings.engine == "other":
            parts = f"GPUStack's rule: weights {gib(row.weights)} × 1.2 + overhead"
        return f"{self.engine} needs {gib(row.total)} GiB {per}{at} ({parts})"

    def refusal(self, row: GpuFigures) -> str:
        """Why the engine would not start on the stated GPUs, and what would make it start."""
        assert self.gpu is not None and row.usable is not None
        where = f"{self.nodes} nodes × {row.gpus}" if self.nodes > 1 else f"{row.gpus}"
        gives = f"{where} × {gib_size(self.gpu.bytes)}{self.usable_text(row)} gives {gib(row.usable)}"
        remedies = []
        better = self.smallest_fit()
        if better is not None and better.gpus > row.gpus:
            remedies.append(f"gpus: {better.gpus}")
        if row.max_context and self.settings.engine != "other" and self.settings.vram_claim is None:
            remedies.append(f"{self.settings.context_name} ≤ {_round_context(row.max_context)}")
        advice = f": use {', or '.join(remedies)}" if remedies else ": use larger GPUs"
        return f"{self.need(row)}; {gives}{advice}"

    def suggestion(self) -> dict[str, Any]:
        """The suggested `gpus` (per node, on the estimate's `nodes`, which `to_json` says) and `gpu_memory`, with
        the reason."""
        nodes = self.nodes
        on = f" on each of {nodes} nodes" if nodes > 1 else ""
        if self.engine_refusal is not None:
            return {"gpus": None, "gpu_memory": None, "reason": self.engine_refusal}
        fit = self.smallest_fit() if self.gpu else None
        if self.gpu is not None:
            if fit is None:
                reason = f"no GPU count up to {self.rows[-1].gpus}{on} fits"
                return {"gpus": None, "gpu_memory": None, "reason": reason}
            return {
                "gpus": fit.gpus,
                "gpu_memory": self.gpu.bytes,
                "reason": f"the fewest GPUs of {gib_size(self.gpu.bytes)} ({self.gpu.source}){on} "
                "that start the engine",
            }
        first = self.rows[0]
        return {
            "gpus": first.gpus,
            "gpu_memory": round_up_gib(first.min_gpu_memory),
            "reason": f"one replica on {first.gpus} GPU(s){on} needs GPUs of at least {gib(first.min_gpu_memory)} GiB",
        }

    def to_json(self) -> dict[str, Any]:
        """The estimate as a JSON document (the output of `nomadgs estimate --output json`, the Ansible return)."""
        s = self.settings
        return {
            "model": self.facts.to_json(),
            "engine": self.engine,
            "rule": s.engine if s.vram_claim is None else "GPUSTACK_MODEL_VRAM_CLAIM",
            "context": self.context,
            "context_source": self.context_source,
            "kv_cache_dtype": s.kv_cache_dtype or s.cache_type_k or "auto",
            "gpu_memory": self.gpu.bytes if self.gpu else None,
            "gpu_memory_source": self.gpu.source if self.gpu else None,
            "nodes": self.nodes,
            "rows": [{**r.to_json(), "split": self.split(r) or None} for r in self.rows],
            "suggestion": self.suggestion(),
            "warnings": list(self.warnings),
        }


def round_up_gib(n: int) -> int:
    """Bytes rounded up to a whole GiB: the unit `gpu_memory` is written in."""
    return math.ceil(n / GIB) * GIB


def _round_context(n: int) -> int:
    """A context length to suggest: down to a multiple of 1024 (of 256 below 1024)."""
    step = 1024 if n >= 1024 else 256 if n >= 256 else 1
    return n // step * step


def gpu_counts(
    facts: ModelFacts, settings: EngineSettings, counts: tuple[int, ...] = GPU_COUNTS, nodes: int = 1
) -> tuple[int, ...]:
    """The GPU counts (per node) worth showing: for tensor parallelism, those whose size divides the attention
    heads; for llama.cpp's layer split, no more GPUs than layers."""
    if settings.engine in ("vllm", "sglang"):
        pp = settings.pipeline_parallel
        shown = tuple(n for n in counts if n * nodes % pp == 0 and facts.attention_heads % (n * nodes // pp) == 0)
        return shown or (max(1, pp // nodes),)
    if settings.engine == "llama.cpp":
        return tuple(n for n in counts if n * nodes <= facts.layers) or (1,)
    return counts


def across_nodes(settings: EngineSettings, nodes: int) -> EngineSettings:
    """The settings of a replica over `nodes` nodes: vLLM and SGLang run pipeline parallel across the nodes
    (the built-in backends' `nomad.distributed` commands pass --pipeline-parallel-size / --pp-size
    {{node_count}}; a size in backend_parameters comes later on the command line and wins, as here), tensor
    parallel within each. llama.cpp splits its layers over every GPU of every node: nothing to change."""
    if nodes == 1 or settings.engine not in ("vllm", "sglang") or settings.pipeline_parallel != 1:
        return settings
    return replace(settings, pipeline_parallel=nodes)


def refusal_of(facts: ModelFacts, settings: EngineSettings) -> str | None:
    """Why the engine refuses these settings on any GPUs, or None. vLLM refuses a --max-model-len longer than
    the model's maximum unless VLLM_ALLOW_LONG_MAX_MODEL_LEN is set (`_get_and_verify_max_len`)."""
    context = settings.context
    if settings.engine != "vllm" or context is None or context <= facts.max_context or settings.allow_long_context:
        return None
    return (
        f"{settings.context_flag} {context} is longer than the model's maximum ({facts.max_context}): "
        f"vLLM refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 (use {settings.context_flag} ≤ {facts.max_context})"
    )


def _split_refusal(facts: ModelFacts, settings: EngineSettings, gpus: int) -> str | None:
    """vLLM and SGLang refuse a tensor-parallel size that does not divide the attention heads (`gpus`: every
    GPU of the replica, on all its nodes)."""
    if settings.engine not in ("vllm", "sglang"):
        return None
    tp = max(1, gpus // settings.pipeline_parallel)
    if facts.attention_heads % tp == 0:
        return None
    fitting = " or ".join(str(n) for n in gpu_counts(facts, settings) if n > 1)
    return (
        f"tensor-parallel size {tp} does not divide the model's {facts.attention_heads} attention heads; "
        f"{DISPLAY[settings.engine]} refuses to start" + (f" (use gpus: {fitting})" if fitting else "")
    )


def _figures(
    facts: ModelFacts,
    settings: EngineSettings,
    context: int,
    gpus: int,
    gpu: GpuSize | None,
    refusal: str | None,
    nodes: int = 1,
) -> GpuFigures:
    """One row of the table, `gpus` on each of `nodes` nodes: what the engine needs on one GPU, the model split
    over all of them (memory.py's rules over gpus × nodes GPUs, with the settings `across_nodes` gives), and
    whether it starts, which it does not when it refuses the settings whatever the GPUs' size."""
    total = gpus * nodes
    row = replace(figures_for(facts, settings, context, total, gpu.bytes if gpu else None), gpus=gpus, nodes=nodes)
    if row.starts is not None and (refusal is not None or _split_refusal(facts, settings, total) is not None):
        return replace(row, starts=False, sequences=0)
    return row


def estimate(
    facts: ModelFacts,
    settings: EngineSettings,
    gpu: GpuSize | None = None,
    counts: tuple[int, ...] = GPU_COUNTS,
    nodes: int = 1,
) -> Estimate:
    """The estimate for one deployment (its settings) of one model (its facts), on GPUs of `gpu` if known, a
    replica over `nodes` nodes (`counts`: GPUs per node)."""
    settings = across_nodes(settings, nodes)
    warnings = [f"ignored: {p}" for p in settings.problems]
    refusal = refusal_of(facts, settings)
    if settings.context is not None:
        context = settings.context
        source = f"{settings.context_flag} {context}"
        if refusal is not None:
            warnings.append(refusal)  # said also where no GPU size makes a verdict
        elif context > facts.max_context and settings.engine == "vllm":
            warnings.append(
                f"{settings.context_flag} {context} is longer than the model's maximum ({facts.max_context}): "
                "vLLM starts as VLLM_ALLOW_LONG_MAX_MODEL_LEN is set, but may give wrong outputs past the maximum"
            )
    else:
        context = facts.max_context
        source = f"the model's maximum ({context})"
    shown = gpu_counts(facts, settings, counts, nodes)
    rows = tuple(_figures(facts, settings, context, n, gpu, refusal, nodes) for n in shown)
    return Estimate(facts, settings, context, source, gpu, rows, tuple(warnings), refusal, nodes)


def fewest_nodes(facts: ModelFacts, settings: EngineSettings, gpu: GpuSize, most: int = MAX_AUTO_NODES) -> Estimate:
    """`nodes: auto`: the estimate on the fewest nodes (1 to `most`) on which some GPU count per node starts
    the engine with one full-length sequence; the estimate on `most` nodes when none does (no row fits)."""
    for nodes in range(1, most + 1):
        est = estimate(facts, settings, gpu, nodes=nodes)
        if est.engine_refusal is not None or est.smallest_fit() is not None:
            return est
    return est


# --- explicit values and `auto` --------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the estimate says about explicit `gpus` on GPUs of a known size."""

    refusal: str | None  # the engine would not start: the message to refuse the deployment with
    warnings: tuple[str, ...]
    row: GpuFigures


def check(est: Estimate, gpus: int) -> Verdict:
    """Whether the engine starts on `gpus` GPUs of the estimate's size (which must be known)."""
    row = est.row(gpus)
    warnings = list(est.warnings)
    s = est.settings
    refusal = est.refusal_on(gpus)  # settings the engine refuses on any GPUs: the row says so too
    if refusal is not None:
        return Verdict(refusal, tuple(warnings), row)
    if row.starts is False:
        if s.engine in ("vllm", "sglang", "llama.cpp") and s.vram_claim is None:
            refusal = est.refusal(row)
        else:
            warnings.append(est.refusal(row))
    elif row.starts and row.sequences == 0:
        warnings.append(
            f"fewer than one full-length sequence ({s.context_name} {est.context}) fits per replica: "
            f"{est.need(row)}{est.usable_text(row)}; "
            f"requests will be cut to {_round_context(row.max_context or 0)} tokens"
        )
    return Verdict(refusal, tuple(warnings), row)


@dataclass(frozen=True)
class Choice:
    """`gpus` and `gpu_memory` chosen for `auto`, and why."""

    gpus: int
    gpu_memory: int | None  # None: leave the constraint out (a gpu_model pins the GPU)
    reason: str
    row: GpuFigures


class NoFit(EstimateError):
    """No choice fits; the message says why."""


def choose(est: Estimate, gpus: int | None, auto_gpus: bool, auto_memory: bool, auto_nodes: bool = False) -> Choice:
    """Fill in `auto`: with a GPU size, the fewest GPUs that start the engine (per node, on the estimate's
    nodes: `fewest_nodes` made it for `auto_nodes`); with a GPU count, the memory its GPUs need (rounded up to
    a whole GiB). Raises NoFit."""
    if est.engine_refusal is not None:
        raise NoFit(est.engine_refusal)  # no number or size of GPUs helps
    if auto_gpus:
        if est.gpu is None:
            raise NoFit(
                "gpus: auto needs the GPUs' memory: set nomad.gpu_memory (e.g. 24 GiB) or a known nomad.gpu_model"
            )
        fit = est.smallest_fit()
        size = f"{gib_size(est.gpu.bytes)} ({est.gpu.source})"
        if fit is None:
            last = est.rows[-1]
            where = f"up to {last.gpus} GPUs"
            if auto_nodes:
                where = f"up to {est.nodes} nodes (nodes: auto looks no further) of {where} each"
            raise NoFit(f"does not fit on {where} of {size}: {est.need(last)}{est.usable_text(last)}")
        memory = round_up_gib(fit.min_gpu_memory) if auto_memory else None
        reason = (
            f"gpus: {fit.gpus}, the fewest {gib_size(est.gpu.bytes)} GPUs ({est.gpu.source}) on which {est.need(fit)}"
        )
        if auto_nodes:
            split = f": {est.split(fit)}" if est.nodes > 1 else ""
            reason = (
                f"nodes: {est.nodes}, gpus: {fit.gpus}, the fewest nodes, then GPUs on each, of {size} on which "
                f"{est.need(fit)}{split}"
            )
        if memory is not None:
            reason += f"; gpu_memory: {memory // GIB} GiB, what each needs"
        return Choice(fit.gpus, memory, reason, fit)
    count = gpus or 1
    row = est.row(count)
    memory = round_up_gib(row.min_gpu_memory)
    return Choice(
        count, memory, f"gpu_memory: {memory // GIB} GiB, what each of {count} GPU(s) needs: {est.need(row)}", row
    )
