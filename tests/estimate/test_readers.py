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
from nomad_gpustack.estimate.safetensors import SafetensorsError, header_length, parse_header
from nomad_gpustack.sizes import GIB
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
