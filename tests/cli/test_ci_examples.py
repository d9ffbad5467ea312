"""The CI pipeline examples in examples/ci run as written: their shell steps, in order, with `nomadgs` on the
PATH, against the Nomad double with an ACL token (no Nomad binary can be had here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nomad_gpustack.cli import main

from ..support.components import ROOT
from ..support.nomad_double import NomadDouble, scenarios

CI = ROOT / "examples" / "ci"
TOKEN = "ci-secret-token-7f3a"


def github_steps(job: str) -> list[str]:
    workflow: dict[str, Any] = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = workflow["jobs"][job]["steps"]
    return [s["run"] for s in steps if "run" in s and not s["run"].startswith("pip install")]


def gitlab_steps(stage: str) -> list[str]:
    pipeline: dict[str, Any] = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    jobs = [j for j in pipeline.values() if isinstance(j, dict) and j.get("stage") == stage]
    return [line for job in jobs for line in job["script"]]


def shell(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A step as the runners run it: bash, stop at the first failing command, from the checkout."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "nomadgs").exists():
        pytest.skip(f"the nomadgs console script is not installed in {bin_dir}")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    full_env.update(env, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], capture_output=True, text=True, cwd=cwd, env=full_env,
        timeout=300,
    )  # fmt: skip


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble(acl_tokens={TOKEN: "management"}) as double:
        double.default_scenario = scenarios.rollout()
        yield double


def test_no_secret_is_ever_on_a_command_line() -> None:
    for script in [*github_steps("check"), *github_steps("plan"), *github_steps("submit")]:
        assert "NOMAD_TOKEN" not in script and "secrets." not in script
    for stage in ("check", "plan", "submit"):
        assert not [line for line in gitlab_steps(stage) if "NOMAD_TOKEN" in line]


@pytest.mark.parametrize("system", ["github", "gitlab"])
def test_the_pipeline_checks_plans_and_submits(system: str, nomad: NomadDouble, tmp_path: Path) -> None:
    steps = {
        "github": {stage: github_steps(stage) for stage in ("check", "plan", "submit")},
        "gitlab": {stage: gitlab_steps(stage) for stage in ("check", "plan", "submit")},
    }[system]
    checkout = tmp_path / "checkout"  # the files the pipeline reads; result.json is written here
    shutil.copytree(ROOT / "examples", checkout / "examples")
    # The jobs as the examples render now: whether jobs/ of this repository is up to date is
    # tests/cli/test_render.py's question; here the check stage only has to run as written.
    files = sorted(str(p) for p in (checkout / "examples").glob("*.yaml"))
    for fmt in ("json", "hcl"):
        assert main(["render", *files, "--output", f"{checkout / 'jobs'}/", "--format", fmt]) == 0
    examples = len(list((ROOT / "examples").glob("*.yaml")))
    env = {"NOMAD_ADDR": nomad.address, "NOMAD_TOKEN": TOKEN, "RUNNER_TEMP": str(tmp_path), "GITHUB_ENV": "/dev/null"}
    for stage in ("check", "plan", "submit"):
        for script in steps[stage]:
            if "NOMAD_CACERT_PEM" in script:
                continue  # only with a CA certificate secret
            run = shell(script, env, checkout)
            assert run.returncode == 0, (stage, script, run.stdout[-2000:], run.stderr[-2000:])
            assert TOKEN not in run.stdout + run.stderr
            if stage == "plan":
                assert len(re.findall(r"^\+ Job: \"", run.stdout, re.M)) == examples, "a new job each"
    assert '"ok": true' in (checkout / "result.json").read_text()
    registered = {r.path for r in nomad.requests if r.method == "POST" and r.path.startswith("/v1/job/")}
    assert len([p for p in registered if p.count("/") == 3]) == examples
