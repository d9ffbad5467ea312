"""`nomadgs render` remembers renderings of unchanged inputs, and never serves a stale one."""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
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


def test_a_broken_or_foreign_entry_is_a_miss(tmp_path: Path) -> None:
    memo = RenderMemo.open(tmp_path, (), "json")
    assert memo is not None
    deployment, other = tmp_path / "d.yaml", tmp_path / "e.yaml"
    deployment.write_text("name: x\n")
    other.write_text("name: y\n")
    memo.remember(deployment, Remembered("x", "text\n", ("careful",)))
    assert memo.recall(deployment) == Remembered("x", "text\n", ("careful",))
    (entry,) = (tmp_path / "renders").iterdir()
    good = json.loads(entry.read_text())
    for broken in (
        b"{not json",
        b"\xff\xfe not UTF-8",
        b"[]",
        json.dumps({**good, "warnings": "careful"}).encode(),
        json.dumps({**good, "job_id": 7}).encode(),
        json.dumps({**good, "extra": 1}).encode(),
    ):
        entry.write_bytes(broken)
        assert memo.recall(deployment) is None, broken
    # Another deployment's entry under this one's name (a rename, a copy): written for another key, a miss.
    memo.remember(other, Remembered("y", "other text\n", ()))
    (other_entry,) = (e for e in (tmp_path / "renders").iterdir() if e != entry)
    os.replace(other_entry, entry)
    assert memo.recall(deployment) is None
    assert RenderMemo.open(tmp_path, (tmp_path / "missing.yaml",), "json") is None, "an unreadable backend file"


def test_a_planted_rendering_of_another_owner_is_not_served(workdir: tuple[Path, dict[str, str]]) -> None:
    """A valid entry for exactly this render, but not the user's: the render compiles instead."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    folder, env = workdir
    first = nomadgs("render", "deploy.yaml", cwd=folder, env=env)
    (entry,) = (folder / "cache" / "nomadgs" / "renders").iterdir()
    entry.write_text(entry.read_text().replace("vllm/vllm-openai", "evil/vllm-openai"))
    assert "evil/vllm-openai" in nomadgs("render", "deploy.yaml", cwd=folder, env=env).out, "the user's own: served"
    os.chown(entry, 4242, 4242)
    again = nomadgs("render", "deploy.yaml", cwd=folder, env=env)
    assert again.code == 0 and again.out == first.out and "evil" not in again.out


def test_check_compiles_even_when_every_rendering_is_remembered(workdir: tuple[Path, dict[str, str]]) -> None:
    folder, env = workdir
    render_probe("deploy.yaml", "-o", "out/", cwd=folder, env=env)
    assert render_probe("deploy.yaml", "-o", "out/", cwd=folder, env=env)[1] == [], "remembered"
    _, loaded = render_probe("deploy.yaml", "-o", "out/", "--check", cwd=folder, env=env)
    assert "nomad_gpustack.compile.resolve" in loaded, "--check answers from a fresh compile, not the memo"


def copy_tree(to: Path) -> Path:
    """This checkout's package and built-in catalog, without compiled bytecode, in `to`."""
    shutil.copytree(ROOT / "nomad_gpustack", to / "nomad_gpustack", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "backends", to / "backends")
    shutil.copytree(ROOT / "examples", to / "examples", ignore=shutil.ignore_patterns("ansible", "terraform", "ci"))
    shutil.copytree(ROOT / "jobs", to / "jobs")
    return to


def edit_in_place(path: Path, old: str, new: str) -> None:
    """Change `path` as `cp -p`, `rsync -a` or `tar x` leave a changed file: the same size and modification time."""
    assert len(old) == len(new) and old in path.read_text()
    before = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_change_that_keeps_size_and_time_is_rendered(tmp_path: Path) -> None:
    """The built-in catalog and nomadgs's own code are keyed by content: a file changed without changing its
    size or modification time gives the new output, to `render` and to `render --check`."""
    tree = copy_tree(tmp_path / "tree")
    # No bytecode: Python's own check of a .pyc is by size and time, and would run the old code.
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    example = "examples/vllm-qwen2.5-7b-instruct.yaml"

    def render(*args: str) -> tuple[str, list[str]]:
        return render_probe(example, *args, cwd=tree, env=env)

    first, _ = render()
    assert "vllm/vllm-openai:v0.19.0" in first
    assert render()[1] == [], "remembered"
    assert nomadgs("render", *sorted(map(str, (tree / "examples").glob("*.yaml"))), "-o", "jobs/", "--check",
                   cwd=tree, env=env).code == 0  # fmt: skip
    edit_in_place(tree / "backends" / "vllm.yaml", "v0.19.0", "v0.19.9")
    out, loaded = render()
    assert "vllm/vllm-openai:v0.19.9" in out and "vllm/vllm-openai:v0.19.0" not in out and "pydantic" in loaded
    check = nomadgs("render", *sorted(map(str, (tree / "examples").glob("*.yaml"))), "-o", "jobs/", "--check",
                    cwd=tree, env=env)  # fmt: skip
    assert check.code == 1 and "+" in check.out and "v0.19.9" in check.out, check.err
    # nomadgs's own code: the job's meta key, wherever the module that names it lives.
    (source,) = (p for p in (tree / "nomad_gpustack").rglob("*.py") if 'META_JOB = "nomadgs_job"' in p.read_text())
    assert render()[1] == [], "remembered again"
    edit_in_place(source, 'META_JOB = "nomadgs_job"', 'META_JOB = "nomadgs_jox"')
    out, loaded = render()
    assert '"nomadgs_jox"' in out and '"nomadgs_job"' not in out and "pydantic" in loaded


@dataclass(frozen=True)
class Planted:
    """A pickle that leaves a file behind when anything ever loads it."""

    marker: Path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_a_planted_pickle_never_runs(workdir: tuple[Path, dict[str, str]]) -> None:
    folder, env = workdir
    marker = folder / "it-ran"
    first = nomadgs("render", "deploy.yaml", cwd=folder, env=env)
    assert nomadgs("backends", "list", cwd=folder, env=env).code == first.code == 0
    entries = [p for p in (folder / "cache").rglob("*") if p.is_file()]
    assert entries, "the runs above cached something"
    for entry in entries:  # every entry there is, under the name the command itself chose
        entry.write_bytes(pickle.dumps(Planted(marker)))
    listed = nomadgs("backends", "list", cwd=folder, env=env)
    again = nomadgs("render", "deploy.yaml", cwd=folder, env=env)
    assert not marker.exists(), "a planted pickle ran"
    assert listed.code == again.code == 0 and again.out == first.out


def test_no_module_loads_pickled_data() -> None:
    """Cache entries are data: nothing in nomadgs imports a module that turns bytes into code."""
    for path in (ROOT / "nomad_gpustack").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not {n.split(".")[0] for n in names} & {"pickle", "marshal", "shelve", "dill"}, path
