"""Benchmark `nomadgs estimate` on 70B models: cold process and in-process, and the bytes it reads.

Prints figures; asserts nothing. Run: .venv/bin/python bench/estimate_bench.py [--runs N]

Models (made here, as the tests make them): a Llama-3.1-70B Q4_K GGUF whose header carries a real-sized
tokenizer (128,256 tokens, their types, 280,147 merges: a header of several MiB, as in the real files),
followed by its 42 GiB of data as a sparse region (no disk used), and two Llama-3.1-70B safetensors
folders: one with config.json and model.safetensors.index.json, one with config.json and 30 shard headers
and no index. Cold start is a ratio to a bare `python -I -c pass`
measured in the same run, interleaved; bytes read come from the reader's own counter (ReadStats), beside the
files' sizes on disk and the size their weights would have.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomad_gpustack.estimate.engine import engine_settings  # noqa: E402
from nomad_gpustack.estimate.local import ReadStats, read_local_model  # noqa: E402
from nomad_gpustack.estimate.plan import GpuSize, estimate  # noqa: E402
from nomad_gpustack.sizes import GIB, human_size  # noqa: E402
from tests.support.model_fixtures import (  # noqa: E402
    LLAMA_31_70B,
    LLAMA_31_70B_BYTES,
    hf_folder,
    llama_gguf,
    safetensors_header,
)


def make_models(folder: Path) -> dict[str, Path]:
    tokens = [f"tok{i:06d}" for i in range(128256)]
    merges = [f"m{i} x{i}" for i in range(280147)]
    gguf = llama_gguf(
        folder / "llama-70b-Q4_K.gguf",
        layers=80, embd=8192, ff=28672, heads=64, kv=8,
        extra={"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": [1] * len(tokens),
               "tokenizer.ggml.merges": merges, "tokenizer.ggml.model": "gpt2"},
    )  # fmt: skip
    # The data region, as a sparse file: the file has a 70B model's size on disk and costs nothing.
    header_bytes = gguf.stat().st_size
    os.truncate(gguf, header_bytes + read_local_model(gguf).weight_bytes)
    indexed = hf_folder(folder / "llama-70b-index", LLAMA_31_70B, total_size=LLAMA_31_70B_BYTES)
    shards = hf_folder(folder / "llama-70b-shards", LLAMA_31_70B)
    per_shard = 80 // 30 + 1
    layer = 0
    for shard in range(30):
        tensors: dict[str, tuple[str, list[int]]] = {}
        for i in range(layer, min(80, layer + per_shard)):
            p = f"model.layers.{i}."
            tensors.update({
                p + "self_attn.q_proj.weight": ("BF16", [8192, 8192]),
                p + "self_attn.k_proj.weight": ("BF16", [1024, 8192]),
                p + "self_attn.v_proj.weight": ("BF16", [1024, 8192]),
                p + "self_attn.o_proj.weight": ("BF16", [8192, 8192]),
                p + "mlp.gate_proj.weight": ("BF16", [28672, 8192]),
                p + "mlp.up_proj.weight": ("BF16", [28672, 8192]),
                p + "mlp.down_proj.weight": ("BF16", [8192, 28672]),
                p + "input_layernorm.weight": ("BF16", [8192]),
                p + "post_attention_layernorm.weight": ("BF16", [8192]),
            })  # fmt: skip
        layer += per_shard
        (shards / f"model-{shard + 1:05d}-of-00030.safetensors").write_bytes(safetensors_header(tensors))
    return {
        "GGUF 70B Q4_K, 42 GiB": gguf,
        "safetensors 70B, index": indexed,
        "safetensors 70B, 30 shards": shards,
    }


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def header_bytes(path: Path) -> int:
    """Where a GGUF's data starts (the header's size); for a folder, every file (headers only)."""
    from nomad_gpustack.estimate.gguf import read_header
    from nomad_gpustack.estimate.local import FileSource

    if path.is_dir():
        return disk_bytes(path)
    with path.open("rb") as handle:
        return read_header(FileSource(handle, ReadStats())).data_offset


def in_process(path: Path, seconds: float) -> tuple[float, ReadStats, int]:
    """Mean seconds per estimate (read headers + compute the table), the bytes one read takes, the weights."""
    settings = engine_settings("vLLM", ["--max-model-len", "32768"])
    stats = ReadStats()
    facts = read_local_model(path, stats)
    estimate(facts, settings, GpuSize(80 * GIB, "bench"))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        estimate(read_local_model(path), settings, GpuSize(80 * GIB, "bench"))
        n += 1
    return (time.perf_counter() - start) / n, stats, facts.weight_bytes


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def cold(models: dict[str, Path], deployment: Path, runs: int, cache: Path) -> dict[str, list[float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_", "PYTHON"))}
    env.update({"PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache), "HF_HUB_OFFLINE": "1"})
    commands: dict[str, list[str]] = {"python -I -c pass": [sys.executable, "-I", "-c", "pass"]}
    for name, path in models.items():
        commands[name] = [sys.executable, "-m", "nomad_gpustack", "estimate", str(deployment), "--model", str(path),
                          "--output", "json"]  # fmt: skip
    for command in commands.values():  # warm the file cache
        timed(command, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(timed(command, env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="cold runs of each command (default 15)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per in-process figure (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = make_models(folder)
        deployment = folder / "deploy.yaml"
        deployment.write_text(json.dumps({"name": "llama-70b", "huggingface_repo_id": "meta-llama/Llama-3.1-70B",
                                          "backend": "vLLM", "backend_parameters": ["--max-model-len 32768"],
                                          "nomad": {"gpus": 4, "gpu_memory": "80 GiB"}}))  # fmt: skip
        print("in process (read the headers, estimate 1/2/4/8 GPUs), and what one estimate reads:")
        for name, path in models.items():
            seconds, stats, weights = in_process(path, args.seconds)
            print(
                f"  {name:<28} {seconds * 1000:8.2f} ms   read {human_size(stats.bytes_read):>9} "
                f"(headers: {human_size(header_bytes(path))}) from {stats.files} file(s) of "
                f"{human_size(disk_bytes(path))}; weights they describe: {human_size(weights)}"
            )
        times = cold(models, deployment, args.runs, folder / "cache")
        base = statistics.median(times["python -I -c pass"])
        print(f"\ncold process, median of {args.runs} (ratio to the bare interpreter, {base * 1000:.0f} ms):")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:<28} {median * 1000:8.1f} ms   {median / base:5.1f} x")


if __name__ == "__main__":
    main()
