"""What the estimate needs to know about a model, taken from its headers: `ModelFacts`. Pure.

Two readers fill it: `from_gguf` (a GGUF header: llama.cpp's metadata keys and tensor infos) and
`from_config` (a Hugging Face `config.json` plus the weights' byte count from safetensors headers or
`model.safetensors.index.json`). The field names follow vLLM's `ModelConfig` where it has one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import EstimateError
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


class ModelFactsError(EstimateError):
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


# --- reading header values: every value of the wrong kind is refused, never skipped ------------------------


def _kind(value: Any) -> str:
    """A value as a message shows it: `the text "8"`, `true`, `a list`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'the text "{value[:40]}"'
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return str(value)


class _Values:
    """The values of one header (config.json, a GGUF's metadata), read as the estimate needs them.

    A key that is absent (or null) is None; a key of the wrong kind is an error that names it. A number
    written as text ("8") is refused, not read: the engines do not read it either (vLLM's arithmetic on
    `"num_key_value_heads": "8"` fails), and skipping it would silently use a default instead (4× the KV cache).
    """

    def __init__(self, values: Mapping[str, Any], where: str) -> None:
        self.values = values
        self.where = where

    def wrong(self, key: str, expected: str, fix: str = "") -> ModelFactsError:
        value = self.values.get(key)
        hint = f" ({fix})" if fix else ""
        return ModelFactsError(f"{self.where}: {key} is {_kind(value)}, where {expected} belongs{hint}")

    def whole(self, key: str) -> int | None:
        """A whole number (4096, or 4096.0: JSON does not tell them apart)."""
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            fix = f"write {value.strip()}, without quotes" if isinstance(value, str) and value.strip().isdigit() else ""
            raise self.wrong(key, "a whole number", fix)
        return value

    def count(self, key: str) -> int | None:
        """A count or a size of the model's shape: more than zero."""
        value = self.whole(key)
        if value is not None and value <= 0:
            raise self.wrong(key, "a number above zero")
        return value

    def option(self, key: str) -> int | None:
        """A count where zero (or less) means "none": a sliding window, experts, a latent rank."""
        value = self.whole(key)
        return value if value is not None and value > 0 else None

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong(key, "a number")
        return float(value)

    def flag(self, key: str) -> bool | None:
        value = self.values.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.wrong(key, "true or false")
        return value

    def text(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is not None and not isinstance(value, str):
            raise self.wrong(key, "text")
        return value

    def texts(self, key: str) -> list[str] | None:
        value = self.values.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.wrong(key, "a list of names")
        return value

    def mapping(self, key: str) -> Mapping[str, Any] | None:
        value = self.values.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise self.wrong(key, "an object")
        return value

    def per_layer(self, key: str, layers: int) -> tuple[int, ...] | None:
        """A whole number for every layer: one for all of them, or a list with one per layer."""
        value = self.values.get(key)
        if isinstance(value, list):
            if len(value) != layers or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                raise self.wrong(key, f"one whole number, or a list of {layers} (one per layer)")
            return tuple(value)
        count = self.whole(key)  # zero is a layer without attention (a recurrent one), as a list may say too
        if count is not None and count < 0:
            raise self.wrong(key, "a number of zero or more")
        return None if count is None else (count,) * layers


# --- config.json ---------------------------------------------------------------------------------------


def _text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's settings: VL and omni models nest them (`text_config`, `llm_config`)."""
    top = _Values(config, "config.json")
    merged = dict(config)
    for key in ("text_config", "llm_config", "language_config"):
        nested = top.mapping(key)
        if nested is not None:
            merged.update(nested)
            break
    thinker = top.mapping("thinker_config")
    if thinker is not None:
        nested = _Values(thinker, "config.json: thinker_config").mapping("text_config")
        merged.update(nested or {})
    return merged


def _max_length(text: _Values) -> int | None:
    lengths = [v for k in _MAX_LEN_KEYS if (v := text.count(k)) is not None]
    if not lengths:
        return None
    derived = min(lengths)
    # vLLM stretches the length by the RoPE scaling factor for these types (yarn from the original length).
    scaling = text.mapping("rope_scaling")
    if scaling is not None:
        rope = _Values(scaling, "config.json: rope_scaling")
        kind = rope.text("rope_type") or rope.text("type")
        factor = rope.number("factor")
        if kind in ("yarn", "dynamic", "linear") and factor is not None and factor > 1:
            base = rope.count("original_max_position_embeddings") if kind == "yarn" else None
            derived = int((base or derived) * factor)
    return derived


def _sliding(text: _Values, layers: int) -> tuple[int | None, tuple[bool, ...]]:
    window = text.option("sliding_window")
    use = text.flag("use_sliding_window")
    if window is None or use is False:
        return None, ()
    types = text.texts("layer_types")
    if types is not None and len(types) != layers:
        raise text.wrong("layer_types", f"a list of {layers} layer types (one per layer)")
    if types is not None:
        flags = tuple(t == "sliding_attention" for t in types)
    elif (pattern := text.option("sliding_window_pattern")) is not None:
        flags = tuple(i % pattern < pattern - 1 for i in range(layers))  # every pattern-th layer is global
    elif use is True and (first := text.option("max_window_layers")) is not None:
        flags = tuple(i >= first for i in range(layers))  # Qwen2: layers from max_window_layers on
    else:
        flags = (True,) * layers  # Mistral 7B v0.1: every layer
    return (window, flags) if any(flags) else (None, ())


def _first(text: _Values, *keys: str) -> int | None:
    """The first of `keys` that is set (n_layer is GPT-2's num_hidden_layers)."""
    return next((v for k in keys if (v := text.count(k)) is not None), None)


def config_object(config: Any) -> Mapping[str, Any]:
    """config.json's parsed JSON, which must be an object. Raises ModelFactsError."""
    if not isinstance(config, Mapping):
        raise ModelFactsError(f"config.json is not a JSON object (it holds {_kind(config)})")
    return config


def from_config(config: Any, weight_bytes: int, source: str) -> ModelFacts:
    """Facts from a Hugging Face config.json and the weights' size. Raises ModelFactsError."""
    config = config_object(config)
    text = _Values(_text_config(config), "config.json")
    layers = _first(text, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(text, "num_attention_heads", "n_head")
    hidden = _first(text, "hidden_size", "n_embd", "d_model")
    missing = [k for k, v in (("num_hidden_layers", layers), ("num_attention_heads", heads)) if v is None]
    if missing:
        raise ModelFactsError(f"config.json has no {' or '.join(missing)}")
    assert layers is not None and heads is not None
    kv = text.count("num_key_value_heads") or (1 if text.flag("multi_query") else heads)
    head_dim = text.count("head_dim") or (hidden // heads if hidden else None)
    if head_dim is None:
        raise ModelFactsError("config.json has neither head_dim nor hidden_size")
    max_context = _max_length(text)
    if max_context is None:
        raise ModelFactsError("config.json has no max_position_embeddings (or another maximum length)")
    top = _Values(config, "config.json")
    dtype = text.text("torch_dtype") or text.text("dtype") or top.text("torch_dtype") or "bfloat16"
    lora, rope = text.option("kv_lora_rank"), text.option("qk_rope_head_dim")
    window, flags = _sliding(text, layers)
    architectures = top.texts("architectures") or text.texts("architectures") or [top.text("model_type") or "?"]
    return ModelFacts(
        source=source,
        format="safetensors",
        architecture=architectures[0],
        weight_bytes=weight_bytes,
        layers=layers,
        attention_heads=heads,
        kv_heads=(kv,) * layers,
        key_dim=head_dim,
        value_dim=text.count("v_head_dim") or head_dim,
        hidden_size=hidden or heads * head_dim,
        vocab_size=text.count("vocab_size") or 0,
        max_context=max_context,
        dtype_bytes=_DTYPE_BYTES.get(dtype.replace("torch.", ""), 2),
        sliding_window=window,
        sliding_layers=flags,
        mla_dim=lora + rope if lora and rope else None,
        experts=next((n for k in _EXPERT_KEYS if (n := text.option(k)) is not None), 0),
        multimodal=any(k in config for k in ("vision_config", "audio_config", "visual")),
    )


# --- GGUF --------------------------------------------------------------------------------------------


def _gguf_sliding(meta: _Values, arch: str, layers: int) -> tuple[int | None, tuple[bool, ...]]:
    window = meta.option(f"{arch}.attention.sliding_window")
    if window is None:
        return None, ()
    key = f"{arch}.attention.sliding_window_pattern"
    pattern = meta.values.get(key)
    if isinstance(pattern, list):
        if len(pattern) != layers or not all(isinstance(p, bool | int) for p in pattern):
            raise meta.wrong(key, f"one whole number, or a list of {layers} (one per layer)")
        flags = tuple(bool(p) for p in pattern)
    else:
        n = meta.option(key) or _GGUF_SWA_PATTERNS.get(arch)
        if n is None:
            return None, ()  # no pattern we know: count every layer at full length, the safe side
        flags = tuple(i % n < n - 1 for i in range(layers))
    return (window, flags) if any(flags) else (None, ())


def from_gguf(header: GGUFHeader, source: str) -> ModelFacts:
    """Facts from a GGUF header. Raises ModelFactsError."""
    meta = _Values(header.metadata, "the GGUF header")
    arch = meta.text("general.architecture")
    if arch is None:
        raise ModelFactsError("the GGUF header has no general.architecture")

    def count(name: str) -> int | None:
        return meta.count(f"{arch}.{name}")

    def option(name: str) -> int | None:
        return meta.option(f"{arch}.{name}")

    layers = count("block_count")
    # Some architectures give the heads per layer (OpenELM): the widest layer counts.
    heads_per_layer = meta.per_layer(f"{arch}.attention.head_count", layers) if layers else None
    heads = max(heads_per_layer) if heads_per_layer else None
    embd = count("embedding_length")
    if layers is None or not heads or embd is None:
        raise ModelFactsError(f"the GGUF header lacks {arch}.block_count, .attention.head_count or .embedding_length")
    kv = meta.per_layer(f"{arch}.attention.head_count_kv", layers) or (heads,) * layers
    key_dim = count("attention.key_length") or embd // heads
    value_dim = count("attention.value_length") or key_dim
    vocab = header.array_lengths.get("tokenizer.ggml.tokens") or count("vocab_size") or 0
    lora, rope = option("attention.kv_lora_rank"), option("rope.dimension_count")
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
        max_context=count("context_length") or 4096,
        dtype_bytes=2,
        sliding_window=window,
        sliding_layers=flags,
        mla_dim=lora + rope if lora and rope else None,
        experts=option("expert_count") or 0,
        gguf=GGUFLayout(
            layer_bytes=tuple(layer_bytes),
            input_bytes=input_bytes,
            output_bytes=output_bytes,
            tensor_count=len(header.tensors),
            metadata_bytes=header.data_offset,
            last_layer=tuple(last),
            output_rows=output_rows,
            expert_used=option("expert_used_count") or 0,
        ),
    )
