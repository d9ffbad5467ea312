"""The engine a deployment runs, and those of its settings that change how much GPU memory it takes. Pure.

Read from the deployment's own `backend_parameters` (the flags each engine documents), its `env`
(`GPUSTACK_MODEL_VRAM_CLAIM`, as GPUStack reads it) and its `categories`, never from the compiled job, so
the estimate can run before the compiler knows how many GPUs to use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Engine = Literal["vllm", "sglang", "llama.cpp", "other"]

ENGINE_NAMES: dict[str, Engine] = {
    "vllm": "vllm",
    "sglang": "sglang",
    "llama.cpp": "llama.cpp",
    "llama-box": "llama.cpp",
}
VRAM_CLAIM_ENV = "GPUSTACK_MODEL_VRAM_CLAIM"  # bytes; GPUStack's override of its own estimate
# vLLM starts with a --max-model-len longer than the model's only with this set (vllm/envs.py: "1" or "true").
VLLM_LONG_CONTEXT_ENV = "VLLM_ALLOW_LONG_MAX_MODEL_LEN"

# The flags that set each value, per engine (their --help; GPUStack's selectors read the same ones).
_CONTEXT = {
    "vllm": ("--max-model-len",),
    "sglang": ("--context-length",),
    "llama.cpp": ("--ctx-size", "-c"),
}
_FLAGS: dict[str, tuple[str, ...]] = {
    "gmu": ("--gpu-memory-utilization",),
    "mfs": ("--mem-fraction-static",),
    "kv_dtype": ("--kv-cache-dtype",),
    "pp": ("--pipeline-parallel-size", "-pp", "--pp-size", "--pp"),
    "batched": ("--max-num-batched-tokens", "--chunked-prefill-size"),
    "cache_k": ("--cache-type-k", "-ctk"),
    "cache_v": ("--cache-type-v", "-ctv"),
    "flash": ("--flash-attn", "-fa"),
    "batch": ("--batch-size", "-b"),
    "ubatch": ("--ubatch-size", "-ub"),
    "parallel": ("--parallel", "-np"),
    "gpu_layers": ("--gpu-layers", "--n-gpu-layers", "-ngl"),
}
_BARE_FLASH = ("--flash-attn", "-fa")  # older llama.cpp: a bare flag meant "on"


def _is_flag(token: str) -> bool:
    return token.startswith("--") or (token.startswith("-") and token[1:2].isalpha())


def _human_int(text: str) -> int | None:
    """vLLM's `human_readable_int` for --max-model-len: 32k = 32000, 32K = 32768 (k/m/g decimal, K/M/G binary)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgKMG])", text.strip())
    if not match:
        return None
    number, unit = match.groups()
    factor = {"k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}[unit]
    return int(float(number) * factor)


def engine_of(backend_name: str) -> Engine:
    """vLLM, SGLang and llama.cpp have rules of their own; every other backend gets GPUStack's default rule."""
    return ENGINE_NAMES.get(backend_name.lower(), "other")


@dataclass(frozen=True)
class EngineSettings:
    """The deployment's memory-relevant settings; None: the engine's default."""

    engine: Engine
    backend: str  # the backend's name as the catalog spells it
    context: int | None = None
    context_flag: str | None = None
    gpu_memory_utilization: float | None = None
    mem_fraction_static: float | None = None
    kv_cache_dtype: str | None = None
    pipeline_parallel: int = 1
    max_num_batched_tokens: int | None = None
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    flash_attention: bool | None = None
    batch: int | None = None
    ubatch: int | None = None
    parallel: int | None = None
    gpu_layers: int | None = None
    vram_claim: int | None = None
    allow_long_context: bool = False  # VLLM_ALLOW_LONG_MAX_MODEL_LEN
    llm: bool = True
    problems: tuple[str, ...] = field(default=())  # flags whose values could not be read

    @property
    def context_name(self) -> str:
        """The flag that sets the context of this engine, for messages."""
        return _CONTEXT.get(self.engine, ("the context length",))[0]


def _values(tokens: Sequence[str]) -> dict[str, str | None]:
    """The last value of each flag (`--x v`, `--x=v`; None for a bare flag), as argparse keeps the last."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-"):
            continue
        key, eq, value = token.partition("=")
        if eq:
            out[key] = value
        elif i < len(tokens) and not _is_flag(tokens[i]):
            out[key] = tokens[i]
            i += 1
        else:
            out[key] = None
    return out


def engine_settings(
    backend: str,
    parameters: Sequence[str],
    env: Mapping[str, str] | None = None,
    categories: Sequence[str] = (),
) -> EngineSettings:
    """The settings of a deployment: its backend's name, its backend_parameters as argv tokens, env, categories."""
    engine = engine_of(backend)
    values = _values(parameters)
    problems: list[str] = []

    def find(names: Sequence[str]) -> tuple[str, str | None] | None:
        for name in names:
            if name in values:
                return name, values[name]
        return None

    def number(convert: type[int] | type[float], names: Sequence[str]) -> int | float | None:
        found = find(names)
        if found is None or found[1] is None:
            return None
        flag, text = found[0], str(found[1])
        try:
            value = convert(text)
        except ValueError:
            problems.append(f"{flag} {text} is not a number")
            return None
        return value

    context: int | None = None
    context_flag: str | None = None
    if engine in _CONTEXT:
        found = find(_CONTEXT[engine])
        if found is not None:
            context_flag = found[0]
            value: int | float | None = _human_int(found[1]) if engine == "vllm" and found[1] else None
            if value is None:
                value = number(int, (found[0],))
            context = int(value) if value is not None and value > 0 else None  # 0: the model's own (llama.cpp)

    flash: bool | None = None
    flash_found = find(_FLAGS["flash"])
    if flash_found is not None:
        text = (flash_found[1] or "on").lower()
        flash = None if text == "auto" else text in ("on", "1", "true", "yes")

    claim: int | None = None
    raw_claim = (env or {}).get(VRAM_CLAIM_ENV)
    if raw_claim is not None:
        try:
            claim = int(raw_claim)
        except ValueError:
            problems.append(f"{VRAM_CLAIM_ENV}={raw_claim} is not a number of bytes")

    def text_of(key: str) -> str | None:
        found = find(_FLAGS[key])
        return found[1].lower() if found and found[1] else None

    def int_of(key: str) -> int | None:
        value = number(int, _FLAGS[key])
        return int(value) if value is not None else None

    def float_of(key: str) -> float | None:
        value = number(float, _FLAGS[key])
        return float(value) if value is not None else None

    return EngineSettings(
        engine=engine,
        backend=backend,
        context=context,
        context_flag=context_flag,
        gpu_memory_utilization=float_of("gmu"),
        mem_fraction_static=float_of("mfs"),
        kv_cache_dtype=text_of("kv_dtype"),
        pipeline_parallel=max(1, int_of("pp") or 1),
        max_num_batched_tokens=int_of("batched"),
        cache_type_k=text_of("cache_k"),
        cache_type_v=text_of("cache_v"),
        flash_attention=flash,
        batch=int_of("batch"),
        ubatch=int_of("ubatch"),
        parallel=int_of("parallel"),
        gpu_layers=int_of("gpu_layers"),
        vram_claim=claim,
        allow_long_context=(env or {}).get(VLLM_LONG_CONTEXT_ENV, "0").strip().lower() in ("1", "true"),
        llm=not categories or "llm" in {c.lower() for c in categories},  # GPUStack's is_llm_model
        problems=tuple(problems),
    )
