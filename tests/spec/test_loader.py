"""Deployments given as data (an Ansible task's inline definition, a filter's input)."""

from __future__ import annotations

import pytest

from nomad_gpustack.errors import InputError
from nomad_gpustack.spec.loader import deployment_from_data
from nomad_gpustack.spec.yamlsource import Mark

DEPLOYMENT = {"name": "tiny", "source": "huggingface", "huggingface_repo_id": "a/b", "backend": "llama.cpp"}


def test_valid_data_is_a_deployment_and_keys_become_text() -> None:
    class Tagged(str):  # templating engines hand over subclasses of str
        pass

    source = deployment_from_data({**DEPLOYMENT, "name": Tagged("tiny"), "env": {1.5: "x"}}, "task")
    assert source.spec.name == "tiny" and type(source.spec.name) is str
    assert source.filename == "task"


def test_problems_use_the_marks_given() -> None:
    marks = {(): Mark(10, 7), ("replicas",): Mark(15, 21)}
    key_marks = {("replics",): Mark(16, 11)}
    with pytest.raises(InputError) as caught:
        deployment_from_data({**DEPLOYMENT, "replicas": "two", "replics": 1}, "play.yml", marks=marks,
                             key_marks=key_marks)  # fmt: skip
    lines = str(caught.value).splitlines()
    assert "play.yml:15:21: replicas: expected a whole number, got text ('two')" in lines
    assert any(line.startswith("play.yml:16:11: replics: unknown key 'replics'") for line in lines), lines


def test_without_marks_problems_name_the_source() -> None:
    with pytest.raises(InputError) as caught:
        deployment_from_data({**DEPLOYMENT, "replicas": "two"}, "nomad_job input")
    assert str(caught.value) == "nomad_job input: replicas: expected a whole number, got text ('two')"
    with pytest.raises(InputError, match="expected a mapping"):
        deployment_from_data(["not", "a", "mapping"], "x")
