"""The library entry points other code (the Ansible collection) calls: `estimate_document`, `lookup_model`."""

from __future__ import annotations

from pathlib import Path

import pytest

import nomad_gpustack as ngs
from nomad_gpustack.errors import InputError, UnreachableError

from ..support.helpers import catalog_with, deployment
from ..support.model_fixtures import LLAMA_31_8B, LLAMA_31_8B_BYTES, hf_folder

DATA = {
    "name": "llama",
    "huggingface_repo_id": "meta-llama/Llama-3.1-8B-Instruct",
    "backend": "vLLM",
    "backend_parameters": ["--max-model-len 32768"],
    "nomad": {"gpus": 1, "gpu_memory": "24 GiB"},
}


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
