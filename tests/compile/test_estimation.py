"""The library entry points other code (the Ansible collection) calls: `estimate_document`, `lookup_model`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import nomad_gpustack as ngs
from nomad_gpustack.errors import InputError, UnreachableError
from nomad_gpustack.filters import model_estimate

from ..support.helpers import catalog_with, deployment, nomadgs
from ..support.model_fixtures import LLAMA_31_8B, LLAMA_31_8B_BYTES, hf_folder

DATA = {
    "name": "llama",
    "huggingface_repo_id": "meta-llama/Llama-3.1-8B-Instruct",
    "backend": "vLLM",
    "backend_parameters": ["--max-model-len 32768"],
    "nomad": {"gpus": 1, "gpu_memory": "24 GiB"},
}


HINT = "(give the model's path (--model PATH))"


def test_no_metadata_is_said_in_one_wording_whatever_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file, "no metadata for the model: <why>", and what to give: offline, unreachable, not here, none."""

    def message(data: dict[str, object], error: type[Exception] = InputError) -> str:
        with pytest.raises(error) as caught:
            ngs.estimate_document(deployment(data), catalog_with(), cache_dir=tmp_path)
        return str(caught.value)

    base = {k: v for k, v in DATA.items() if k != "huggingface_repo_id"}
    offline = "HF_HUB_OFFLINE is set and meta-llama/Llama-3.1-8B-Instruct is not in the cache"
    cases = {
        "/nowhere/model is not on this machine": {**base, "local_path": "/nowhere/model"},
        "ModelScope models are not looked up": {**base, "model_scope_model_id": "qwen/Qwen2"},
        "the deployment names no model": base,
        offline: DATA,
    }
    for reason, data in cases.items():
        assert message(data) == f"deploy.yaml: no metadata for the model: {reason} {HINT}"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    unreachable = message(DATA, UnreachableError)
    assert unreachable.startswith("deploy.yaml: no metadata for the model: the Hugging Face Hub at http://127.0.0.1:9")
    assert unreachable.endswith(HINT)
    with pytest.raises(UnreachableError) as caught:  # a filter names its argument, not the flag
        model_estimate(DATA)
    assert str(caught.value).endswith("(give the model's path (model=PATH))")


def test_the_document_has_the_table_and_the_verdict(tmp_path: Path) -> None:
    model = hf_folder(tmp_path / "m", LLAMA_31_8B, total_size=LLAMA_31_8B_BYTES)
    doc = ngs.estimate_document(deployment(DATA), catalog_with(), model_path=model, cache_dir=tmp_path)
    assert doc["file"] == "deploy.yaml" and doc["engine"] == "vLLM" and doc["context"] == 32768
    assert doc["check"]["gpus"] == 1 and doc["check"]["starts"] is False
    assert doc["check"]["refusal"].endswith("use gpus: 2, or --max-model-len ≤ 13312")
    assert doc["suggestion"]["gpus"] == 2
    lookup = ngs.lookup_model(deployment(DATA).spec, model_path=model)
    with pytest.raises(InputError, match=r"vLLM needs 23\.9 GiB per GPU"):
        ngs.build(deployment(DATA), catalog_with(), model=lookup)


def test_missing_metadata_is_an_input_error_and_an_unreachable_hub_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match=r"model: .* no such file or folder"):
        ngs.estimate_document(deployment(DATA), catalog_with(), model_path=tmp_path / "none")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set"):
        ngs.estimate_document(deployment(DATA), catalog_with(), cache_dir=tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UnreachableError, match="unreachable"):
        ngs.estimate_document(deployment(DATA), catalog_with(), cache_dir=tmp_path)


def test_a_context_vllm_refuses_is_refused_wherever_the_estimate_is_read(tmp_path: Path) -> None:
    """The warning, the verdict, the table and validate say the same: one source of the verdict."""
    model = hf_folder(tmp_path / "m", {**LLAMA_31_8B, "max_position_embeddings": 8192}, total_size=LLAMA_31_8B_BYTES)
    data = {**DATA, "backend_parameters": ["--max-model-len 16384"], "nomad": {"gpus": 1, "gpu_memory": "80 GiB"}}
    doc = ngs.estimate_document(deployment(data), catalog_with(), model_path=model, cache_dir=tmp_path)
    reason = doc["check"]["refusal"]
    assert reason is not None and "longer than the model's maximum (8192): vLLM refuses it" in reason
    assert reason in doc["warnings"] and doc["check"]["starts"] is False
    assert not any(row["fits"] for row in doc["rows"]) and doc["suggestion"]["gpus"] is None
    lookup = ngs.lookup_model(deployment(data).spec, model_path=model)
    with pytest.raises(InputError, match="longer than the model's maximum"):
        ngs.build(deployment(data), catalog_with(), model=lookup)
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(data))
    run = nomadgs("estimate", path, "--model", model)
    assert run.code == 0, run.err
    assert "as deployed (gpus: 1): refused: --max-model-len 16384 is longer" in run.out
    assert "starts" not in run.out and " yes " not in run.out
    assert nomadgs("validate", path, "--model", model).code == 2


def test_by_gpustacks_rule_a_model_too_big_may_not_start_and_the_verdict_does_not_say_it_starts(
    tmp_path: Path,
) -> None:
    """Other backends get GPUStack's rule: not enough memory is a warning, not a refusal; the verdict agrees."""
    model = hf_folder(tmp_path / "m", LLAMA_31_8B, total_size=LLAMA_31_8B_BYTES)
    data = {"name": "m", "huggingface_repo_id": "o/m", "backend": "TensorRT-LLM",
            "nomad": {"gpus": 1, "gpu_memory": "8 GiB"}}  # fmt: skip
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(data))
    run = nomadgs("estimate", path, "--model", model)
    assert run.code == 0, run.err
    assert "as deployed (gpus: 1): may not start\n  warning: TensorRT-LLM needs" in run.out


def test_a_parameter_that_cannot_be_split_is_refused_by_the_estimate_as_by_the_compiler(tmp_path: Path) -> None:
    """One reading of the deployment for the estimate: a parameter left out of it would estimate something else
    than what runs, so `nomadgs estimate` says what `render` says, at the same line."""
    model = hf_folder(tmp_path / "m", LLAMA_31_8B, total_size=LLAMA_31_8B_BYTES)
    data = {**DATA, "backend_parameters": ["--max-model-len 32768", "--served-model-name 'llama"]}
    with pytest.raises(InputError) as rendered:
        ngs.build(deployment(data), catalog_with())
    with pytest.raises(InputError) as estimated:
        ngs.estimate_document(deployment(data), catalog_with(), model_path=model, cache_dir=tmp_path)
    assert estimated.value.problems == rendered.value.problems
    (problem,) = estimated.value.problems
    assert problem.field == "backend_parameters[1]" and problem.message.startswith("cannot split the parameter")
    lookup = ngs.lookup_model(deployment(data).spec, model_path=model)
    with pytest.raises(InputError) as sized:  # resolve's sizing reads the parameters the same way
        ngs.build(deployment(data), catalog_with(), model=lookup)
    assert sized.value.problems == rendered.value.problems
