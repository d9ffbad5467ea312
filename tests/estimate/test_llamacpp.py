"""The llama.cpp rule against the real llama.cpp (xllamacpp) and the real SmolLM2 GGUF: the weights and the KV
cache the estimate computes are the sizes llama.cpp's own log reports for the same context."""

from __future__ import annotations

import re
import subprocess

import gguf
import pytest

from nomad_gpustack.estimate.engine import engine_settings
from nomad_gpustack.estimate.local import ReadStats, read_local_model
from nomad_gpustack.estimate.memory import llamacpp_kv
from nomad_gpustack.sizes import MIB

from ..conftest import unavailable
from ..support.components import LLAMA_LAUNCHER, free_port

KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers.*K \((\w+)\): +([\d.]+) MiB")
WEIGHTS_LINE = re.compile(r"CPU_Mapped model buffer size = +([\d.]+) MiB")


def llama_log(model: str, context: int) -> str:
    """What llama.cpp logs while it loads `model` with `context` cells (it exits once loaded)."""
    import sys

    command = [sys.executable, str(LLAMA_LAUNCHER), "--model", model, "--port", str(free_port()),
               "--ctx-size", str(context), "--verbosity", "4", "--load-only"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if run.returncode != 0 or "llama_kv_cache: size" not in run.stderr:
        unavailable(f"llama.cpp did not load the model: {run.stderr[-400:]}")
    return run.stderr


def test_smollm2_weights_are_the_files_tensor_data(smollm2_gguf: str) -> None:
    stats = ReadStats()
    facts = read_local_model(smollm2_gguf, stats)
    reader = gguf.GGUFReader(smollm2_gguf)
    assert facts.weight_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert stats.bytes_read < reader.data_offset  # the header, less the skipped tokenizer strings


@pytest.mark.parametrize("context", [4096, 1000])
def test_smollm2_kv_cache_and_weights_match_llama_cpps_log(smollm2_gguf: str, context: int) -> None:
    facts = read_local_model(smollm2_gguf)
    log = llama_log(smollm2_gguf, context)
    kv = KV_LINE.search(log)
    weights = WEIGHTS_LINE.search(log)
    assert kv is not None and weights is not None, log[-2000:]
    total_mib, cells, layers, k_type, k_mib = kv.groups()
    settings = engine_settings("llama.cpp", ["--ctx-size", str(context)])
    estimated = llamacpp_kv(facts, settings, context, list(range(facts.layers)))
    assert (int(cells), int(layers), k_type) == (-(-context // 256) * 256, facts.layers, "f16")
    assert f"{estimated / MIB:.2f}" == total_mib
    assert f"{estimated / 2 / MIB:.2f}" == k_mib
    assert f"{facts.weight_bytes / MIB:.2f}" == weights.group(1)
