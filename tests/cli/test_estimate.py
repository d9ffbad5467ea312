"""`nomadgs estimate`, and `--model` on render and validate, run as the real command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support.helpers import nomadgs
from ..support.model_fixtures import LLAMA_31_8B, LLAMA_31_8B_BYTES, hf_folder, llama_gguf


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def vllm(nomad: dict[str, Any], *parameters: str) -> dict[str, Any]:
    return {
        "name": "llama",
        "huggingface_repo_id": "meta-llama/Llama-3.1-8B-Instruct",
        "backend": "vLLM",
        "backend_parameters": list(parameters) or ["--max-model-len 32768"],
        "nomad": nomad,
    }


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return hf_folder(tmp_path / "Llama-3.1-8B", LLAMA_31_8B, total_size=LLAMA_31_8B_BYTES)


def test_estimate_prints_a_table_and_a_suggestion(tmp_path: Path, model: Path) -> None:
    deployment = write(tmp_path / "d.yaml", vllm({"gpus": 1, "gpu_memory": "24 GiB"}))
    run = nomadgs("estimate", deployment, "--model", model)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"model     {model} (config.json, safetensors headers)"
    assert "engine    vLLM at --max-model-len 32768, KV cache auto" in lines
    header = next(line for line in lines if line.lstrip().startswith("GPUS"))
    assert header.split() == [
        "GPUS",
        "WEIGHTS",
        "KV/TOKEN",
        "KV@32768",
        "OVERHEAD",
        "TOTAL",
        "MIN",
        "GPU",
        "FITS",
        "SEQS",
    ]
    one = next(line for line in lines if line.split()[:1] == ["1"])
    assert one.split()[3:5] == ["128", "KiB"] and one.split()[-2:] == ["no", "0"]
    assert "as deployed (gpus: 1): refused: vLLM needs 23.9 GiB per GPU" in run.out
    assert run.out.rstrip().endswith(
        "suggested gpus: 2, gpu_memory: 24 GiB (the fewest GPUs of 24 GiB (nomad.gpu_memory) that start the engine)"
    )


def test_estimate_json_has_the_figures_of_every_gpu_count(tmp_path: Path, model: Path) -> None:
    deployment = write(tmp_path / "d.yaml", vllm({}, "--max-model-len 8192", "--kv-cache-dtype fp8"))
    run = nomadgs("estimate", deployment, "--model", model, "--output", "json")
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    assert [r["gpus"] for r in doc["rows"]] == [1, 2, 4, 8]
    assert doc["rows"][0]["kv_per_token"] == 65536 and doc["rows"][0]["kv_at_context"] == 512 * 1024**2
    assert doc["gpu_memory"] is None and doc["rows"][0]["fits"] is None
    assert doc["suggestion"]["gpus"] == 1 and doc["suggestion"]["gpu_memory"] % 1024**3 == 0
    assert doc["model"]["weight_bytes"] == LLAMA_31_8B_BYTES and doc["kv_cache_dtype"] == "fp8"
    assert doc["check"] is None  # no GPU size: nothing to check


def test_estimate_of_a_gguf_uses_llama_cpps_rule(tmp_path: Path) -> None:
    gguf = llama_gguf(tmp_path / "llama.gguf")
    deployment = write(
        tmp_path / "g.yaml",
        {"name": "g", "huggingface_repo_id": "org/m-GGUF", "huggingface_filename": "llama.gguf",
         "backend": "llama.cpp", "backend_version": "cuda", "backend_parameters": ["-c 8192"],
         "nomad": {"gpus": 1, "gpu_memory": "8 GiB"}},
    )  # fmt: skip
    doc = json.loads(nomadgs("estimate", deployment, "--model", gguf, "--output", "json").out)
    assert doc["engine"] == "llama.cpp" and doc["context"] == 8192
    assert doc["rows"][0]["kv_at_context"] == 1024**3 and doc["rows"][0]["fits"] is True
    assert doc["check"] == {"gpus": 1, "starts": True, "refusal": None, "warnings": []}


def test_estimate_without_metadata_and_with_a_bad_model_path_are_input_errors(tmp_path: Path) -> None:
    deployment = write(tmp_path / "d.yaml", vllm({}))
    offline = nomadgs("estimate", deployment)
    assert offline.code == 2 and "no metadata for the model: HF_HUB_OFFLINE is set" in offline.err
    missing = nomadgs("estimate", deployment, "--model", tmp_path / "nope")
    assert missing.code == 2 and "--model: " in missing.err and "no such file or folder" in missing.err
    assert "Traceback" not in offline.err + missing.err
    nameless = write(tmp_path / "n.yaml", {"name": "m", "backend": "vLLM", "nomad": {"gpu_memory": "24 GiB"}})
    unnamed = nomadgs("estimate", nameless)
    assert unnamed.code == 2 and "the deployment names no model" in unnamed.err
    assert unnamed.err.count("--model PATH") == 1, "the advice is given once"


def test_render_with_model_fills_in_auto(tmp_path: Path, model: Path) -> None:
    deployment = write(tmp_path / "d.yaml", vllm({"gpus": "auto", "gpu_model": "NVIDIA A100-SXM4-40GB"}))
    run = nomadgs("render", deployment, "--model", model)
    assert run.code == 0, run.err
    job = json.loads(run.out)["Job"]
    args = job["TaskGroups"][0]["Tasks"][-1]["Config"]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "1"
    assert job["Meta"]["nomadgs_auto"].startswith("gpus: 1, the fewest 40 GiB GPUs (nomad.gpu_model NVIDIA")
    refused = nomadgs("render", deployment)
    assert refused.code == 2 and "auto needs the model's metadata" in refused.err


def test_validate_refuses_what_vllm_would_refuse_and_render_without_model_does_not_look(
    tmp_path: Path, model: Path
) -> None:
    deployment = write(tmp_path / "d.yaml", vllm({"gpus": 1, "gpu_memory": "24 GiB"}))
    run = nomadgs("validate", deployment, "--model", model)
    assert run.code == 2
    assert "nomad.gpus: vLLM needs 23.9 GiB per GPU at --max-model-len 32768" in run.err
    assert "use gpus: 2, or --max-model-len ≤ 13312" in run.err
    unchecked = nomadgs("validate", deployment)  # the tests run with HF_HUB_OFFLINE=1
    assert unchecked.code == 0
    assert "cannot check that the model fits its GPUs: HF_HUB_OFFLINE is set" in unchecked.err
    rendered = nomadgs("render", deployment)
    assert rendered.code == 0 and rendered.err == ""
    ok = nomadgs("validate", write(tmp_path / "ok.yaml", vllm({"gpus": 2, "gpu_memory": "24 GiB"})), "--model", model)
    assert ok.code == 0 and "estimate: vLLM needs 14.9 GiB per GPU" in ok.out


def test_plan_compiles_the_job_submit_would_register(tmp_path: Path, model: Path) -> None:
    from ..support.nomad_double import NomadDouble

    deployment = write(tmp_path / "d.yaml", vllm({"gpus": "auto", "gpu_model": "NVIDIA A100-SXM4-40GB"}))
    with NomadDouble() as nomad:
        env = {"NOMAD_ADDR": nomad.address}
        planned = nomadgs("plan", deployment, "--model", model, "--output", "json", env=env)
        assert planned.code == 1 and json.loads(planned.out)["diff"] == "Added", planned.err
        (body,) = [json.loads(r.body) for r in nomad.requests if r.path.endswith("/plan")]
        assert body["Job"]["Meta"]["nomadgs_auto"].startswith("gpus: 1"), "auto was sized as submit sizes it"
    without = nomadgs("plan", deployment)
    assert without.code == 255 and "auto needs the model's metadata" in without.err


def test_model_describes_one_deployment(tmp_path: Path, model: Path) -> None:
    a = write(tmp_path / "a.yaml", vllm({}))
    b = write(tmp_path / "b.yaml", {**vllm({}), "name": "other"})
    run = nomadgs("render", a, b, "--model", model, "-o", tmp_path / "out")
    assert run.code == 2 and "--model describes one model" in run.err


def test_estimate_of_a_replica_over_nodes_prints_per_node_and_per_gpu(tmp_path: Path) -> None:
    from ..support.model_fixtures import LLAMA_31_70B, LLAMA_31_70B_BYTES

    model = hf_folder(tmp_path / "Llama-3.1-70B", LLAMA_31_70B, total_size=LLAMA_31_70B_BYTES)
    data = {**vllm({"nodes": "auto", "gpus": "auto", "gpu_memory": "24 GiB"}, "--max-model-len 8192"),
            "backend_version": "0.19.0"}  # fmt: skip
    deployment = write(tmp_path / "d.yaml", data)
    run = nomadgs("estimate", deployment, "--model", model)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert (
        "nodes     2 per replica, 8 GPUs on each: tensor parallel 8 within a node, pipeline parallel 2 across nodes"
        in lines
    )
    header = next(line for line in lines if line.lstrip().startswith("GPUS/NODE"))
    assert header.split()[-4:] == ["PER", "NODE", "FITS", "SEQS"]
    eight = next(line for line in lines if line.split()[:1] == ["8"])
    assert eight.split()[9:11] == ["13.8", "GiB"] and eight.split()[13:15] == ["110.2", "GiB"]  # per GPU, per node
    assert run.out.rstrip().endswith(
        "suggested nodes: 2, gpus: 8, gpu_memory: 24 GiB "
        "(the fewest GPUs of 24 GiB (nomad.gpu_memory) on each of 2 nodes that start the engine)"
    )

    run = nomadgs("estimate", deployment, "--model", model, "--output", "json")
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    assert doc["nodes"] == 2 and doc["suggestion"]["gpus"] == 8
    row = next(r for r in doc["rows"] if r["gpus"] == 8)
    assert row["nodes"] == 2 and row["per_node"] == row["total"] * 8
    assert row["weights"] == -(-LLAMA_31_70B_BYTES // 16)  # weights over 2 nodes × 8 GPUs
    assert row["split"] == "tensor parallel 8 within a node, pipeline parallel 2 across nodes"

    # Explicit nodes: the same figures for that count, and the verdict on the deployment's GPUs.
    explicit = write(tmp_path / "e.yaml", {**data, "nomad": {"nodes": 2, "gpus": 8, "gpu_memory": "24 GiB"}})
    run = nomadgs("estimate", explicit, "--model", model, "--output", "json")
    assert run.code == 0, run.err
    same = json.loads(run.out)
    assert same["rows"] == doc["rows"] and same["check"]["starts"] is True and same["check"]["refusal"] is None


def test_estimate_of_one_node_keeps_its_keys(tmp_path: Path, model: Path) -> None:
    deployment = write(tmp_path / "d.yaml", vllm({"gpus": 1, "gpu_memory": "24 GiB"}))
    run = nomadgs("estimate", deployment, "--model", model, "--output", "json")
    doc = json.loads(run.out)
    assert doc["nodes"] == 1 and all(r["nodes"] == 1 and r["split"] is None for r in doc["rows"])
    assert "nodes " not in nomadgs("estimate", deployment, "--model", model).out
