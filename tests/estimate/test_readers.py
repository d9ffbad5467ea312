"""The header readers: GGUF (against llama.cpp's own gguf package) and safetensors, headers only."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import gguf
import pytest
from gguf import GGMLQuantizationType as Q

from nomad_gpustack.estimate.facts import ModelFactsError, from_config, from_gguf
from nomad_gpustack.estimate.gguf import GGUFError, read_header
from nomad_gpustack.estimate.local import ModelReadError, ReadStats, read_local_model
from nomad_gpustack.estimate.safetensors import SafetensorsError, header_length, index_total_size, parse_header
from nomad_gpustack.sizes import GIB
from tests.support.helpers import nomadgs
from tests.support.model_fixtures import (
    LLAMA_31_8B,
    LLAMA_31_8B_BYTES,
    hf_folder,
    llama_gguf,
    llama_tensors,
    safetensors_header,
    write_gguf,
)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)

    def read(self, n: int) -> bytes:
        return self.stream.read(n)

    def skip(self, n: int) -> None:
        self.stream.seek(n, 1)


def test_a_gguf_with_data_reads_as_gguf_reader_reads_it(tmp_path: Path) -> None:
    tokens = [f"tok{i}" for i in range(5000)]  # longer than the arrays the reader keeps
    path = write_gguf(
        tmp_path / "tiny.gguf",
        "llama",
        {
            "llama.block_count": 2, "llama.context_length": 2048, "llama.embedding_length": 256,
            "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2, "tokenizer.ggml.tokens": tokens,
            "general.name": "tiny",
        },
        llama_tensors(2, 256, 512, 4, 2, 256, Q.Q8_0),
        with_data=True,
    )  # fmt: skip
    stats = ReadStats()
    facts = read_local_model(path, stats)
    reader = gguf.GGUFReader(path)
    assert facts.weight_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    with path.open("rb") as handle:
        header = read_header(_Bytes(handle.read()))
    assert header.data_offset == reader.data_offset
    assert [t.name for t in header.tensors] == [t.name for t in reader.tensors]
    assert header.metadata["general.name"] == "tiny"
    assert header.metadata["tokenizer.ggml.tokens"] is None and header.array_lengths["tokenizer.ggml.tokens"] == 5000
    assert facts.vocab_size == 5000
    # Only the header was read: never a byte past it (the int arrays were skipped by seeking).
    assert stats.bytes_read <= header.data_offset
    assert (facts.layers, facts.attention_heads, facts.kv_heads, facts.key_dim) == (2, 4, (2, 2), 64)
    assert all(t.nbytes > 0 for t in header.tensors)


def test_a_header_only_70b_gguf_is_read_in_a_few_kilobytes(tmp_path: Path) -> None:
    path = llama_gguf(tmp_path / "70b.gguf", layers=80, embd=8192, ff=28672, heads=64, kv=8)
    stats = ReadStats()
    facts = read_local_model(path, stats)
    assert path.stat().st_size < 64 * 1024
    assert stats.bytes_read == path.stat().st_size  # the header is the whole file: every byte of it, no more
    assert 35 * GIB < facts.weight_bytes < 45 * GIB  # Q4_K: about 4.8 bits a weight
    assert facts.gguf is not None and len(facts.gguf.layer_bytes) == 80
    assert sum(facts.gguf.layer_bytes) + facts.gguf.input_bytes + facts.gguf.output_bytes == facts.weight_bytes


def test_per_layer_kv_heads_are_kept(tmp_path: Path) -> None:
    kv = [8, 8, 4, 4]
    facts = read_local_model(llama_gguf(tmp_path / "m.gguf", layers=4, kv=kv))
    assert facts.kv_heads == tuple(kv)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGML" + bytes(20), "no GGUF magic"),
        (b"GGUF" + struct.pack("<I", 1) + bytes(16), "version 1"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1), "ends inside its header"),
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 40), "a string of"),
        (b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0), "impossible number"),
    ],
)
def test_a_damaged_gguf_is_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=message):
        read_header(_Bytes(data))


def test_a_folder_with_an_index_reads_total_size(tmp_path: Path) -> None:
    stats = ReadStats()
    facts = read_local_model(hf_folder(tmp_path / "m", LLAMA_31_8B, total_size=LLAMA_31_8B_BYTES), stats)
    assert facts.weight_bytes == LLAMA_31_8B_BYTES
    assert stats.bytes_read < 2048 and stats.files == 2
    assert (facts.layers, facts.kv_heads[0], facts.key_dim, facts.dtype_bytes) == (32, 8, 128, 2)
    assert facts.max_context == 131072  # llama3 rope scaling does not stretch it further


def test_a_single_safetensors_file_reads_its_header_only(tmp_path: Path) -> None:
    tensors = {"a": ("BF16", [1024, 1024]), "b": ("F32", [1024])}
    folder = hf_folder(tmp_path / "m", {**LLAMA_31_8B, "num_hidden_layers": 2}, tensors=tensors)
    stats = ReadStats()
    facts = read_local_model(folder, stats)
    assert facts.weight_bytes == 1024 * 1024 * 2 + 1024 * 4
    assert (
        stats.bytes_read == len((folder / "config.json").read_bytes()) + (folder / "model.safetensors").stat().st_size
    )


def test_damaged_safetensors_headers_are_clear_errors() -> None:
    with pytest.raises(SafetensorsError, match="header of 0 bytes"):
        header_length(bytes(8))
    with pytest.raises(SafetensorsError, match="not JSON"):
        parse_header(b"{nope")
    with pytest.raises(SafetensorsError, match="data_offsets"):
        parse_header(json.dumps({"w": {"dtype": "F16"}}).encode())
    assert parse_header(safetensors_header({"w": ("F16", [2, 3])})[8:]).data_bytes == 12


def test_local_paths_that_are_not_models_say_so(tmp_path: Path) -> None:
    with pytest.raises(ModelReadError, match="no such file"):
        read_local_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelReadError, match=r"no config\.json"):
        read_local_model(tmp_path / "empty")
    (tmp_path / "x.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ModelReadError, match="no GGUF magic"):
        read_local_model(tmp_path / "x.gguf")


def test_configs_without_the_essentials_are_refused() -> None:
    with pytest.raises(ModelFactsError, match="num_hidden_layers"):
        from_config({"num_attention_heads": 8}, 1, "x")
    with pytest.raises(ModelFactsError, match="max_position_embeddings"):
        from_config({"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 8}, 1, "x")


def test_gguf_without_an_architecture_is_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", "llama", {}, [])
    with path.open("rb") as handle:
        header = read_header(_Bytes(handle.read()))
    bare = type(header)(header.version, {}, {}, (), header.data_offset)
    with pytest.raises(ModelFactsError, match=r"general\.architecture"):
        from_gguf(bare, "x")
    with pytest.raises(ModelFactsError, match="block_count"):
        from_gguf(header, "x")


@pytest.mark.parametrize("block", [9, 64, 1000, 1 << 20])
def test_skipping_strings_across_blocks_lands_on_the_next_field(
    tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nomad_gpustack.estimate import gguf as reader

    monkeypatch.setattr(reader, "SKIP_BLOCK", block)
    tokens = [("x" * (i % 37)) for i in range(5000)]  # empty strings, and strings longer than a block
    path = llama_gguf(tmp_path / "m.gguf", layers=2, extra={"tokenizer.ggml.tokens": tokens, "zz.after": 7})
    stats = ReadStats()
    facts = read_local_model(path, stats)
    assert facts.vocab_size == 5000 and facts.layers == 2
    with path.open("rb") as handle:
        header = read_header(_Bytes(handle.read()))
    assert header.metadata["zz.after"] == 7  # the field after the array is read where it is
    assert stats.bytes_read <= header.data_offset


# --- values of the wrong kind: refused, naming the key, never skipped ------------------------------------------


def test_a_config_json_that_is_not_an_object_is_bad_input_on_the_command_line(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelReadError, match=r"config\.json is not a JSON object \(it holds a list\)"):
        read_local_model(model)
    deployment = tmp_path / "d.yaml"
    deployment.write_text("name: m\nbackend: vLLM\nhuggingface_repo_id: o/m\n")
    run = nomadgs("estimate", deployment, "--model", model)
    assert run.code == 2 and "Traceback" not in run.err, run.err
    assert f"--model: {model}: config.json is not a JSON object" in run.err


def test_a_number_written_as_text_is_refused_not_skipped(tmp_path: Path) -> None:
    # Skipped, "8" made the KV heads the 32 attention heads: a KV cache 4× too large.
    with pytest.raises(ModelFactsError) as caught:
        from_config({**LLAMA_31_8B, "num_key_value_heads": "8"}, LLAMA_31_8B_BYTES, "x")
    assert str(caught.value) == (
        'config.json: num_key_value_heads is the text "8", where a whole number belongs (write 8, without quotes)'
    )
    model = hf_folder(tmp_path / "m", {**LLAMA_31_8B, "num_key_value_heads": "8"}, total_size=LLAMA_31_8B_BYTES)
    with pytest.raises(ModelReadError, match=r"num_key_value_heads is the text \"8\""):
        read_local_model(model)
    # A whole number is one however JSON writes it.
    assert from_config({**LLAMA_31_8B, "num_key_value_heads": 8.0}, 1, "x").kv_heads[0] == 8


SLIDING = {**LLAMA_31_8B, "sliding_window": 4096, "use_sliding_window": True}  # so the window keys are read too


@pytest.mark.parametrize(
    ("key", "value"),
    [
        *((k, "8") for k in ("num_hidden_layers", "num_attention_heads", "hidden_size", "num_key_value_heads",
                             "head_dim", "v_head_dim", "vocab_size", "max_position_embeddings", "seq_length",
                             "sliding_window", "sliding_window_pattern", "max_window_layers", "kv_lora_rank",
                             "qk_rope_head_dim", "num_local_experts", "n_routed_experts")),
        ("num_hidden_layers", 0), ("num_key_value_heads", -1), ("num_attention_heads", 2.5),
        ("num_key_value_heads", True), ("max_position_embeddings", [4096]),
        ("use_sliding_window", "true"), ("multi_query", 1), ("torch_dtype", 16), ("architectures", "Llama"),
        ("model_type", 5), ("layer_types", "sliding_attention"), ("layer_types", ["full_attention"]),
        ("rope_scaling", "yarn"), ("rope_scaling", {"rope_type": "yarn", "factor": "4"}),
        ("rope_scaling", {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": "8192"}),
        ("rope_scaling", {"rope_type": 1, "factor": 4}), ("text_config", "yes"), ("thinker_config", [1]),
    ],
)  # fmt: skip
def test_every_config_value_of_the_wrong_kind_is_refused_by_name(key: str, value: object) -> None:
    # Keys read only when another is absent: model_type without architectures, multi_query without KV heads.
    absent = {"model_type": "architectures", "multi_query": "num_key_value_heads"}.get(key)
    config = {k: v for k, v in SLIDING.items() if k != absent}
    with pytest.raises(ModelFactsError) as caught:
        from_config({**config, key: value}, LLAMA_31_8B_BYTES, "x")
    named = str(caught.value)
    assert named.startswith("config.json") and (key in named or "rope_scaling" in named), named


@pytest.mark.parametrize(
    ("key", "value"),
    [
        *((f"llama.{k}", "8") for k in ("block_count", "attention.head_count", "embedding_length",
                                          "attention.head_count_kv", "attention.key_length",
                                          "attention.value_length", "vocab_size", "attention.kv_lora_rank",
                                          "rope.dimension_count", "context_length", "expert_count",
                                          "expert_used_count", "attention.sliding_window")),
        ("llama.attention.head_count_kv", [8] * 31), ("llama.attention.head_count_kv", [8.5] * 32),
        ("llama.attention.sliding_window_pattern", [True] * 31), ("llama.block_count", True),
        ("general.architecture", 7),
    ],
)  # fmt: skip
def test_every_gguf_value_of_the_wrong_kind_is_refused_by_name(tmp_path: Path, key: str, value: object) -> None:
    path = llama_gguf(tmp_path / "m.gguf", extra={"llama.attention.sliding_window": 4096})
    with path.open("rb") as handle:
        header = read_header(_Bytes(handle.read()))
    metadata = {**header.metadata, key: value}
    with pytest.raises(ModelFactsError) as caught:
        from_gguf(type(header)(header.version, metadata, header.array_lengths, header.tensors, 0), "x")
    assert str(caught.value).startswith("the GGUF header"), str(caught.value)
    assert key in str(caught.value) or "general.architecture" in str(caught.value)


def test_safetensors_values_of_the_wrong_kind_are_refused() -> None:
    for info in (
        {"dtype": "F16", "shape": ["2", 3], "data_offsets": [0, 12]},
        {"dtype": "F16", "shape": [2, 3], "data_offsets": ["0", "12"]},
        {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12.0]},
        {"dtype": 16, "shape": [2, 3], "data_offsets": [0, 12]},
        {"dtype": "F16", "shape": [2, True], "data_offsets": [0, 12]},
    ):
        with pytest.raises(SafetensorsError, match="needs a dtype"):
            parse_header(json.dumps({"w": info}).encode())
    with pytest.raises(SafetensorsError, match=r'total_size is the text "12"'):
        index_total_size(json.dumps({"metadata": {"total_size": "12"}}).encode())
    assert index_total_size(json.dumps({"metadata": {"total_size": 12.0}}).encode())[0] == 12


def test_a_gguf_alignment_that_is_not_a_power_of_two_is_refused(tmp_path: Path) -> None:
    path = llama_gguf(tmp_path / "m.gguf", layers=2, extra={"general.alignment": 48})
    with pytest.raises(ModelReadError, match=r"general\.alignment is 48, where a power of two belongs"):
        read_local_model(path)
