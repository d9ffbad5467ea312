"""Shell completion through Click's mechanism: in-process with Click's completion classes, and as the shell
runs it (`_NOMADGS_COMPLETE=bash_complete` with COMP_WORDS / COMP_CWORD, in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete

from nomad_gpustack.cli.root import nomadgs
from nomad_gpustack.spec.loader import load_catalog

from ..support.components import ROOT


def complete(*words: str, incomplete: str = "") -> list[tuple[str, str]]:
    """(value, type) of each completion of `nomadgs WORDS... INCOMPLETE`, as Click computes it."""
    completer = ShellComplete(nomadgs, {}, "nomadgs", "_NOMADGS_COMPLETE")
    return [(item.value, item.type) for item in completer.get_completions(list(words), incomplete)]


def shell(shell_name: str, line: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """What the shell script installed by `_NOMADGS_COMPLETE=<shell>_source nomadgs` runs on Tab."""
    words = line.split(" ")
    # bash and zsh pass the index of the word being completed; fish passes the word itself.
    cword = words[-1] if shell_name == "fish" else str(len(words) - 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    env.update(_NOMADGS_COMPLETE=f"{shell_name}_complete", COMP_WORDS=line, COMP_CWORD=cword)
    return subprocess.run(
        [sys.executable, "-m", "nomad_gpustack"], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_commands_and_subcommands() -> None:
    assert [v for v, _ in complete(incomplete="s")] == ["submit", "status", "stop"]
    assert [v for v, _ in complete("backends")] == ["list", "show", "validate"]


def test_backend_names_from_the_catalog() -> None:
    names = [b.spec.backend_name for b in load_catalog()]
    assert [v for v, _ in complete("backends", "show")] == names
    assert complete("backends", "show", incomplete="V") == [("vLLM", "plain"), ("VoxBox", "plain")]


def test_backend_names_include_user_files_and_survive_broken_ones(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("backend_name: my-engine-custom\nversion_configs:\n  v1:\n    image_name: me/engine:1\n")
    assert complete("backends", "show", "--backends", str(mine), incomplete="my") == [("my-engine-custom", "plain")]
    broken = tmp_path / "broken.yaml"
    broken.write_text("backend_name: [unclosed\n")
    assert complete("backends", "show", "--backends", str(broken), incomplete="v") == []
    run = shell("bash", f"nomadgs backends show --backends {broken} v")
    assert run.returncode == 0 and run.stdout.strip() == "" and run.stderr == ""


def test_output_paths_are_left_to_the_shell() -> None:
    assert complete("render", "x.yaml", "--output", incomplete="jo") == [("jo", "file")]


def test_choices() -> None:
    assert [v for v, _ in complete("render", "x.yaml", "--format")] == ["json", "hcl"]
    assert [v for v, _ in complete("validate", "x.yaml", "--format")] == ["text", "json"]
    assert [v for v, _ in complete("endpoints", "--provider", incomplete="n")] == ["nomad"]


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("a.yaml", "b.yml", "notes.txt", ".hidden.yaml", "sub/c.yaml", "subway/d.yaml", "only-dirs/x/y.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("name: x\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_deployment_arguments_complete_yaml_files_and_folders(files: Path) -> None:
    for command in (["render"], ["validate"], ["submit"], ["plan"], ["render", "a.yaml"]):
        assert complete(*command) == [
            ("a.yaml", "plain"), ("b.yml", "plain"), ("only-dirs/", "plain"), ("sub/", "plain"), ("subway/", "plain"),
        ], command  # fmt: skip
    assert complete("render", incomplete="sub/") == [("sub/c.yaml", "plain")]
    assert complete("render", incomplete=f"{files}/b") == [(f"{files}/b.yml", "plain")]
    assert complete("render", incomplete=".h") == [(".hidden.yaml", "plain")]
    # Only folders: the shell completes the folder itself, so no space is added after it.
    assert complete("render", incomplete="only") == [("only", "dir")]
    assert complete("render", incomplete="nothing") == []
    assert complete("render", incomplete="/nonexistent/folder/") == []


def test_the_shell_protocols(files: Path) -> None:
    run = shell("bash", "nomadgs render su", cwd=files)
    assert run.returncode == 0 and run.stdout.splitlines() == ["dir,su"], run.stderr
    run = shell("bash", "nomadgs render a", cwd=files)
    assert run.stdout.splitlines() == ["plain,a.yaml"]
    run = shell("zsh", "nomadgs render --format ", cwd=files)
    assert run.stdout.splitlines() == ["plain", "json", "_", "plain", "hcl", "_"]
    run = shell("fish", "nomadgs backends show vl", cwd=files)
    assert run.stdout.splitlines()[0].startswith("plain,vLLM")


@pytest.mark.parametrize("name", ["bash", "zsh", "fish"])
def test_completion_scripts(name: str) -> None:
    env = {**os.environ, "_NOMADGS_COMPLETE": f"{name}_source"}
    run = subprocess.run([sys.executable, "-m", "nomad_gpustack"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0 and "_NOMADGS_COMPLETE" in run.stdout and "nomadgs" in run.stdout
    if name == "bash":
        assert "complete -o nosort -F _nomadgs_completion nomadgs" in run.stdout
