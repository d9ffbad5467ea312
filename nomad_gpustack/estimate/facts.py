"""What the estimate needs to know about a model, taken from its headers: `ModelFacts`. Pure.

Two readers fill it: `from_gguf` (a GGUF header: llama.cpp's metadata keys and tensor infos) and
`from_config` (a Hugging Face `config.json` plus the weights' byte count from safetensors headers or
`model.safetensors.index.json`). The field names follow vLLM's `ModelConfig` where it has one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .gguf import GGUFHeader

# Activation dtypes of config.json (`torch_dtype`, or `dtype` since transformers 4.56) in bytes.
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8}
# Where config.json keeps the maximum length, in vLLM's order (vllm/config/model.py `_get_and_verify_max_len`).
_MAX_LEN_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
    "max_sequence_length", "max_seq_length", "seq_len",
)  # fmt: skip
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
# llama.cpp's sliding-window patterns for architectures whose GGUF does not carry one
# (src/llama-model.cpp: `hparams.set_swa_pattern(n)`: every n-th layer attends to the whole context).
_GGUF_SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4}
_LAYER = re.compile(r"blk\.(\d+)\.")


class ModelFactsError(ValueError):
    """The headers lack something the estimate cannot do without."""


@dataclass(frozen=True)
class GGUFLayout:
    """What llama.cpp's allocation depends on beyond the totals (how gguf-parser models it)."""

    layer_bytes: tuple[int, ...]  # bytes of each block's tensors (`blk.<i>.*`)
    input_bytes: int  # token embeddings: llama.cpp keeps them in host memory
    output_bytes: int  # output norm and head, on the GPU that runs the last layer (a copy of the embeddings when tied)
    tensor_count: int
    metadata_bytes: int  # the header itself
    last_layer: tuple[tuple[str, tuple[int, ...], int], ...]  # (name suffix, dims, bytes) of the last block
    output_rows: int  # rows of the output head (the vocabulary), for the logits buffer
    expert_used: int


@dataclass(frozen=True)
class ModelFacts:
    """The model's shape and size, as much as the estimate needs."""

    source: str  # what was read, for messages
    format: Literal["gguf", "safetensors"]
    architecture: str  # LlamaForCausalLM (config.json) or llama (GGUF)
    weight_bytes: int
    layers: int
    attention_heads: int
    kv_heads: tuple[int, ...]  # per layer (GGUF may vary them; config.json does not)
    key_dim: int  # per head
    value_dim: int
    hidden_size: int
    vocab_size: int
    max_context: int
    dtype_bytes: int  # the activation dtype, which vLLM's and SGLang's KV cache uses by default
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] = ()  # per layer: True when the layer attends to the window only
    mla_dim: int | None = None  # kv_lora_rank + qk_rope_head_dim: the one latent "head" MLA caches
    experts: int = 0
    multimodal: bool = False
    gguf: GGUFLayout | None = None

    @property
    def moe(self) -> bool:
        return self.experts > 0

    def is_sliding(self, layer: int) -> bool:
        return self.sliding_window is not None and layer < len(self.sliding_layers) and self.sliding_layers[layer]

    def to_json(self) -> dict[str, Any]:
        """The facts as a JSON document (what `nomadgs estimate --output json` shows under "model")."""
        kv = sorted(set(self.kv_heads))
        return {
            "source": self.source,
            "format": self.format,
            "architecture": self.architecture,
            "weight_bytes": self.weight_bytes,
            "layers": self.layers,
            "attention_heads": self.attention_heads,
            "kv_heads": kv[0] if len(kv) == 1 else list(self.kv_heads),
            "head_dim": self.key_dim,
            "max_context": self.max_context,
            "dtype_bytes": self.dtype_bytes,
            "sliding_window": self.sliding_window,
            "sliding_layers": sum(self.sliding_layers) if self.sliding_window else 0,
            "mla_dim": self.mla_dim,
            "experts": self.experts,
            "multimodal": self.multimodal,
        }


@dataclass(frozen=True)
class ModelLookup:
    """The outcome of looking for a model's metadata: its facts, or why there are none (said to the user)."""

    facts: ModelFacts | None
    reason: str | None = None  # why facts is None: "the Hugging Face Hub is unreachable: ..."
    unreachable: bool = False  # the reason is a network failure (exit 5 where the estimate is the point)


# --- config.json ---------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's settings: VL and omni models nest them (`text_config`, `llm_config`)."""
    merged = dict(config)
    for key in ("text_config", "llm_config", "language_config"):
        nested = config.get(key)
        if isinstance(nested, Mapping):
            merged.update(nested)
            break
    thinker = config.get("thinker_config")
    if isinstance(thinker, Mapping) and isinstance(thinker.get("text_config"), Mapping):
        merged.update(thinker["text_config"])
    return merged


def _max_length(text: Mapping[str, Any]) -> int | None:
    lengths = [v for k in _MAX_LEN_KEYS if (v := _int(text.get(k))) is not None]
    if not lengths:
        return None
    derived = min(lengths)
    # vLLM stretches the length by the RoPE scaling factor for these types (yarn from the original length).
    scaling = text.get("rope_scaling") or {}
    if isinstance(scaling, Mapping):
        kind = scaling.get("rope_type") or scaling.get("type")
        factor = scaling.get("factor")
        if kind in ("yarn", "dynamic", "linear") and isinstance(factor, int | float) and factor > 1:
            base = _int(scaling.get("original_max_position_embeddings")) if kind == "yarn" else None
            derived = int((base or derived) * factor)
    return derived


def _sliding(text: Mapping[str, Any], layers: int) -> tuple[int | None, tuple[bool, ...]]:
    window = _int(text.get("sliding_window"))
    if window is None or text.get("use_sliding_window") is False:
        return None, ()
    types = text.get("layer_types")
    if isinstance(types, Sequence) and not isinstance(types, str) and len(types) == layers:
        flags = tuple(t == "sliding_attention" for t in types)
    elif (pattern := _int(text.get("sliding_window_pattern"))) is not None:
        flags = tuple(i % pattern < pattern - 1 for i in range(layers))  # every pattern-th layer is global
    elif text.get("use_sliding_window") is True and (first := _int(text.get("max_window_layers"))) is not None:
        flags = tuple(i >= first for i in range(layers))  # Qwen2: layers from max_window_layers on
    else:
        flags = (True,) * layers  # Mistral 7B v0.1: every layer
    return (window, flags) if any(flags) else (None, ())


def from_config(config: Mapping[str, Any], weight_bytes: int, source: str) -> ModelFacts:
    """Facts from a Hugging Face config.json and the weights' size. Raises ModelFactsError."""
    text = _text_config(config)
    layers = _int(text.get("num_hidden_layers")) or _int(text.get("n_layer")) or _int(text.get("num_layers"))
    heads = _int(text.get("num_attention_heads")) or _int(text.get("n_head"))
    hidden = _int(text.get("hidden_size")) or _int(text.get("n_embd")) or _int(text.get("d_model"))
    missing = [k for k, v in (("num_hidden_layers", layers), ("num_attention_heads", heads)) if v is None]
    if missing:
        raise ModelFactsError(f"config.json has no {' or '.join(missing)}")
    assert layers is not None and heads is not None
    kv = _int(text.get("num_key_value_heads")) or (1 if text.get("multi_query") else heads)
    head_dim = _int(text.get("head_dim")) or (hidden // heads if hidden else None)
    if head_dim is None:
        raise ModelFactsError("config.json has neither head_dim nor hidden_size")
    max_context = _max_length(text)
    if max_context is None:
        raise ModelFactsError("config.json has no max_position_embeddings (or another maximum length)")
    dtype = str(text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or "bfloat16")
    lora, rope = _int(text.get("kv_lora_rank")), _int(text.get("qk_rope_head_dim"))
    window, flags = _sliding(text, layers)
    architectures = config.get("architectures") or text.get("architectures") or [config.get("model_type", "?")]
    return ModelFacts(
        source=source,
        format="safetensors",
        architecture=str(architectures[0]),
        weight_bytes=weight_bytes,
        layers=layers,
        attention_heads=heads,
        kv_heads=(kv,) * layers,
        key_dim=head_dim,
        value_dim=_int(text.get("v_head_dim")) or head_dim,
        hidden_size=hidden or heads * head_dim,
        vocab_size=_int(text.get("vocab_size")) or 0,
        max_context=max_context,
        dtype_bytes=_DTYPE_BYTES.get(dtype.replace("torch.", ""), 2),
        sliding_window=window,
        sliding_layers=flags,
        mla_dim=lora + rope if lora and rope else None,
        experts=next((n for k in _EXPERT_KEYS if (n := _int(text.get(k))) is not None), 0),
        multimodal=any(k in config for k in ("vision_config", "audio_config", "visual")),
    )


# --- GGUF --------------------------------------------------------------------------------------------


def _per_layer(value: Any, layers: int, default: int) -> tuple[int, ...]:
    if isinstance(value, list) and len(value) == layers:
        return tuple(int(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * layers
    return (default,) * layers


def _gguf_sliding(meta: Mapping[str, Any], arch: str, layers: int) -> tuple[int | None, tuple[bool, ...]]:
    window = _int(meta.get(f"{arch}.attention.sliding_window"))
    if window is None:
        return None, ()
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == layers:
        flags = tuple(bool(p) for p in pattern)
    else:
        n = _int(pattern) or _GGUF_SWA_PATTERNS.get(arch)
        if n is None:
            return None, ()  # no pattern we know: count every layer at full length, the safe side
        flags = tuple(i % n < n - 1 for i in range(layers))
    return (window, flags) if any(flags) else (None, ())


def from_gguf(header: GGUFHeader, source: str) -> ModelFacts:
    """Facts from a GGUF header. Raises ModelFactsError."""
    meta = header.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelFactsError("the GGUF header has no general.architecture")

    def key(name: str) -> Any:
        return meta.get(f"{arch}.{name}")

    layers = _int(key("block_count"))
    heads_value = key("attention.head_count")
    heads = max(heads_value) if isinstance(heads_value, list) and heads_value else _int(heads_value)
    embd = _int(key("embedding_length"))
    if layers is None or not heads or embd is None:
        raise ModelFactsError(f"the GGUF header lacks {arch}.block_count, .attention.head_count or .embedding_length")
    kv = _per_layer(key("attention.head_count_kv"), layers, heads)
    key_dim = _int(key("attention.key_length")) or embd // heads
    value_dim = _int(key("attention.value_length")) or key_dim
    vocab = header.array_lengths.get("tokenizer.ggml.tokens") or _int(key("vocab_size")) or 0
    lora, rope = _int(key("attention.kv_lora_rank")), _int(key("rope.dimension_count"))
    window, flags = _gguf_sliding(meta, arch, layers)

    layer_bytes = [0] * layers
    input_bytes = output_bytes = 0
    tied = True
    last: list[tuple[str, tuple[int, ...], int]] = []
    output_rows = vocab
    for t in header.tensors:
        match = _LAYER.match(t.name)
        if match and int(match.group(1)) < layers:
            index = int(match.group(1))
            layer_bytes[index] += t.nbytes
            if index == layers - 1:
                last.append((t.name[match.end() :], t.dims, t.nbytes))
        elif t.name.startswith(("token_", "position_")):
            input_bytes += t.nbytes
            if t.name == "token_embd.weight" and len(t.dims) > 1:
                output_rows = output_rows or t.dims[-1]
        else:  # output.weight, output_norm.*, rope factors, cls.*
            output_bytes += t.nbytes
            if t.name == "output.weight":
                tied = False
                output_rows = t.dims[-1] if len(t.dims) > 1 else output_rows
    if tied:
        output_bytes += input_bytes  # llama.cpp runs the head with a copy of the token embeddings
    return ModelFacts(
        source=source,
        format="gguf",
        architecture=arch,
        weight_bytes=header.tensor_bytes,
        layers=layers,
        attention_heads=heads,
        kv_heads=kv,
        key_dim=key_dim,
        value_dim=value_dim,
        hidden_size=embd,
        vocab_size=vocab,
        max_context=_int(key("context_length")) or 4096,
        dtype_bytes=2,
        sliding_window=window,
        sliding_layers=flags,
        mla_dim=lora + rope if lora and rope else None,
        experts=_int(key("expert_count")) or 0,
        gguf=GGUFLayout(
            layer_bytes=tuple(layer_bytes),
            input_bytes=input_bytes,
            output_bytes=output_bytes,
            tensor_count=len(header.tensors),
            metadata_bytes=header.data_offset,
            last_layer=tuple(last),
            output_rows=output_rows,
            expert_used=_int(key("expert_used_count")) or 0,
        ),
    )
