"""Running the collection for real: `ansible-playbook -c local -i localhost,`, the repository as collection path."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..support.components import ROOT
from ..support.helpers import nomadgs
from ..support.nomad_double import NomadDouble

BIN = Path(sys.executable).parent
COLLECTION = ROOT / "ansible_collections" / "nomad_gpustack" / "nomad"
EXAMPLES = ROOT / "examples"


CALLBACKS = Path(__file__).parent / "callback_plugins"


@dataclass
class Play:
    code: int
    out: str
    err: str
    results_file: Path | None = None

    @property
    def text(self) -> str:
        return self.out + self.err

    def results(self) -> dict[str, dict[str, Any]]:
        """Every task's result by task name (run with `record=True`)."""
        assert self.results_file is not None and self.results_file.exists(), self.text
        data: dict[str, dict[str, Any]] = json.loads(self.results_file.read_text())
        return data


def ansible_env(extra: dict[str, str] | None = None, *, record: Path | None = None) -> dict[str, str]:
    """A clean environment: no NOMAD_*/CONSUL_* of the caller, no user configuration, the repository's collection."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_", "ANSIBLE_"))}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(ROOT),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_HOST_KEY_CHECKING="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCAL_TEMP=str(Path(os.environ.get("TMPDIR", "/tmp")) / "nomadgs-ansible-tmp"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    if record is not None:
        env.update(
            ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
            ANSIBLE_CALLBACKS_ENABLED="record_results",
            NOMADGS_TEST_RESULTS=str(record),
        )
    env.update(extra or {})
    return env


def run_playbook(
    playbook: Path,
    *args: str,
    env: dict[str, str] | None = None,
    record: bool = False,
    timeout: float = 240,
    interpreter: str | Path = sys.executable,
) -> Play:
    """`ansible-playbook -c local -i localhost,` with the venv's Python (or `interpreter`) as the modules'
    interpreter; with `record`, every task's result is kept for `Play.results()`."""
    results = playbook.with_suffix(".results.json") if record else None
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={interpreter}", str(playbook), *args],
        capture_output=True, text=True, env=ansible_env(env, record=results), cwd=playbook.parent,
        timeout=timeout,
    )  # fmt: skip
    return Play(proc.returncode, proc.stdout, proc.stderr, results)


def run_tool(tool: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Play:
    proc = subprocess.run(
        [str(BIN / tool), *args], capture_output=True, text=True, env=ansible_env(env), cwd=cwd or ROOT, timeout=240
    )
    return Play(proc.returncode, proc.stdout, proc.stderr)


def readme_block(readme: Path, marker: str) -> list[str]:
    """The lines of the fenced code block that follows the HTML comment containing `marker` in `readme`: the
    commands a README gives, for a test to run as written."""
    lines = readme.read_text().splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("<!--") and marker in line]
    assert lines[at + 1].startswith("```"), f"{readme}:{at + 2}: no code block after the marker"
    end = lines.index("```", at + 2)
    return lines[at + 2 : end]


def run_documented(command: str, *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> Play:
    """`command` exactly as a README writes it, in bash, with the venv active (its `activate` sourced) and no
    ANSIBLE_COLLECTIONS_PATH or interpreter of the tests': what a user types."""
    environment = ansible_env(env)
    del environment["ANSIBLE_COLLECTIONS_PATH"]
    proc = subprocess.run(
        ["bash", "-c", f". {shlex.quote(str(BIN / 'activate'))} && {command}"],
        capture_output=True, text=True, env=environment, cwd=cwd, timeout=timeout,
    )  # fmt: skip
    return Play(proc.returncode, proc.stdout, proc.stderr)


def requests_to(nomad: NomadDouble, method: str, path: str) -> int:
    return sum(1 for r in nomad.requests if r.method == method and r.path == path)


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble() as double:
        yield double


# --- the memory estimate: a header-only model and deployments sized against it ------------------------


def vllm_deployment(path: Path, nomad: dict[str, Any], *, max_model_len: int = 32768) -> Path:
    """A vLLM deployment of Llama-3.1-8B-Instruct with the given `nomad:` block, written to `path`."""
    import yaml

    data = {
        "name": "llama",
        "huggingface_repo_id": "meta-llama/Llama-3.1-8B-Instruct",
        "backend": "vLLM",
        "backend_parameters": [f"--max-model-len {max_model_len}"],
        "nomad": nomad,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def llama_model(tmp_path: Path) -> Path:
    """Llama-3.1-8B as a folder of config.json and the index's total size: headers only, no weights."""
    from ..support.model_fixtures import LLAMA_31_8B, LLAMA_31_8B_BYTES, hf_folder

    return hf_folder(tmp_path / "Llama-3.1-8B-Instruct", LLAMA_31_8B, total_size=LLAMA_31_8B_BYTES)


# What `nomadgs validate --model` says of vllm_deployment(gpus: 1, gpu_memory: 24 GiB) and llama_model.
REFUSAL = (
    "nomad.gpus: vLLM needs 23.9 GiB per GPU at --max-model-len 32768 (weights 15.0, KV 4.0, overhead 4.9); "
    "1 × 24 GiB at 0.90 gives 21.6: use gpus: 2, or --max-model-len ≤ 13312"
)


def cli_estimate(deployment: Path, model: Path, cwd: Path | None = None) -> dict[str, Any]:
    """`nomadgs estimate --output json` (files are named relative to `cwd`, as the playbook's are)."""
    run = nomadgs("estimate", deployment, "--model", model, "--output", "json", cwd=cwd)
    assert run.code == 0, run.err
    document: dict[str, Any] = json.loads(run.out)
    return document


def cli_error(*args: str | Path, cwd: Path | None = None) -> str:
    """The one problem line `nomadgs` prints for bad input, without its `error: ` prefix."""
    run = nomadgs(*args, cwd=cwd)
    assert run.code == 2, run.out + run.err
    (line,) = [x for x in run.err.splitlines() if x.startswith("error: ")]
    return line.removeprefix("error: ")


def tensor_parallel(job: dict[str, Any]) -> str:
    args: list[str] = job["Job"]["TaskGroups"][0]["Tasks"][-1]["Config"]["args"]
    return args[args.index("--tensor-parallel-size") + 1]
