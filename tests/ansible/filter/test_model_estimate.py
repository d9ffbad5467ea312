"""The memory estimate in templates: `nomad_job(model=...)` and the `model_estimate` filter, through Ansible and
through plain Jinja2, against what `nomadgs render --model` and `nomadgs estimate --output json` give."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest

import nomad_gpustack.filters
from nomad_gpustack.errors import InputError

from ...support.helpers import nomadgs
from ..conftest import REFUSAL, cli_error, cli_estimate, run_playbook, tensor_parallel, vllm_deployment


def test_filters_in_a_playbook_estimate_size_and_refuse_as_the_command_does(tmp_path: Path, llama_model: Path) -> None:
    auto = vllm_deployment(tmp_path / "auto.yaml", {"gpus": "auto", "gpu_memory": "24 GiB"})
    one = vllm_deployment(tmp_path / "one.yaml", {"gpus": 1, "gpu_memory": "24 GiB"})
    book = tmp_path / "estimate.yml"
    book.write_text(
        f"""
- hosts: localhost
  gather_facts: false
  vars:
    model: {llama_model}
  tasks:
    - name: estimate
      ansible.builtin.debug:
        msg: "{{{{ '{one}' | nomad_gpustack.nomad.model_estimate(model=model) }}}}"
    - name: estimate of an inline deployment
      ansible.builtin.debug:
        msg: "{{{{ (inline | nomad_gpustack.nomad.model_estimate(model=model)).suggestion }}}}"
      vars:
        inline: "{{{{ lookup('file', '{auto}') | from_yaml }}}}"
    - name: auto
      ansible.builtin.debug:
        msg: "{{{{ '{auto}' | nomad_gpustack.nomad.nomad_job(model=model) }}}}"
    - name: refused
      ansible.builtin.debug:
        msg: "{{{{ '{one}' | nomad_gpustack.nomad.nomad_job(model=model) }}}}"
      ignore_errors: true
    - name: unchecked without a model
      ansible.builtin.debug:
        msg: "{{{{ ('{one}' | nomad_gpustack.nomad.nomad_job).Job.ID }}}}"
    - name: auto without metadata
      ansible.builtin.debug:
        msg: "{{{{ '{auto}' | nomad_gpustack.nomad.nomad_job }}}}"
      ignore_errors: true
    - name: estimate without metadata
      ansible.builtin.debug:
        msg: "{{{{ '{one}' | nomad_gpustack.nomad.model_estimate }}}}"
      ignore_errors: true
    - name: a model that is not there
      ansible.builtin.debug:
        msg: "{{{{ '{one}' | nomad_gpustack.nomad.model_estimate(model='{tmp_path / "nope"}') }}}}"
      ignore_errors: true
"""
    )
    play = run_playbook(book, record=True)
    assert play.code == 0, play.text
    r = play.results()

    assert r["estimate"]["msg"] == cli_estimate(one, llama_model, tmp_path), "the same document as nomadgs estimate"
    assert r["estimate"]["msg"]["check"]["starts"] is False
    assert r["estimate of an inline deployment"]["msg"]["gpus"] == 2

    rendered = nomadgs("render", auto, "--model", llama_model)
    assert r["auto"]["msg"] == json.loads(rendered.out), "the same job as nomadgs render --model"
    assert tensor_parallel(r["auto"]["msg"]) == "2"

    refused = r["refused"]
    assert refused["failed"] is True
    assert f"nomad_job: {one}:7:9: {REFUSAL}" in refused["msg"], refused["msg"]  # the path as the play gave it
    assert cli_error("validate", one, "--model", llama_model, cwd=tmp_path) == f"{one}:7:9: {REFUSAL}"
    assert r["unchecked without a model"]["msg"] == "llama", "as render: explicit values unchecked without a model"

    # The tests run with HF_HUB_OFFLINE=1: nothing to be had from the Hub or its (empty) cache.
    no_metadata = r["auto without metadata"]["msg"]
    assert "auto needs the model's metadata, and there is none: HF_HUB_OFFLINE is set" in no_metadata
    assert "give model=PATH (a GGUF file, or a folder with config.json)" in no_metadata, no_metadata
    assert "--model" not in no_metadata
    nothing = r["estimate without metadata"]["msg"]
    assert "model_estimate: " in nothing and "no metadata for the model: HF_HUB_OFFLINE is set" in nothing
    assert "(give the model's path (model=PATH))" in nothing, nothing
    missing = r["a model that is not there"]["msg"]
    assert f"model_estimate: model: {tmp_path / 'nope'}: no such file or folder" in missing, missing
    assert "Traceback" not in play.text


def test_filters_in_plain_jinja2(tmp_path: Path, llama_model: Path) -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters.update(nomad_gpustack.filters.FILTERS)
    one = vllm_deployment(tmp_path / "one.yaml", {"gpus": 1, "gpu_memory": "24 GiB"})
    auto = vllm_deployment(tmp_path / "auto.yaml", {"gpus": "auto", "gpu_memory": "24 GiB"})

    text = env.from_string("{{ p | model_estimate(model=m) | tojson }}").render(p=str(one), m=str(llama_model))
    assert json.loads(text) == cli_estimate(one, llama_model)
    suggested = env.from_string("{{ (p | model_estimate(model=m)).suggestion.gpus }}")
    assert suggested.render(p=str(one), m=llama_model) == "2"

    job = env.from_string("{{ p | nomad_job(model=m) | tojson }}").render(p=str(auto), m=str(llama_model))
    assert tensor_parallel(json.loads(job)) == "2"
    with pytest.raises(InputError) as refused:
        env.from_string("{{ p | nomad_job(model=m) }}").render(p=str(one), m=str(llama_model))
    assert str(refused.value) == cli_error("validate", one, "--model", llama_model)

    with pytest.raises(InputError) as missing:
        env.from_string("{{ p | model_estimate(model=m) }}").render(p=str(one), m=str(tmp_path / "nope"))
    assert str(missing.value) == f"model: {tmp_path / 'nope'}: no such file or folder"
    with pytest.raises(InputError) as inline:
        env.from_string("{{ d | model_estimate }}").render(d={"name": "x", "backend": "vLLM"})
    assert str(inline.value).startswith("model_estimate input: no metadata for the model: the deployment names no")
    assert str(inline.value).endswith("the deployment names no model (give the model's path (model=PATH))")
