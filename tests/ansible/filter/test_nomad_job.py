"""The `nomad_job` filter through Ansible (`ansible localhost -m debug`, a playbook) and through plain Jinja2."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
import yaml

import nomad_gpustack.filters
from nomad_gpustack.errors import InputError
from nomad_gpustack.nomad.render import render_text

from ..conftest import EXAMPLES, run_playbook, run_tool

EXAMPLE = EXAMPLES / "llamacpp-qwen2.5-0.5b-cpu.yaml"


def expected_json() -> dict[str, object]:
    from nomad_gpustack.compile.build import build
    from nomad_gpustack.spec.loader import load_catalog, load_deployment

    compiled = build(load_deployment(EXAMPLE), load_catalog(), check=True)
    document: dict[str, object] = json.loads(render_text(compiled.job, "json"))
    return document


def test_filter_in_a_playbook_json_and_hcl_and_errors(tmp_path: Path) -> None:
    book = tmp_path / "filter.yml"
    book.write_text(
        f"""
- hosts: localhost
  gather_facts: false
  vars:
    deployment: "{{{{ lookup('file', '{EXAMPLE}') | from_yaml }}}}"
  tasks:
    - name: json
      ansible.builtin.copy:
        content: "{{{{ deployment | nomad_gpustack.nomad.nomad_job | to_nice_json }}}}"
        dest: "{tmp_path}/job.nomad.json"
        mode: "0644"
    - name: hcl
      ansible.builtin.copy:
        content: "{{{{ deployment | nomad_gpustack.nomad.nomad_job(backends=[], format='hcl') }}}}"
        dest: "{tmp_path}/job.nomad.hcl"
        mode: "0644"
    - name: the job id
      ansible.builtin.assert:
        that: (deployment | nomad_gpustack.nomad.nomad_job).Job.ID == 'qwen2-5-0-5b-instruct-gguf'
    - name: bad input
      ansible.builtin.debug:
        msg: "{{{{ deployment | combine({{'replicas': 'two'}}) | nomad_gpustack.nomad.nomad_job }}}}"
      ignore_errors: true
"""
    )
    play = run_playbook(book, record=True)
    assert play.code == 0, play.text
    assert json.loads((tmp_path / "job.nomad.json").read_text()) == expected_json()
    assert (tmp_path / "job.nomad.hcl").read_text().startswith('job "qwen2-5-0-5b-instruct-gguf" {')
    bad = play.results()["bad input"]
    assert bad["failed"] is True
    assert "nomad_job: nomad_job input: replicas: expected a whole number, got text ('two')" in bad["msg"], bad["msg"]
    assert "Traceback" not in play.text


def test_filter_with_ansible_adhoc_debug() -> None:
    variables = json.dumps({"d": yaml.safe_load(EXAMPLE.read_text())})
    run = run_tool(
        "ansible", "localhost", "-c", "local", "-i", "localhost,", "-m", "ansible.builtin.debug",
        "-a", "msg={{ d | nomad_gpustack.nomad.nomad_job(format='hcl') }}", "-e", variables,
    )  # fmt: skip
    assert run.code == 0, run.text
    assert 'job \\"qwen2-5-0-5b-instruct-gguf\\" {' in run.out


def test_filter_in_plain_jinja2() -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters.update(nomad_gpustack.filters.FILTERS)
    deployment = yaml.safe_load(EXAMPLE.read_text())
    text = env.from_string("{{ d | nomad_job | tojson }}").render(d=deployment)
    assert json.loads(text) == expected_json()
    hcl = env.from_string("{{ d | nomad_job(format='hcl') }}").render(d=deployment)
    assert hcl.startswith('job "qwen2-5-0-5b-instruct-gguf" {')
    by_path = env.from_string("{{ (p | nomad_job).Job.Name }}").render(p=str(EXAMPLE))
    assert by_path == "qwen2.5-0.5b-instruct-gguf"
    with pytest.raises(InputError) as caught:
        env.from_string("{{ d | nomad_job }}").render(d={**deployment, "replicas": "two"})
    assert str(caught.value) == "nomad_job input: replicas: expected a whole number, got text ('two')"
    with pytest.raises(InputError, match="format 'yaml' is not known"):
        env.from_string("{{ d | nomad_job(format='yaml') }}").render(d=deployment)
