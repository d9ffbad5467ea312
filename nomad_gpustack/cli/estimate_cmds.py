"""`nomadgs estimate`: GPU memory per GPU of a deployment, from the model's headers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import command, preformatted
from .options import backends_option, deployment_argument, model_option, output_option

if TYPE_CHECKING:
    from ..estimate.plan import Estimate

ESTIMATE_HELP = preformatted("""\
Estimate the GPU memory one replica of a deployment needs, per GPU, for 1, 2, 4 and 8 GPUs
(tensor-parallel sizes that divide the model's attention heads), from the model's headers only:
weights are never read or downloaded.

  WEIGHTS    the model's weights on one GPU (GGUF tensor infos, safetensors headers or index)
  KV/TOKEN   KV cache per token on one GPU: layers × 2 × KV heads per GPU × head_dim × bytes
  KV@CTX     KV cache of one sequence of the full context (--max-model-len, --context-length,
             --ctx-size, else the model's maximum); sliding-window layers count their window
  OVERHEAD   the engine's own: vLLM's peak activation and CUDA context, SGLang's memory outside
             --mem-fraction-static, llama.cpp's compute buffers and footprint; other backends:
             GPUStack's rule, weights × 1.2 + 2 GiB
  TOTAL      what one GPU must hold; MIN GPU: the smallest GPU the engine starts on
  FITS/SEQS  on the deployment's GPUs (nomad.gpu_memory, or a known nomad.gpu_model): whether the
             engine starts, and how many full-length sequences fit at once

The model comes from --model PATH (a GGUF file, or a folder with config.json and safetensors
headers), the deployment's local_path, or the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN; the headers
are cached, so a second run makes no request). Figures are estimates: engines change, and the
activation constants were measured on one GPU type.

exit codes: 0 estimated; 2 bad input, or no metadata for the model; 5 the Hub unreachable
""")


def _size(n: int | None) -> str:
    from ..sizes import human_size

    return "-" if n is None else human_size(n)


def print_table(est: Estimate) -> None:
    """The estimate as a terminal table."""
    f = est.facts
    kv = sorted(set(f.kv_heads))
    kv_text = str(kv[0]) if len(kv) == 1 else f"{kv[0]}-{kv[-1]}"
    shape = f"{f.layers} layers, {f.attention_heads} heads ({kv_text} KV), head_dim {f.key_dim}"
    if f.mla_dim:
        shape += f", MLA {f.mla_dim}"
    if f.sliding_window:
        shape += f", window {f.sliding_window} on {sum(f.sliding_layers)} layers"
    if f.experts:
        shape += f", {f.experts} experts"
    print(f"model     {f.source}")
    print(f"          {f.architecture}: {shape}; weights {_size(f.weight_bytes)}")
    s = est.settings
    engine = f"engine    {est.engine} at {est.context_source}"
    if s.engine in ("vllm", "sglang"):
        engine += f", KV cache {s.kv_cache_dtype or 'auto'}"
    if s.vram_claim is not None:
        engine += f", GPUSTACK_MODEL_VRAM_CLAIM {_size(s.vram_claim)}"
    print(engine)
    print(f"GPUs      {_size(est.gpu.bytes) + ' (' + est.gpu.source + ')' if est.gpu else 'memory not stated'}")
    print()
    header = ["GPUS", "WEIGHTS", "KV/TOKEN", f"KV@{est.context}", "OVERHEAD", "TOTAL", "MIN GPU"]
    if est.gpu:
        header += ["FITS", "SEQS"]
    rows = []
    for r in est.rows:
        cache = (_size(r.kv_per_token), _size(r.kv_context)) if r.kv_per_token else ("-", "-")
        row = [str(r.gpus), _size(r.weights), *cache, _size(r.overhead), _size(r.total), _size(r.min_gpu_memory)]
        if est.gpu:
            row += ["yes" if r.fits else "no", "-" if r.sequences is None else str(r.sequences)]
        rows.append(row)
    widths = [max(len(x) for x in column) for column in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    suggestion = est.suggestion()
    print()
    if suggestion["gpus"]:
        memory = f", gpu_memory: {_size(suggestion['gpu_memory'])}" if suggestion["gpu_memory"] else ""
        print(f"suggested gpus: {suggestion['gpus']}{memory} ({suggestion['reason']})")
    else:
        print(f"no suggestion: {suggestion['reason']}")


@command(
    "estimate",
    short_help="estimate the GPU memory a deployment needs, per GPU, from the model's headers",
    help=ESTIMATE_HELP,
)
@deployment_argument
@backends_option
@model_option
@output_option
def estimate(deployment: Path, backends: tuple[Path, ...], model: Path | None, output: str) -> int:
    from ..compile.resolve import backend_and_env
    from ..errors import InputError, Problem, UnreachableError
    from ..estimate import estimate_deployment
    from ..estimate.local import ModelReadError
    from ..estimate.lookup import lookup_model
    from ..spec.loader import load_catalog, load_deployment
    from . import output as say
    from .cachefolder import cache_folder

    catalog = load_catalog(backends, cache=cache_folder())
    sourced = load_deployment(deployment)
    backend, env = backend_and_env(sourced, catalog)
    try:
        found = lookup_model(sourced.spec, model_path=model, cache_dir=cache_folder())
    except ModelReadError as exc:
        raise InputError(Problem(str(exc), field="--model")) from None
    if found.facts is None:
        problem = f"no metadata for the model: {found.reason}"
        if found.unreachable:
            raise UnreachableError(problem)
        raise InputError(Problem(problem, sourced.filename, hint="give --model PATH"))
    est = estimate_deployment(sourced.spec, found, backend, env)
    for warning in est.warnings:
        say.warning(f"{sourced.filename}: {warning}")
    if output == "json":
        say.emit_json({"file": sourced.filename, **est.to_json()})
    else:
        print_table(est)
    return 0
