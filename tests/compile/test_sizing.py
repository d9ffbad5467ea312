"""`gpus: auto`, `gpu_memory: auto` and the check of explicit values: the estimate inside the compiler."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.compile.build import build
from nomad_gpustack.contract.metadata import META_AUTO, META_ESTIMATE, META_GPU_NEED
from nomad_gpustack.contract.request import group_request
from nomad_gpustack.errors import InputError
from nomad_gpustack.estimate.facts import ModelLookup, from_config
from nomad_gpustack.nomad.explain import placement_failure
from nomad_gpustack.nomad.responses import AllocMetric
from nomad_gpustack.sizes import GIB

from ..support.helpers import catalog_with, deployment, main_task
from ..support.model_fixtures import LLAMA_31_8B, LLAMA_31_8B_BYTES, LLAMA_31_70B, LLAMA_31_70B_BYTES

LLAMA_8B = ModelLookup(from_config(LLAMA_31_8B, LLAMA_31_8B_BYTES, "Llama-3.1-8B"))
LLAMA_70B = ModelLookup(from_config(LLAMA_31_70B, LLAMA_31_70B_BYTES, "Llama-3.1-70B"))


def vllm(nomad: dict[str, Any], *parameters: str) -> dict[str, Any]:
    return {
        "name": "llama",
        "huggingface_repo_id": "meta-llama/Llama-3.1-8B-Instruct",
        "backend": "vLLM",
        "backend_parameters": list(parameters) or ["--max-model-len 32768"],
        "nomad": nomad,
    }


def problem(data: dict[str, Any], model: ModelLookup | None) -> str:
    with pytest.raises(InputError) as info:
        build(deployment(data), catalog_with(), model=model)
    (found,) = info.value.problems
    return str(found)


def test_gpus_auto_takes_the_fewest_gpus_that_fit_and_renders_them() -> None:
    compiled = build(deployment(vllm({"gpus": "auto", "gpu_memory": "24 GiB"})), catalog_with(), model=LLAMA_8B)
    assert compiled.resolved.resources.gpus == 2
    args = main_task(compiled)["Config"]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    device = main_task(compiled)["Resources"]["Devices"][0]
    assert device["Count"] == 2 and device["Constraints"][0]["RTarget"] == "24 GiB"
    meta = compiled.job["Meta"]
    assert meta[META_AUTO].startswith("gpus: 2, the fewest 24 GiB GPUs (nomad.gpu_memory) on which vLLM needs")
    assert meta[META_ESTIMATE].startswith("vLLM needs 14.9 GiB per GPU at --max-model-len 32768")
    assert meta["gpustack_gpus"] == "2"


def test_both_auto_with_a_known_gpu_model_picks_count_and_memory() -> None:
    data = vllm({"gpus": "auto", "gpu_memory": "auto", "gpu_model": "NVIDIA L4"})
    compiled = build(deployment(data), catalog_with(), model=LLAMA_8B)
    res = compiled.resolved.resources
    assert res.gpus == 2 and res.gpu_memory is not None and res.gpu_memory % GIB == 0 and res.gpu_memory <= 23 * GIB
    assert "nomad.gpu_model NVIDIA L4" in compiled.job["Meta"][META_AUTO]


def test_gpu_memory_auto_with_a_count_asks_for_what_each_gpu_needs() -> None:
    compiled = build(deployment(vllm({"gpus": 4, "gpu_memory": "auto"})), catalog_with(), model=LLAMA_70B)
    res = compiled.resolved.resources
    assert res.gpus == 4 and res.gpu_memory == 46 * GIB  # 33 GiB of weights, 2.5 of KV, 5.4 overhead, at 0.90
    assert compiled.job["Meta"][META_GPU_NEED].endswith("MiB")


def test_auto_without_metadata_is_refused_with_the_reason() -> None:
    text = problem(vllm({"gpus": "auto", "gpu_memory": "24 GiB"}), ModelLookup(None, "the Hub is unreachable: boom"))
    assert "deploy.yaml:" in text and "nomad.gpus" in text
    assert "auto needs the model's metadata, and there is none: the Hub is unreachable: boom" in text
    assert "--model PATH" in text
    assert "no model metadata was looked up" in problem(vllm({"gpus": "auto", "gpu_memory": "24 GiB"}), None)


def test_gpus_auto_needs_a_gpu_size() -> None:
    assert "gpus: auto needs the GPUs' memory" in problem(vllm({"gpus": "auto"}), LLAMA_8B)
    text = problem(vllm({"gpus": "auto", "gpu_model": "Voodoo 5"}), LLAMA_8B)
    assert "cannot tell the memory of a 'Voodoo 5'" in text and "NVIDIA A100-SXM4-80GB" in text


def test_auto_that_fits_nowhere_says_so() -> None:
    text = problem(vllm({"gpus": "auto", "gpu_memory": "16 GiB"}), LLAMA_70B)
    assert "does not fit on up to 8 GPUs of 16 GiB" in text


def test_explicit_values_the_engine_refuses_are_refused() -> None:
    text = problem(vllm({"gpus": 1, "gpu_memory": "24 GiB"}), LLAMA_8B)
    assert "deploy.yaml:" in text and "nomad.gpus: vLLM needs 23.9 GiB per GPU at --max-model-len 32768" in text
    assert "use gpus: 2, or --max-model-len ≤ 13312" in text


def test_explicit_values_that_fit_pass_and_carry_the_estimate() -> None:
    compiled = build(deployment(vllm({"gpus": 2, "gpu_memory": "24 GiB"})), catalog_with(), model=LLAMA_8B)
    assert compiled.resolved.sizing is not None and compiled.resolved.sizing.auto is None
    assert META_ESTIMATE in compiled.job["Meta"] and META_AUTO not in compiled.job["Meta"]


def test_without_metadata_explicit_values_stay_and_one_warning_says_why() -> None:
    compiled = build(
        deployment(vllm({"gpus": 1, "gpu_memory": "24 GiB"})), catalog_with(), model=ModelLookup(None, "offline")
    )
    assert compiled.resolved.resources.gpus == 1
    assert compiled.resolved.warnings == (
        "cannot check that the model fits its GPUs: offline (give the model's path (--model PATH))",
    )
    plain = build(deployment(vllm({"gpus": 1, "gpu_memory": "24 GiB"})), catalog_with())
    assert plain.resolved.warnings == () and plain.resolved.sizing is None


def test_auto_on_a_cpu_backend_means_no_gpus() -> None:
    data = {"name": "m", "local_path": "/models/m.gguf", "backend": "llama.cpp", "backend_version": "cpu",
            "nomad": {"gpus": "auto"}}  # fmt: skip
    assert build(deployment(data), catalog_with()).resolved.resources.gpus == 0


def test_a_placement_failure_says_what_the_estimate_needs() -> None:
    compiled = build(deployment(vllm({"gpus": "auto", "gpu_memory": "24 GiB"})), catalog_with(), model=LLAMA_8B)
    req = group_request(dict(compiled.job))
    assert req.gpu_need is not None and req.estimate is not None
    metric = AllocMetric.model_validate(
        {"NodesEvaluated": 2, "DimensionExhausted": {"devices: no devices match request": 2}}
    )
    lines = placement_failure(req, metric)
    assert "the model needs 2 GPUs with ≥ 16.5 GiB each (vLLM needs 14.9 GiB per GPU" in "\n".join(lines)


@pytest.mark.parametrize("value", ["auto", 2])
def test_gpus_accepts_a_count_or_auto(value: Any) -> None:
    assert deployment(vllm({"gpus": value})).spec.nomad.gpus == value


@pytest.mark.parametrize(
    ("value", "message"),
    [(65, "between 0 and 64, or 'auto'"), ("many", "not a number of GPUs .write a whole number, or auto"),
     (True, "expected a whole number, got true or false")],
)  # fmt: skip
def test_gpus_refuses_anything_else(value: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        deployment(vllm({"gpus": value}))


# --- nodes: auto: the fewest nodes, then the fewest GPUs on each, whose GPUs hold the model --------------------


def vllm_nodes(nomad: dict[str, Any]) -> dict[str, Any]:
    return {**vllm(nomad, "--max-model-len 8192"), "backend_version": "0.19.0"}


def nodes_and_gpus(compiled: Any) -> tuple[int, int]:
    r = compiled.resolved
    return (r.distribution.nodes if r.distribution else 1), r.resources.gpus


def test_nodes_auto_takes_the_fewest_nodes_then_gpus_whose_gpus_hold_the_model() -> None:
    # 70B in bf16 (131 GiB) on 24 GiB GPUs: vLLM needs 22.1 GiB on each of 8 GPUs of one node (more than the
    # 21.6 it uses of 24 GiB), so one node is not enough; two nodes of 8 (tensor parallel 8, pipeline parallel 2)
    # need 13.8 GiB per GPU, and two nodes of 4 are one node of 8 again.
    auto = build(deployment(vllm_nodes({"nodes": "auto", "gpus": "auto", "gpu_memory": "24 GiB"})), catalog_with(),
                 model=LLAMA_70B)  # fmt: skip
    assert nodes_and_gpus(auto) == (2, 8)
    for smaller in ({"nodes": 1, "gpus": 8}, {"nodes": 2, "gpus": 4}):
        text = problem(vllm_nodes({**smaller, "gpu_memory": "24 GiB"}), LLAMA_70B)
        assert "vLLM needs 22.1 GiB per GPU" in text
    args = main_task(auto)["Config"]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "8"
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    assert auto.resolved.notes[-1] == (
        "auto: 2 nodes × 8 GPUs: vLLM needs 13.8 GiB per GPU on 2 nodes × 8 GPUs at --max-model-len 8192 "
        "(weights 8.2, KV 0.2, overhead 5.4)"
    )
    assert auto.job["Meta"][META_AUTO].endswith("tensor parallel 8 within a node, pipeline parallel 2 across nodes")
    # Bigger GPUs hold it on one node: the one-node job, no worker groups.
    one = build(deployment(vllm_nodes({"nodes": "auto", "gpus": "auto", "gpu_memory": "80 GiB"})), catalog_with(),
                model=LLAMA_70B)  # fmt: skip
    assert nodes_and_gpus(one) == (1, 4) and [g["Name"] for g in one.job["TaskGroups"]] == ["inference"]


def test_nodes_auto_compiles_the_job_of_the_explicit_values_it_chose() -> None:
    auto = build(deployment(vllm_nodes({"nodes": "auto", "gpus": "auto", "gpu_memory": "24 GiB"})), catalog_with(),
                 model=LLAMA_70B)  # fmt: skip
    explicit = build(deployment(vllm_nodes({"nodes": 2, "gpus": 8, "gpu_memory": "24 GiB"})), catalog_with(),
                     model=LLAMA_70B)  # fmt: skip
    auto_meta = dict(auto.job["Meta"])
    assert auto_meta.pop(META_AUTO).startswith("nodes: 2, gpus: 8, the fewest nodes, then GPUs on each")
    assert META_AUTO not in explicit.job["Meta"]  # the one difference: why auto chose, in the job's meta
    assert {**auto.job, "Meta": auto_meta} == explicit.job


def test_nodes_auto_splits_llama_cpps_layers_over_the_nodes(tmp_path: Any) -> None:
    from nomad_gpustack.estimate.local import read_local_model

    from ..support.model_fixtures import llama_gguf

    # A 70B-shaped Q4_K GGUF (~40 GiB of layers) on 3 GiB GPUs: the layers split over every GPU of every node.
    facts = read_local_model(llama_gguf(tmp_path / "m.gguf", layers=80, embd=8192, ff=28672, heads=64))
    data = {"name": "big", "huggingface_repo_id": "x/y-GGUF", "huggingface_filename": "m.gguf",
            "backend": "llama.cpp", "backend_version": "cuda", "backend_parameters": ["-c 4096"]}  # fmt: skip
    model = ModelLookup(facts)
    auto = build(deployment({**data, "nomad": {"nodes": "auto", "gpus": "auto", "gpu_memory": "3 GiB"}}),
                 catalog_with(), model=model)  # fmt: skip
    nodes, gpus = nodes_and_gpus(auto)
    assert nodes > 1 and "layers split over" in auto.job["Meta"][META_AUTO]
    assert "--rpc" in main_task(auto)["Config"]["args"]
    fewer = {"nodes": nodes - 1, "gpus": 8, "gpu_memory": "3 GiB"}
    assert "llama.cpp needs" in problem({**data, "nomad": fewer}, model)
    if gpus > 1:
        assert "llama.cpp needs" in problem(
            {**data, "nomad": {"nodes": nodes, "gpus": gpus // 2, "gpu_memory": "3 GiB"}}, model
        )


def test_nodes_auto_needs_gpus_auto() -> None:
    text = problem(vllm_nodes({"nodes": "auto", "gpus": 8, "gpu_memory": "24 GiB"}), LLAMA_70B)
    assert "nomad.nodes" in text and "nodes: auto chooses the nodes and the GPUs on each together" in text
    assert "set gpus: auto as well" in text


def test_nodes_auto_needs_a_backend_that_starts_across_nodes() -> None:
    data = {"name": "m", "image_name": "x:1", "backend": "Custom",
            "nomad": {"nodes": "auto", "gpus": "auto", "gpu_memory": "24 GiB"}}  # fmt: skip
    text = problem(data, LLAMA_70B)
    assert "nomad.nodes" in text and "has no nomad.distributed block" in text


def test_nodes_auto_too_big_even_at_the_cap_says_so() -> None:
    # On 4 GiB GPUs vLLM's own overhead (5.4 GiB) never fits, however many nodes.
    text = problem(vllm_nodes({"nodes": "auto", "gpus": "auto", "gpu_memory": "4 GiB"}), LLAMA_70B)
    assert "nomad.nodes" in text
    assert "does not fit on up to 16 nodes (nodes: auto looks no further) of up to 8 GPUs each of 4 GiB" in text


@pytest.mark.parametrize(("value", "message"), [(0, "between 1 and 256, or 'auto'"), ("many", "not a number of nodes")])
def test_nodes_refuses_anything_but_a_count_or_auto(value: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        deployment(vllm({"nodes": value}))
