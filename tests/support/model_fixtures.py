"""Model headers made in the tests: GGUF files (llama.cpp's own `gguf` writer) and safetensors folders that
describe 8B, 70B, MoE, MLA and sliding-window models in a few hundred bytes, without their weights.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

Tensor = tuple[str, Sequence[int], Q]  # name, dims in ggml order (ne[0] first), type


def _nbytes(ne: Sequence[int], qtype: Q) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
    return ne[0] // block * size * rows


def write_gguf(
    path: Path, arch: str, metadata: Mapping[str, Any], tensors: Iterable[Tensor], *, with_data: bool = False
) -> Path:
    """A GGUF file: header only (the tensor infos claim data that is not there), or with zeroed data."""
    writer = gguf.GGUFWriter(path, arch)
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, list(value))
    for name, ne, qtype in tensors:
        nbytes = _nbytes(ne, qtype)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        byte_shape = [*reversed(ne[1:]), ne[0] // block * size]
        if with_data:
            writer.add_tensor(name, np.zeros(byte_shape, dtype=np.uint8), raw_dtype=qtype)
        else:
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if with_data:
        writer.write_tensors_to_file()  # the tensor infos, then the data
    else:
        writer.write_ti_data_to_file()
    writer.close()
    return path


def llama_tensors(
    layers: int, embd: int, ff: int, heads: int, kv: int, vocab: int, qtype: Q = Q.Q4_K, *, experts: int = 0
) -> list[Tensor]:
    """The tensors of a llama-architecture model (with `experts`, a Mixtral-style MoE)."""
    head_dim = embd // heads
    out: list[Tensor] = [("token_embd.weight", [embd, vocab], qtype), ("output_norm.weight", [embd], Q.F32)]
    out.append(("output.weight", [embd, vocab], Q.Q6_K))
    for i in range(layers):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", [embd], Q.F32),
            (p + "attn_q.weight", [embd, embd], qtype),
            (p + "attn_k.weight", [embd, head_dim * kv], qtype),
            (p + "attn_v.weight", [embd, head_dim * kv], Q.Q6_K),
            (p + "attn_output.weight", [embd, embd], qtype),
            (p + "ffn_norm.weight", [embd], Q.F32),
        ]
        if experts:
            out += [
                (p + "ffn_gate_inp.weight", [embd, experts], Q.F32),
                (p + "ffn_gate_exps.weight", [embd, ff, experts], qtype),
                (p + "ffn_up_exps.weight", [embd, ff, experts], qtype),
                (p + "ffn_down_exps.weight", [ff, embd, experts], Q.Q6_K),
            ]
        else:
            out += [
                (p + "ffn_gate.weight", [embd, ff], qtype),
                (p + "ffn_up.weight", [embd, ff], qtype),
                (p + "ffn_down.weight", [ff, embd], Q.Q6_K),
            ]
    return out


def llama_gguf(
    path: Path,
    *,
    layers: int = 32,
    embd: int = 4096,
    ff: int = 14336,
    heads: int = 32,
    kv: int | Sequence[int] = 8,
    vocab: int = 128256,
    context: int = 131072,
    experts: int = 0,
    extra: Mapping[str, Any] | None = None,
    qtype: Q = Q.Q4_K,
) -> Path:
    """A header-only GGUF of a llama model (defaults: Llama-3.1-8B's shape, Q4_K)."""
    meta: dict[str, Any] = {
        "llama.block_count": layers,
        "llama.context_length": context,
        "llama.embedding_length": embd,
        "llama.feed_forward_length": ff,
        "llama.attention.head_count": heads,
        "llama.attention.head_count_kv": kv if isinstance(kv, int) else list(kv),
        "llama.vocab_size": vocab,
    }
    if experts:
        meta["llama.expert_count"] = experts
        meta["llama.expert_used_count"] = 2
    meta.update(extra or {})
    kv_width = kv if isinstance(kv, int) else max(kv)
    return write_gguf(
        path, "llama", meta, llama_tensors(layers, embd, ff, heads, kv_width, vocab, qtype, experts=experts)
    )


def safetensors_header(tensors: Mapping[str, tuple[str, Sequence[int]]]) -> bytes:
    """The bytes of a safetensors file without its data: the length, then the JSON header."""
    sizes = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1}
    doc: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = int(np.prod(shape)) * sizes[dtype]
        doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(doc).encode()
    return struct.pack("<Q", len(raw)) + raw


def hf_folder(
    path: Path,
    config: Mapping[str, Any],
    *,
    total_size: int | None = None,
    tensors: Mapping[str, tuple[str, Sequence[int]]] | None = None,
) -> Path:
    """A model folder: config.json plus an index with `total_size`, or one header-only model.safetensors."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if total_size is not None:
        index = {"metadata": {"total_size": total_size}, "weight_map": {"x": "model-00001-of-00002.safetensors"}}
        (path / "model.safetensors.index.json").write_text(json.dumps(index))
    if tensors is not None:
        (path / "model.safetensors").write_bytes(safetensors_header(tensors))
    return path


LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "torch_dtype": "bfloat16", "vocab_size": 128256,
    "rope_scaling": {"factor": 8.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}  # fmt: skip
LLAMA_31_8B_BYTES = 16060522496  # model.safetensors.index.json total_size of meta-llama/Llama-3.1-8B-Instruct

LLAMA_31_70B = {**LLAMA_31_8B, "hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64,
                "num_hidden_layers": 80}  # fmt: skip
LLAMA_31_70B_BYTES = 141107412992

MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": None, "torch_dtype": "bfloat16",
    "vocab_size": 32000,
}  # fmt: skip
MIXTRAL_8X7B_BYTES = 93405585408

DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168, "num_attention_heads": 128,
    "num_hidden_layers": 61, "num_key_value_heads": 128, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128, "v_head_dim": 128, "max_position_embeddings": 163840, "n_routed_experts": 256,
    "torch_dtype": "bfloat16", "vocab_size": 129280,
}  # fmt: skip
DEEPSEEK_V3_BYTES = 688586727753

GEMMA_3_27B = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "text_config": {
        "hidden_size": 5376, "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
        "num_hidden_layers": 62, "sliding_window": 1024, "sliding_window_pattern": 6,
        "max_position_embeddings": 131072, "vocab_size": 262208,
    },
    "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27},
    "torch_dtype": "bfloat16",
}  # fmt: skip
GEMMA_3_27B_BYTES = 54_861_000_000
