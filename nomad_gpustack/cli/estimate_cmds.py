"""`nomadgs estimate`: GPU memory per GPU of a deployment, from the model's headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import EXIT_OK
from . import output as say
from .base import command, preformatted
from .options import backends_option, deployment_argument, format_option, model_option

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

A replica over several nodes (nomad.nodes: N, or auto: the fewest nodes whose GPUs hold the model)
shows GPUS per node and PER NODE, what one node's GPUs hold together: vLLM and SGLang run tensor
parallel within a node and pipeline parallel across nodes (weights and layers divided by the
nodes, KV heads by the GPUs of a node; each GPU keeps the engine's whole overhead); llama.cpp splits
its layers over every GPU of every node, the workers' over RPC.

The model comes from --model PATH (a GGUF file, or a folder with config.json and safetensors
headers), the deployment's local_path, or the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN; the headers
are cached, so a second run makes no request). Figures are estimates: engines change, and the
activation constants were measured on one GPU type.

exit codes: 0 estimated; 2 bad input, or no metadata for the model; 5 the Hub unreachable
""")


def _size(n: int | None) -> str:
    from ..sizes import human_size

    return "-" if n is None else human_size(n)


def print_table(doc: dict[str, Any]) -> None:
    """The estimate (its JSON document) as a terminal table."""
    m = doc["model"]
    kv = m["kv_heads"]
    kv_text = str(kv) if isinstance(kv, int) else f"{min(kv)}-{max(kv)}"
    shape = f"{m['layers']} layers, {m['attention_heads']} heads ({kv_text} KV), head_dim {m['head_dim']}"
    if m["mla_dim"]:
        shape += f", MLA {m['mla_dim']}"
    if m["sliding_window"]:
        shape += f", window {m['sliding_window']} on {m['sliding_layers']} layers"
    if m["experts"]:
        shape += f", {m['experts']} experts"
    print(f"model     {m['source']}")
    print(f"          {m['architecture']}: {shape}; weights {_size(m['weight_bytes'])}")
    engine = f"engine    {doc['engine']} at {doc['context_source']}"
    if doc["rule"] in ("vllm", "sglang"):
        engine += f", KV cache {doc['kv_cache_dtype']}"
    elif doc["rule"] == "GPUSTACK_MODEL_VRAM_CLAIM":
        engine += ", GPUSTACK_MODEL_VRAM_CLAIM"
    print(engine)
    gpu = doc["gpu_memory"]
    print(f"GPUs      {_size(gpu) + ' (' + doc['gpu_memory_source'] + ')' if gpu else 'memory not stated'}")
    nodes = doc["nodes"]
    if nodes > 1:  # the split of the suggested GPU count, else of the first row
        shown = next((r for r in doc["rows"] if r["gpus"] == doc["suggestion"]["gpus"]), doc["rows"][0])
        print(f"nodes     {nodes} per replica, {shown['gpus']} GPUs on each: {shown['split']}")
    print()
    header = ["GPUS/NODE" if nodes > 1 else "GPUS", "WEIGHTS", "KV/TOKEN", f"KV@{doc['context']}", "OVERHEAD",
              "TOTAL", "MIN GPU"]  # fmt: skip
    if nodes > 1:
        header.append("PER NODE")
    if gpu:
        header += ["FITS", "SEQS"]
    rows = []
    for r in doc["rows"]:
        cache = (_size(r["kv_per_token"]), _size(r["kv_at_context"])) if r["kv_per_token"] else ("-", "-")
        row = [str(r["gpus"]), _size(r["weights"]), *cache, _size(r["overhead"]), _size(r["total"]),
               _size(r["min_gpu_memory"])]  # fmt: skip
        if nodes > 1:
            row.append(_size(r["per_node"]))
        if gpu:
            row += ["yes" if r["fits"] else "no", "-" if r["sequences"] is None else str(r["sequences"])]
        rows.append(row)
    widths = [max(len(x) for x in column) for column in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    suggestion = doc["suggestion"]
    print()
    verdict = doc.get("check")
    if verdict:
        if verdict["refusal"]:
            print(f"as deployed (gpus: {verdict['gpus']}): refused: {verdict['refusal']}")
        elif verdict["starts"] is False:  # by GPUStack's rule or a claim: a warning below says why
            print(f"as deployed (gpus: {verdict['gpus']}): may not start")
        else:
            print(f"as deployed (gpus: {verdict['gpus']}): starts")
        for warning in verdict["warnings"]:
            print(f"  warning: {warning}")
    if suggestion["gpus"]:
        memory = f", gpu_memory: {_size(suggestion['gpu_memory'])}" if suggestion["gpu_memory"] else ""
        on = f"nodes: {nodes}, " if nodes > 1 else ""
        print(f"suggested {on}gpus: {suggestion['gpus']}{memory} ({suggestion['reason']})")
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
@format_option()
def estimate(deployment: Path, backends: tuple[Path, ...], model: Path | None, fmt: str) -> int:
    from ..cachefolder import cache_folder
    from ..compile.estimation import estimate_document
    from ..spec.loader import load_catalog, load_deployment

    catalog = load_catalog(backends)
    sourced = load_deployment(deployment)
    document = estimate_document(sourced, catalog, model_path=model, cache_dir=cache_folder(), model_field="--model")
    for warning in document["warnings"]:
        say.warning(f"{sourced.filename}: {warning}")
    if fmt == "json":
        say.emit_json(document)
    else:
        print_table(document)
    return EXIT_OK
