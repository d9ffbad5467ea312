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
