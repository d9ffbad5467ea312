"""`nomad_gpustack.nomad.model` with the memory estimate: the `model` option, `gpus: auto`, sizes the engine would
refuse, `return_estimate`, and the Hub's cache shared with `nomadgs`; real playbooks against the Nomad double."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...support.helpers import nomadgs
from ...support.hf_hub import HubStandIn
from ...support.model_fixtures import LLAMA_31_8B, LLAMA_31_8B_BYTES
from ...support.nomad_double import NomadDouble, scenarios
from ..conftest import REFUSAL, cli_error, cli_estimate, requests_to, run_playbook, tensor_parallel, vllm_deployment

JOB = "llama"


def playbook(folder: Path, tasks: str) -> Path:
    path = folder / "play.yml"
    path.write_text(f"- hosts: localhost\n  gather_facts: false\n  tasks:\n{tasks}")
    return path


def gpus_requested(job: dict[str, Any]) -> int:
    (device,) = job["TaskGroups"][0]["Tasks"][-1]["Resources"]["Devices"]
    count: int = device["Count"]
    return count


def test_auto_from_a_local_model_refusals_and_the_estimate(
    nomad: NomadDouble, tmp_path: Path, llama_model: Path
) -> None:
    nomad.default_scenario = scenarios.manual()
    auto = vllm_deployment(tmp_path / "auto.yaml", {"gpus": "auto", "gpu_memory": "24 GiB"})
    one = vllm_deployment(tmp_path / "one.yaml", {"gpus": 1, "gpu_memory": "24 GiB"})
    book = playbook(
        tmp_path,
        f"""
    - name: refused
      nomad_gpustack.nomad.model: {{deployment: {one}, model: {llama_model}, return_estimate: true}}
      ignore_errors: true
    - name: refused in check mode
      nomad_gpustack.nomad.model: {{deployment: {one}, model: {llama_model}}}
      check_mode: true
      ignore_errors: true
    - name: refused inline
      nomad_gpustack.nomad.model:
        definition: {{name: llama, huggingface_repo_id: meta-llama/Llama-3.1-8B-Instruct, backend: vLLM,
                      backend_parameters: ["--max-model-len 32768"], nomad: {{gpus: 1, gpu_memory: 24 GiB}}}}
        model: {llama_model}
      ignore_errors: true
    - name: auto without metadata
      nomad_gpustack.nomad.model: {{deployment: {auto}, wait: false}}
      ignore_errors: true
    - name: a model that is not there
      nomad_gpustack.nomad.model: {{deployment: {auto}, model: {tmp_path / "nope"}, wait: false}}
      ignore_errors: true
    - name: no estimate without metadata
      nomad_gpustack.nomad.model: {{deployment: {one}, return_estimate: true, wait: false}}
      ignore_errors: true
    - name: auto
      nomad_gpustack.nomad.model:
        deployment: {auto}
        model: {llama_model}
        return_estimate: true
        return_job: true
        wait: false
    - name: auto again
      nomad_gpustack.nomad.model: {{deployment: {auto}, model: {llama_model}, wait: false}}
    - name: stopping needs no estimate
      nomad_gpustack.nomad.model: {{deployment: {one}, model: {llama_model}, state: absent}}
""",
    )
    play = run_playbook(book, env={"NOMAD_ADDR": nomad.address}, record=True)
    assert play.code == 0, play.text
    r = play.results()

    # The command's message, word for word (files are named as they were given in both).
    cli = cli_error("submit", one, "--model", llama_model, cwd=tmp_path)
    assert cli == f"{one}:7:9: {REFUSAL}"
    for name in ("refused", "refused in check mode"):
        refused = r[name]
        assert refused["failed"] is True and refused["exit_code"] == 2, refused
        assert refused["msg"] == cli, refused["msg"]
        assert refused["problems"][0]["field"] == "nomad.gpus" and refused["problems"][0]["line"] == 7
    # An inline definition is located in the playbook, where its gpus were written.
    line = next(i for i, text in enumerate(book.read_text().splitlines(), 1) if "{gpus: 1" in text)
    assert r["refused inline"]["msg"].startswith(f"{book}:{line}:"), r["refused inline"]["msg"]
    assert r["refused inline"]["msg"].endswith(REFUSAL)
    estimate = r["refused"]["estimate"]
    assert estimate == cli_estimate(one, llama_model, tmp_path), "the estimate beside the refusal"
    assert estimate["check"]["starts"] is False and REFUSAL.endswith(estimate["check"]["refusal"])
    assert "estimate" not in r["refused in check mode"]

    without = r["auto without metadata"]
    assert without["failed"] is True and without["exit_code"] == 2
    # The tests run with HF_HUB_OFFLINE=1, and their cache is empty.
    assert "auto needs the model's metadata, and there is none: HF_HUB_OFFLINE is set" in without["msg"]
    assert (
        "(set the model option (a GGUF file, or a folder with config.json), or set the value yourself)"
        in (without["msg"])
    )
    missing = r["a model that is not there"]
    assert missing["msg"] == f"model: {tmp_path / 'nope'}: no such file or folder", missing["msg"]
    assert "--model" not in without["msg"] + missing["msg"]
    no_estimate = r["no estimate without metadata"]
    assert no_estimate["failed"] is True and "no metadata for the model: HF_HUB_OFFLINE is set" in no_estimate["msg"]
    assert "(give the model's path (the model option))" in no_estimate["msg"], no_estimate["msg"]

    sized = r["auto"]
    assert sized["changed"] is True and sized["status"] == "registered"
    assert sized["estimate"] == cli_estimate(auto, llama_model, tmp_path), "the document of nomadgs estimate"
    assert sized["estimate"]["suggestion"]["gpus"] == 2 and sized["estimate"]["check"] is None
    assert tensor_parallel(sized["nomad_job"]) == "2"
    registered = nomad.jobs[f"default/{JOB}"]
    assert gpus_requested(registered) == 2 and registered["Meta"]["nomadgs_auto"].startswith("gpus: 2")
    assert r["auto again"]["changed"] is False, "the same size again: nothing to change"
    assert "estimate" not in r["auto again"]

    # A job of the same ID runs (sized by auto): the deployment that names 1 GPU stops it unrefused.
    stopped = r["stopping needs no estimate"]
    assert stopped["changed"] is True and stopped["status"] == "stopped"
    assert nomad.jobs[f"default/{JOB}"]["Stop"] is True

    # Bad sizes, bad paths and missing metadata sent nothing: the one registration is "auto"'s.
    assert requests_to(nomad, "POST", f"/v1/job/{JOB}") == 1
    assert requests_to(nomad, "POST", f"/v1/job/{JOB}/plan") == 2
    assert "Traceback" not in play.text


def test_auto_from_the_hub_through_the_cache_nomadgs_shares(nomad: NomadDouble, tmp_path: Path) -> None:
    index = {"metadata": {"total_size": LLAMA_31_8B_BYTES}, "weight_map": {}}
    repo = {"config.json": json.dumps(LLAMA_31_8B).encode(), "model.safetensors.index.json": json.dumps(index).encode()}
    auto = vllm_deployment(tmp_path / "auto.yaml", {"gpus": "auto", "gpu_model": "NVIDIA A100-SXM4-40GB"})
    one = vllm_deployment(tmp_path / "one.yaml", {"gpus": 1, "gpu_memory": "24 GiB"})
    book = playbook(
        tmp_path,
        f"""
    - name: planned
      nomad_gpustack.nomad.model: {{deployment: {auto}, return_estimate: true}}
    - name: refused
      nomad_gpustack.nomad.model: {{deployment: {one}}}
      ignore_errors: true
""",
    )
    with HubStandIn({"meta-llama/Llama-3.1-8B-Instruct": repo}) as hub:
        cache = tmp_path / "cache"
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "XDG_CACHE_HOME": str(cache)}
        first = run_playbook(book, "--check", env={"NOMAD_ADDR": nomad.address, **env}, record=True)
        assert first.code == 0, first.text
        asked = len(hub.requests)
        again = run_playbook(book, "--check", env={"NOMAD_ADDR": nomad.address, **env}, record=True)
        assert again.code == 0, again.text
        cli = nomadgs("estimate", auto, "--output", "json", env=env, cwd=tmp_path)
        assert cli.code == 0, cli.err
    assert asked > 0, "the Hub was asked once"
    assert len(hub.requests) == asked, "then the cache answered: the module's second run and nomadgs"
    assert list((cache / "nomadgs" / "models").rglob("*.json")), "the cache is $XDG_CACHE_HOME/nomadgs"
    planned = again.results()["planned"]
    assert planned["status"] == "planned" and planned["changed"] is True
    assert planned["estimate"] == json.loads(cli.out)
    assert planned["estimate"]["suggestion"]["gpus"] == 1
    # Explicit values are checked with the Hub's metadata too, as `nomadgs submit` checks them.
    assert again.results()["refused"]["msg"] == f"{one}:7:9: {REFUSAL}"
    assert requests_to(nomad, "POST", f"/v1/job/{JOB}") == 0, "check mode registers nothing"
