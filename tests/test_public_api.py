"""The small public API in `nomad_gpustack/__init__.py`: what the README's example does, and nothing loaded early."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import nomad_gpustack as ngs

from .support.components import ROOT

EXAMPLE = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"


def test_the_readme_example_compiles_and_renders() -> None:
    catalog = ngs.load_catalog([ROOT / "backends"])
    deployment = ngs.load_deployment(str(EXAMPLE))
    compiled = ngs.build(deployment, catalog)
    document = json.loads(ngs.render_text(compiled.job, "json"))
    assert document["Job"]["ID"] == compiled.job_id == "qwen2-5-7b-instruct"
    assert ngs.render_text(compiled.job, "hcl").startswith('job "qwen2-5-7b-instruct" {')
    assert (ROOT / "jobs" / "qwen2-5-7b-instruct.nomad.json").read_text() == ngs.render_text(compiled.job, "json")


def test_bad_input_is_an_input_error_with_located_problems(tmp_path: object) -> None:
    with pytest.raises(ngs.InputError) as caught:
        ngs.load_deployment(ROOT / "examples" / "no-such-file.yaml")
    assert isinstance(caught.value, ngs.NomadgsError) and caught.value.exit_code == 2
    assert caught.value.problems[0].message == "no such file"


def test_every_public_name_resolves_and_nothing_else_is_offered() -> None:
    for name in ngs.__all__:
        assert getattr(ngs, name) is not None
    assert dir(ngs) == sorted(ngs.__all__)
    with pytest.raises(AttributeError):
        _ = ngs.resolve  # type: ignore[attr-defined]


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = "import sys, nomad_gpustack; print(sorted(m for m in ('pydantic', 'yaml', 'httpx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
