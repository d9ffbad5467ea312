"""GPU memory per GPU, engine by engine: weights, KV cache, overhead, and what the engine lets itself use. Pure.

Sources of the formulas and constants (see also the README's section on estimation):
- vLLM: `vllm/v1/kv_cache_interface.py` (page sizes, sliding-window bound, MLA), `ModelConfig.get_num_kv_heads`
  (`max(1, kv_heads // tp)`), `vllm/v1/core/kv_cache_utils.py::_check_enough_kv_cache_memory` (the refusal to
  start), `gpu_worker.py::determine_available_memory` (`total × gpu_memory_utilization − weights − peak
  activation − non-torch`); activation and non-torch constants measured by llm-d
  (llm-d-benchmark `config_explorer/capacity_planner.py`, H100, max_model_len 16000).
- SGLang: the default `--mem-fraction-static` as GPUStack ports it from SGLang's `server_args.py`
  (`gpustack/policies/candidate_selectors/sglang_resource_fit_selector.py::_cal_mem_fraction_static`).
- llama.cpp: gguf-parser-go `file_estimate__llamacpp.go` (`EstimateLLaMACppRun`), the estimator GPUStack runs.
- Every other backend: GPUStack's `estimate_model_vram` (`gpustack/policies/utils.py`): weights × 1.2 + 2 GiB
  (512 MiB for non-LLM models); `GPUSTACK_MODEL_VRAM_CLAIM` replaces any estimate, as in GPUStack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..sizes import GIB, MIB
from .engine import EngineSettings
from .facts import ModelFacts
from .ggml import BY_NAME, row_size

# --- vLLM ----------------------------------------------------------------------------------------------
VLLM_DEFAULT_GMU = 0.9  # vllm/engine/arg_utils.py: gpu_memory_utilization
VLLM_BLOCK_SIZE = 16  # default --block-size on CUDA
VLLM_BATCHED_TOKENS = 8192  # default max_num_batched_tokens of `vllm serve` (arg_utils.py `_set_default_args`)
VLLM_FP8_DS_MLA_BYTES = 656  # bytes per token and layer of the fp8_ds_mla cache (kv_cache_interface.py)
# Peak activation (GiB) of vLLM's profiling run by architecture, then by kind (llm-d capacity_planner.py:
# VALIDATED_ACTIVATION_PROFILES; ACTIVATION_MEMORY_BASE_{DENSE,MOE,MULTIMODAL}_GIB).
ACTIVATION_GIB_BY_ARCHITECTURE = {
    "LlamaForCausalLM": 4.8, "llama": 4.8,
    "Qwen2ForCausalLM": 5.6, "Qwen3ForCausalLM": 5.6, "qwen2": 5.6, "qwen3": 5.6,
    "PixtralForConditionalGeneration": 2.5, "Mistral3ForConditionalGeneration": 2.5,
}  # fmt: skip
ACTIVATION_GIB_DENSE = 5.5
ACTIVATION_GIB_MOE = 8.0
ACTIVATION_GIB_MULTIMODAL = 2.5
NON_TORCH_GIB_TP1 = 0.15  # CUDA context and friends (llm-d: VLLM_NON_TORCH_MEMORY_TP1_GIB)
NON_TORCH_GIB_TPN = 0.6  # with NCCL for tp >= 2 (VLLM_NON_TORCH_MEMORY_TPN_GIB)

# --- SGLang ------------------------------------------------------------------------------------------
SGLANG_UNKNOWN_GPU_FRACTION = 0.88  # GPUStack's value when the GPU's size is unknown

# --- llama.cpp (gguf-parser) -------------------------------------------------------------------------
LLAMACPP_PLATFORM_VRAM = 500 * MIB  # GPUStack passes --platform-footprint 150,500 (MiB RAM, MiB VRAM)
LLAMACPP_BATCH = 2048  # -b
LLAMACPP_UBATCH = 512  # -ub
# llama.cpp pads the context to 256 cells, flash attention or not (its log: `-c 1000` gives 1024 cells);
# gguf-parser still pads to 32 without flash attention, as older llama.cpp did.
LLAMACPP_CONTEXT_PAD = 256

# --- GPUStack's default rule --------------------------------------------------------------------------
GPUSTACK_ACTIVATION_FACTOR = 1.2  # EleutherAI "transformer math": 20 % inference overhead
GPUSTACK_LLM_OVERHEAD = 2 * GIB  # "CUDA graphs can take additional 1~3 GiB"
GPUSTACK_OTHER_OVERHEAD = 512 * MIB  # non-LLM categories (embedding, reranker, ...)

_FP8 = ("fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class GpuFigures:
    """One GPU's share of one replica running on `gpus` GPUs on each of `nodes` nodes (bytes)."""

    gpus: int  # per node: what nomad.gpus says
    weights: int
    kv_per_token: int  # per GPU, every layer counted at full length
    kv_context: int  # per GPU, for one sequence of the full context (the whole context for llama.cpp)
    overhead: int  # activations, CUDA graphs, runtime, buffers: the engine's part beyond weights and KV
    total: int  # weights + kv_context + overhead: what one GPU must hold
    min_gpu_memory: int  # the smallest GPU on which the engine starts with one full-length sequence
    usable: int | None = None  # what the engine lets itself use of the stated GPU; None: no GPU stated
    starts: bool | None = None  # whether the engine starts on the stated GPU (what refuses a deployment)
    sequences: int | None = None  # full-length sequences whose KV cache fits at once
    max_context: int | None = None  # the longest context that starts on the stated GPU
    nodes: int = 1  # the replica's nodes (nomad.nodes): it runs on gpus × nodes GPUs

    @property
    def fits(self) -> bool | None:
        """Starts, with at least one full-length sequence."""
        if self.starts is None:
            return None
        return self.starts and (self.sequences is None or self.sequences >= 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": self.gpus,
            "weights": self.weights,
            "kv_per_token": self.kv_per_token,
            "kv_at_context": self.kv_context,
            "overhead": self.overhead,
            "total": self.total,
            "min_gpu_memory": self.min_gpu_memory,
            "usable": self.usable,
            "fits": self.fits,
            "sequences": self.sequences,
            "max_context": self.max_context,
            "nodes": self.nodes,
            "per_node": self.total * self.gpus,
        }


# --- KV cache: vLLM and SGLang ---------------------------------------------------------------------------


def kv_dtype_bytes(facts: ModelFacts, setting: str | None) -> int:
    """Bytes per cached value: "auto" (the default) is the model's dtype; fp8 variants take one byte."""
    if setting and (setting.startswith("fp8") or setting in _FP8):
        return 1
    if setting in ("bf16", "bfloat16", "fp16", "float16", "half"):
        return 2
    if setting in ("fp32", "float32", "float"):
        return 4
    return facts.dtype_bytes


def _layer_token_bytes(facts: ModelFacts, layer: int, tp: int, dtype: int, setting: str | None) -> int:
    """Bytes one token takes in one layer's cache on one GPU (vLLM's page size / block size)."""
    if facts.mla_dim:  # one latent head, replicated on every rank
        return VLLM_FP8_DS_MLA_BYTES if setting == "fp8_ds_mla" else facts.mla_dim * dtype
    heads = max(1, facts.kv_heads[layer] // tp)  # KV heads are replicated, not split, when tp > kv_heads
    return heads * (facts.key_dim + facts.value_dim) * dtype


def _rank_layers(facts: ModelFacts, pp: int) -> range:
    """The layers of the first pipeline stage (`layers // pp`, the rest go to the last stages)."""
    return range(max(1, facts.layers // pp))


def kv_per_token(facts: ModelFacts, tp: int, pp: int = 1, setting: str | None = None) -> int:
    """KV bytes per token per GPU, every layer at full length:
    `(layers / pp) × 2 × max(1, kv_heads // tp) × head_dim × kv_dtype_bytes` (MLA: one latent head)."""
    dtype = kv_dtype_bytes(facts, setting)
    return sum(_layer_token_bytes(facts, i, tp, dtype, setting) for i in _rank_layers(facts, pp))


def kv_for_length(
    facts: ModelFacts,
    tp: int,
    length: int,
    *,
    pp: int = 1,
    setting: str | None = None,
    block: int = 1,
    batched: int = VLLM_BATCHED_TOKENS,
) -> int:
    """KV bytes per GPU for one sequence of `length` tokens, in blocks of `block` tokens; a sliding-window
    layer keeps `min(window − 1 + batched, length)` tokens plus one block (vLLM's SlidingWindowSpec)."""
    dtype = kv_dtype_bytes(facts, setting)
    full = math.ceil(length / block) * block
    total = 0
    for i in _rank_layers(facts, pp):
        per_token = _layer_token_bytes(facts, i, tp, dtype, setting)
        if facts.is_sliding(i) and facts.sliding_window:
            kept = min(facts.sliding_window - 1 + batched, length)
            tokens = min(full, (math.ceil(kept / block) + (1 if block > 1 else 0)) * block)
        else:
            tokens = full
        total += tokens * per_token
    return total


def _longest(fits: Any, upper: int) -> int:
    """The largest n in [0, upper] with fits(n) (fits is monotone: true, then false)."""
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# --- vLLM ------------------------------------------------------------------------------------------------


def vllm_activation(facts: ModelFacts) -> int:
    """Peak activation memory of vLLM's profiling run (constant in max_model_len, per llm-d's measurements).

    Counted on every GPU: each worker profiles its own peak (llm-d subtracts it once per replica)."""
    if facts.moe:  # before the architecture: a Mixtral GGUF says "llama"
        return int(ACTIVATION_GIB_MOE * GIB)
    gib = ACTIVATION_GIB_BY_ARCHITECTURE.get(facts.architecture)
    if gib is None:
        gib = ACTIVATION_GIB_MULTIMODAL if facts.multimodal else ACTIVATION_GIB_DENSE
    return int(gib * GIB)


def vllm_non_torch(tp: int) -> int:
    return int((NON_TORCH_GIB_TP1 if tp == 1 else NON_TORCH_GIB_TPN) * GIB)


def vllm(facts: ModelFacts, s: EngineSettings, context: int, gpus: int, gpu: int | None) -> GpuFigures:
    """vLLM: it reserves `gpu × gpu_memory_utilization`, and refuses to start unless the KV cache of one
    sequence of --max-model-len fits in what weights, peak activation and non-torch memory leave."""
    gmu = s.gpu_memory_utilization or VLLM_DEFAULT_GMU
    pp = s.pipeline_parallel
    tp = max(1, gpus // pp)
    batched = s.max_num_batched_tokens or VLLM_BATCHED_TOKENS
    weights = math.ceil(facts.weight_bytes / (tp * pp))
    overhead = vllm_activation(facts) + vllm_non_torch(tp)

    def kv(length: int) -> int:
        return kv_for_length(facts, tp, length, pp=pp, setting=s.kv_cache_dtype, block=VLLM_BLOCK_SIZE, batched=batched)

    kv_context = kv(context)
    total = weights + kv_context + overhead
    figures = GpuFigures(
        gpus=gpus,
        weights=weights,
        kv_per_token=kv_per_token(facts, tp, pp, s.kv_cache_dtype),
        kv_context=kv_context,
        overhead=overhead,
        total=total,
        min_gpu_memory=math.ceil(total / gmu),
    )
    if gpu is None:
        return figures
    usable = math.ceil(gpu * gmu)
    free = usable - weights - overhead
    sequences = max(0, free // kv_context) if kv_context and free > 0 else 0
    longest = _longest(lambda n: kv(n) <= free, context) if free > 0 else 0
    return _with(figures, usable=usable, starts=sequences >= 1, sequences=sequences, max_context=longest)


# --- SGLang ----------------------------------------------------------------------------------------------


def sglang_mem_fraction(gpu: int | None, tp: int, pp: int = 1) -> float:
    """SGLang's default --mem-fraction-static for a GPU of `gpu` bytes (GPUStack's port of server_args.py)."""
    if gpu is None:
        return SGLANG_UNKNOWN_GPU_FRACTION
    mib = gpu / MIB
    wide = tp >= 4
    if mib < 20 * 1024:
        chunked, graphs = 2048, 8
    elif mib < 35 * 1024:
        chunked, graphs = 2048, 80 if wide else 24
    elif mib < 60 * 1024:
        chunked, graphs = 4096, 160 if wide else 32
    elif mib < 160 * 1024:
        chunked, graphs = 8192, 512 if wide else 256
    else:
        chunked, graphs = 16384, 512
    reserved = 512 + max(chunked, 2048) * 1.5 + graphs * 2 + tp * pp / 8 * 1024
    if mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((mib - reserved) / mib, 3)


def sglang(facts: ModelFacts, s: EngineSettings, context: int, gpus: int, gpu: int | None) -> GpuFigures:
    """SGLang: weights and the KV pool share `gpu × mem_fraction_static`; it refuses to start when nothing is
    left for the pool, and serves shorter requests when one full-length sequence does not fit."""
    pp = s.pipeline_parallel
    tp = max(1, gpus // pp)
    weights = math.ceil(facts.weight_bytes / (tp * pp))
    kv_context = kv_for_length(facts, tp, context, pp=pp, setting=s.kv_cache_dtype)
    static = weights + kv_context

    def fraction(size: int | None) -> float:
        return s.mem_fraction_static or sglang_mem_fraction(size, tp, pp)

    minimum = _smallest_gpu(lambda size: size * fraction(size) >= static, static)
    size = gpu if gpu is not None else minimum
    overhead = math.ceil(size * (1 - fraction(size)))
    figures = GpuFigures(
        gpus=gpus,
        weights=weights,
        kv_per_token=kv_per_token(facts, tp, pp, s.kv_cache_dtype),
        kv_context=kv_context,
        overhead=overhead,
        total=weights + kv_context + overhead,
        min_gpu_memory=minimum,
    )
    if gpu is None:
        return figures
    usable = int(gpu * fraction(gpu))
    pool = usable - weights
    sequences = max(0, pool // kv_context) if kv_context and pool > 0 else 0
    longest = _longest(lambda n: kv_for_length(facts, tp, n, pp=pp, setting=s.kv_cache_dtype) <= pool, context)
    return _with(figures, usable=usable, starts=pool > 0, sequences=sequences, max_context=longest if pool > 0 else 0)


def _smallest_gpu(enough: Any, at_least: int) -> int:
    """The smallest GPU size, in MiB steps, for which `enough(size)` holds (sizes up to 64 × the need)."""
    lo, hi = max(1, at_least // MIB), max(2, 64 * at_least // MIB + 1024)
    while lo < hi:
        mid = (lo + hi) // 2
        if enough(mid * MIB):
            hi = mid
        else:
            lo = mid + 1
    return lo * MIB


# --- llama.cpp (gguf-parser's model of its allocation) ------------------------------------------------


def _cache_type(setting: str | None) -> int:
    return BY_NAME.get(setting or "f16", BY_NAME["f16"])


@dataclass(frozen=True)
class _LlamaDevice:
    layers: list[int]
    output: bool


def _llama_devices(layers: int, offloaded: int, output: bool, gpus: int) -> list[_LlamaDevice]:
    """Layers per GPU as gguf-parser splits them: the last `offloaded` layers, evenly, the output with the last."""
    devices = [_LlamaDevice([], False) for _ in range(gpus)]
    actual = offloaded + (1 if output else 0)
    start = layers - offloaded
    bounds = [(j + 1) / gpus for j in range(gpus)]
    for i in range(start, layers):
        x = (i - start) / actual
        j = next((k for k, b in enumerate(bounds) if x < b), gpus - 1)
        devices[j].layers.append(i)
    if output:
        last = next((k for k in range(gpus - 1, -1, -1) if devices[k].layers), gpus - 1)
        devices[last] = _LlamaDevice(devices[last].layers, True)
    return devices


def llamacpp_kv(facts: ModelFacts, s: EngineSettings, context: int, layers: list[int]) -> int:
    """KV bytes of `layers` as llama.cpp allocates them: `layers × (K_row + V_row)` over the padded context;
    sliding-window layers keep `min(ctx, pad(window × n_seq + batch))` cells."""
    flash = s.flash_attention is not False
    align = LLAMACPP_CONTEXT_PAD
    cells = _pad(context, align)
    k_type = _cache_type(s.cache_type_k)
    v_type = _cache_type(s.cache_type_v)
    if not flash and s.cache_type_v and s.cache_type_v not in ("f16", "f32", "bf16"):
        v_type = BY_NAME["f16"]  # llama.cpp falls back to f16 V without flash attention
    window_cells = cells
    if facts.sliding_window:
        batch = s.batch or LLAMACPP_BATCH
        window_cells = min(cells, _pad(facts.sliding_window * max(1, s.parallel or 1) + batch, align))
    total = 0
    for i in layers:
        n = window_cells if facts.is_sliding(i) else cells
        heads = facts.kv_heads[i]
        total += row_size(k_type, facts.key_dim * heads * n) + row_size(v_type, facts.value_dim * heads * n)
    return total


def _llama_compute(facts: ModelFacts, s: EngineSettings, cells: int, gpus: int) -> int:
    """Scratch of the largest layer and the inputs (gguf-parser: Computation.Input + Compute, per GPU)."""
    layout = facts.gguf
    assert layout is not None
    flash = s.flash_attention is not False
    tokens = min(cells, s.ubatch or LLAMACPP_UBATCH)
    f32, f16 = BY_NAME["f32"], BY_NAME["f16"]
    inputs = row_size(f32, facts.hidden_size * tokens) + 4 * tokens + row_size(f32, cells * tokens)
    if gpus > 1:
        inputs *= 2 if facts.moe else 4
    kv_heads = max(facts.kv_heads)
    one_layer = row_size(_cache_type(s.cache_type_k), facts.key_dim * cells * kv_heads) + row_size(
        _cache_type(s.cache_type_v), facts.value_dim * cells * kv_heads
    )
    attention = row_size(f16, cells * tokens) + one_layer if flash else 0
    ffn = 0
    for suffix, dims, nbytes in layout.last_layer:
        last = dims[-1] if dims else 0
        kind = suffix.rsplit(".", 1)[0]
        if kind == "attn_norm":
            attention += row_size(f32, last * tokens)
        elif kind in ("attn_q", "attn_qkv", "attn_q_b"):
            if flash:
                attention += nbytes
            else:
                width = dims[0] if kind != "attn_q_b" else last
                attention += 2 * row_size(f32, width * tokens) + row_size(f32, cells * tokens * facts.attention_heads)
                if kind == "attn_qkv":
                    attention += row_size(f32, facts.hidden_size * facts.hidden_size * 3)
        if kind in ("attn_norm", "ffn_norm", "ffn_gate", "ffn_up"):
            ffn += row_size(f32, last * tokens)
    if facts.experts:
        ffn += 4 * (facts.experts * facts.hidden_size + facts.experts * tokens)
        ffn += 4 * facts.hidden_size * max(1, layout.expert_used) * tokens
    return inputs + max(attention, ffn)


def llamacpp(facts: ModelFacts, s: EngineSettings, context: int, gpus: int, gpu: int | None) -> GpuFigures:
    """llama.cpp with its layers split over `gpus` GPUs (split mode layer): per GPU, the platform footprint,
    its layers' weights and KV, the compute buffers, and on the last GPU the output head and logits."""
    layout = facts.gguf
    if layout is None:  # a safetensors model cannot run on llama.cpp; keep the figures honest anyway
        return other(facts, s, context, gpus, gpu)
    offloaded = facts.layers if s.gpu_layers is None or s.gpu_layers < 0 else min(s.gpu_layers, facts.layers)
    output = s.gpu_layers is None or s.gpu_layers < 0 or s.gpu_layers > facts.layers
    cells = _pad(context, LLAMACPP_CONTEXT_PAD)
    compute = _llama_compute(facts, s, cells, gpus)
    tokens = min(cells, s.ubatch or LLAMACPP_UBATCH)
    worst: tuple[int, int, int, int] = (0, 0, 0, 0)
    for device in _llama_devices(facts.layers, offloaded, output, gpus):
        weights = sum(layout.layer_bytes[i] for i in device.layers)
        kv = llamacpp_kv(facts, s, context, device.layers)
        overhead = LLAMACPP_PLATFORM_VRAM + compute
        if device.output:
            weights += layout.output_bytes
            logits = (facts.hidden_size + layout.output_rows) * tokens * 4
            overhead += logits + 4 * tokens * (facts.hidden_size + layout.output_rows)
        total = weights + kv + overhead
        if total > worst[0]:
            worst = (total, weights, kv, overhead)
    total, weights, kv, overhead = worst
    per_token = llamacpp_kv(facts, s, 256, list(range(facts.layers))) // 256 // max(1, gpus)
    figures = GpuFigures(
        gpus=gpus,
        weights=weights,
        kv_per_token=per_token,
        kv_context=kv,
        overhead=overhead,
        total=total,
        min_gpu_memory=total,
    )
    if gpu is None:
        return figures
    starts = total <= gpu
    room = gpu - (total - kv)
    longest = _longest(lambda n: llamacpp_kv(facts, s, n, list(range(facts.layers))) // gpus <= room, context)
    return _with(figures, usable=gpu, starts=starts, sequences=1 if starts else 0, max_context=longest)


# --- every other backend: GPUStack's rule -------------------------------------------------------------


def gpustack_claim(weight_bytes: int, llm: bool) -> int:
    """GPUStack's `estimate_model_vram`: `int(weights × 1.2) + 2 GiB` (512 MiB for non-LLM models)."""
    return int(weight_bytes * GPUSTACK_ACTIVATION_FACTOR) + (GPUSTACK_LLM_OVERHEAD if llm else GPUSTACK_OTHER_OVERHEAD)


def other(facts: ModelFacts, s: EngineSettings, context: int, gpus: int, gpu: int | None) -> GpuFigures:
    """GPUStack's default rule, spread evenly over the GPUs (it has no KV term)."""
    claim = gpustack_claim(facts.weight_bytes, s.llm)
    per_gpu = math.ceil(claim / gpus)
    weights = math.ceil(facts.weight_bytes / gpus)
    figures = GpuFigures(
        gpus=gpus, weights=weights, kv_per_token=0, kv_context=0, overhead=per_gpu - weights, total=per_gpu,
        min_gpu_memory=per_gpu,
    )  # fmt: skip
    if gpu is None:
        return figures
    return _with(figures, usable=gpu, starts=per_gpu <= gpu)


def claimed(facts: ModelFacts, s: EngineSettings, gpus: int, gpu: int | None, usable_fraction: float) -> GpuFigures:
    """GPUSTACK_MODEL_VRAM_CLAIM: the deployment states the replica's need; it is split evenly."""
    assert s.vram_claim is not None
    per_gpu = math.ceil(s.vram_claim / gpus)
    weights = math.ceil(facts.weight_bytes / gpus)
    figures = GpuFigures(
        gpus=gpus, weights=weights, kv_per_token=0, kv_context=0, overhead=max(0, per_gpu - weights),
        total=per_gpu, min_gpu_memory=math.ceil(per_gpu / usable_fraction),
    )  # fmt: skip
    if gpu is None:
        return figures
    usable = int(gpu * usable_fraction)
    return _with(figures, usable=usable, starts=per_gpu <= usable)


def _with(f: GpuFigures, **changes: Any) -> GpuFigures:
    return replace(f, **changes)


def figures_for(facts: ModelFacts, s: EngineSettings, context: int, gpus: int, gpu: int | None) -> GpuFigures:
    """One GPU's figures for the deployment's engine on `gpus` GPUs of `gpu` bytes (None: size not known)."""
    if s.vram_claim is not None:
        fraction = 1.0
        if s.engine == "vllm":
            fraction = s.gpu_memory_utilization or VLLM_DEFAULT_GMU
        elif s.engine == "sglang":
            fraction = s.mem_fraction_static or sglang_mem_fraction(gpu, gpus)
        return claimed(facts, s, gpus, gpu, fraction)
    rule = {"vllm": vllm, "sglang": sglang, "llama.cpp": llamacpp}.get(s.engine, other)
    return rule(facts, s, context, gpus, gpu)
