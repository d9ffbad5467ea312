"""`nomadgs render` remembers renderings of unchanged inputs, and never serves a stale one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nomad_gpustack.cli.rendermemo import Remembered, RenderMemo

from ..support.components import ROOT
from ..support.helpers import nomadgs

EXAMPLE = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"

# Renders in a fresh interpreter and says which heavy modules it loaded on the way.
PROBE = """
import sys
from nomad_gpustack.cli import main
code = main(sys.argv[1:])
loaded = [m for m in ("pydantic", "yaml", "nomad_gpustack.compile.resolve") if m in sys.modules]
print(code, *loaded, file=sys.stderr)
"""


def render_probe(*args: str | Path, cwd: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "render", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, **env}, timeout=60, check=False,
    )  # fmt: skip
    *_, last = proc.stderr.strip().splitlines()
    code, *loaded = last.split()
    assert code == "0", proc.stderr
    return proc.stdout, loaded


@pytest.fixture
def workdir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder with a deployment and a backend file, and a cache folder of its own."""
    (tmp_path / "deploy.yaml").write_text(EXAMPLE.read_text())
    return tmp_path, {"XDG_CACHE_HOME": str(tmp_path / "cache")}


def test_an_unchanged_render_is_remembered_and_loads_no_compiler(workdir: tuple[Path, dict[str, str]]) -> None:
    folder, env = workdir
    first, loaded = render_probe("deploy.yaml", cwd=folder, env=env)
    assert "pydantic" in loaded and "nomad_gpustack.compile.resolve" in loaded
    second, loaded = render_probe("deploy.yaml", cwd=folder, env=env)
    assert second == first == (ROOT / "jobs" / "qwen2-5-7b-instruct.nomad.json").read_text()
    assert loaded == [], "a remembered render imports neither pydantic nor PyYAML nor the compiler"
    hcl, loaded = render_probe("deploy.yaml", "--format", "hcl", cwd=folder, env=env)
    assert hcl.startswith('job "qwen2-5-7b-instruct"') and "pydantic" in loaded, "each format is its own entry"


def test_a_changed_deployment_or_backend_file_is_compiled_again(workdir: tuple[Path, dict[str, str]]) -> None:
    folder, env = workdir
    deployment = folder / "deploy.yaml"
    render_probe("deploy.yaml", cwd=folder, env=env)
    deployment.write_text(deployment.read_text().replace("replicas: 1", "replicas: 3"))
    out, loaded = render_probe("deploy.yaml", cwd=folder, env=env)
    assert json.loads(out)["Job"]["TaskGroups"][0]["Count"] == 3 and "pydantic" in loaded
    backend = folder / "extra.yaml"
    backend.write_text("backend_name: mine-custom\nversion_configs:\n  v1:\n    image_name: me/x:1\n")
    render_probe("deploy.yaml", "--backends", backend, cwd=folder, env=env)
    assert render_probe("deploy.yaml", "--backends", backend, cwd=folder, env=env)[1] == []
    backend.write_text(backend.read_text().replace("me/x:1", "me/x:2"))
    assert "pydantic" in render_probe("deploy.yaml", "--backends", backend, cwd=folder, env=env)[1]


def test_warnings_come_back_with_a_remembered_render(tmp_path: Path) -> None:
    deployment = tmp_path / "warn.yaml"
    deployment.write_text(EXAMPLE.read_text() + "env: {HF_TOKEN: hf_abc}\n")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = nomadgs("render", deployment, env=env)
    second = nomadgs("render", deployment, env=env)
    assert first.code == second.code == 0 and first.out == second.out
    assert "HF_TOKEN" in first.err and first.err == second.err, "the same warnings, remembered or not"
    assert "hf_abc" not in first.err, "the warning names the variable, never its value"


def test_a_job_id_collision_is_reported_even_when_both_are_remembered(workdir: tuple[Path, dict[str, str]]) -> None:
    folder, env = workdir
    (folder / "copy.yaml").write_text((folder / "deploy.yaml").read_text())
    for name in ("deploy.yaml", "copy.yaml"):
        assert nomadgs("render", name, cwd=folder, env=env).code == 0
    run = nomadgs("render", "deploy.yaml", "copy.yaml", "-o", "out/", cwd=folder, env=env)
    assert run.code == 2 and "job 'qwen2-5-7b-instruct' is also produced by" in run.err


def test_a_broken_entry_is_a_miss_and_a_new_package_source_is_a_new_key(tmp_path: Path) -> None:
    memo = RenderMemo.open(tmp_path, (), "json")
    assert memo is not None
    deployment = tmp_path / "d.yaml"
    deployment.write_text("name: x\n")
    memo.remember(deployment, Remembered("x", "text\n", ("careful",)))
    assert memo.recall(deployment) == Remembered("x", "text\n", ("careful",))
    (entry,) = (tmp_path / "renders").iterdir()
    entry.write_text("{not json")
    assert memo.recall(deployment) is None
    assert RenderMemo.open(tmp_path, (tmp_path / "missing.yaml",), "json") is None, "an unreadable backend file"
