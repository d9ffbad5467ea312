"""`nomadgs submit` of a change, followed through Nomad's upgrade machinery on the faithful double: canaries and
their promotion, auto-revert, and a crash loop that Nomad keeps replacing until the progress deadline."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from nomad_gpustack.nomad.explain import clock_time

from ..support.components import ROOT
from ..support.helpers import Run, nomadgs, start_nomadgs
from ..support.nomad_double import NomadDouble, scenarios

LLAMA_CPU = ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml"  # 2 replicas
JOB = "qwen2-5-0-5b-instruct-gguf"


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble() as double:
        yield double


def submit(nomad: NomadDouble, path: Path, *args: str) -> Run:
    return nomadgs("submit", path, "--timeout", "60s", *args, env={"NOMAD_ADDR": nomad.address}, timeout=90)


def deployment_file(tmp_path: Path, name: str, nomad_lines: str = "", threads: int = 4) -> Path:
    """The llama.cpp example with more `nomad:` lines, and `--threads` changed (a change that replaces replicas)."""
    text = LLAMA_CPU.read_text().replace("--threads 4", f"--threads {threads}")
    path = tmp_path / name
    path.write_text(text + nomad_lines)
    return path


CANARY = "  upgrade: canary\n"


class Lines:
    """A running command's stderr, read line by line; `wait` returns once a line holds the text."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait(self, text: str, timeout: float = 30) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(text in line for line in self.lines), timeout)


def undecided(nomad: NomadDouble) -> list[dict[str, Any]]:
    """The live non-canary allocations of job version 1 whose health is not decided yet."""
    return [a for a in new_allocs(nomad, canary=False) if (a["DeploymentStatus"] or {}).get("Healthy") is None]


def new_allocs(nomad: NomadDouble, *, canary: bool) -> list[dict[str, Any]]:
    """The live allocations of job version 1 that are (or are not) canaries."""
    return [
        a
        for a in nomad.allocations.values()
        if a["JobID"] == JOB
        and a["JobVersion"] == 1
        and a["DesiredStatus"] == "run"
        and bool((a["DeploymentStatus"] or {}).get("Canary")) == canary
    ]


def test_a_canary_upgrade_is_followed_through_promotion(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, deployment_file(tmp_path, "v0.yaml", CANARY)).code == 0
    nomad.default_scenario = scenarios.manual(start_after=0)  # the test says when each new replica is healthy
    proc = start_nomadgs(
        "submit", deployment_file(tmp_path, "v1.yaml", CANARY, threads=8), "--timeout", "60s",
        env={"NOMAD_ADDR": nomad.address},
    )  # fmt: skip
    lines = Lines(proc)
    try:
        assert lines.wait("canary beside the running version: 0/2 healthy"), lines.text
        nomad.wait_for(lambda n: bool(new_allocs(n, canary=True)), timeout=30)
        (canary,) = new_allocs(nomad, canary=True)
        nomad.update_allocation(canary["ID"], task_state="running", task_events=[{"Type": "Started"}], healthy=True)
        # Nomad promotes the healthy canary (auto_promote), then replaces the other replica.
        assert lines.wait("canary promoted, 1 of 2 replicas on the new version"), lines.text
        # Promotion clears the canary's mark (state_store.go UpdateDeploymentPromotion): the other is undecided.
        nomad.wait_for(lambda n: bool(undecided(n)), timeout=30)
        (rest,) = undecided(nomad)
        nomad.update_allocation(rest["ID"], task_state="running", task_events=[{"Type": "Started"}], healthy=True)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, lines.text
    assert "all 2 replicas are healthy" in out
    (deployment,) = [d for d in nomad.deployments.values() if d["JobVersion"] == 1]
    assert deployment["TaskGroups"]["inference"]["Promoted"] is True


def test_healthy_canaries_without_auto_promote_wait_for_a_person(nomad: NomadDouble, tmp_path: Path) -> None:
    manual = "  update:\n    canary: 1\n    auto_promote: false\n"
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, deployment_file(tmp_path, "v0.yaml", manual)).code == 0
    run = submit(nomad, deployment_file(tmp_path, "v1.yaml", manual, threads=8))
    assert run.code == 0, run.err
    assert "canary healthy, 1 of 2 replicas on the new version; waiting for promotion" in run.out
    assert f"`nomadgs promote {JOB}` replaces the other replicas; `nomadgs revert {JOB}` drops the canary" in run.err
    data = json.loads(submit(nomad, deployment_file(tmp_path, "v1.yaml", manual, threads=8), "--output", "json").out)
    assert (data["results"][0]["status"], data["results"][0]["exit_code"]) == ("awaiting-promotion", 0)


def test_a_failed_upgrade_says_nomad_rolled_back_and_which_version_is_yours(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, deployment_file(tmp_path, "v0.yaml")).code == 0
    nomad.default_scenario = scenarios.unhealthy(rollback_to=0)
    run = submit(nomad, deployment_file(tmp_path, "v1.yaml", threads=8))
    assert run.code == 1, run.err
    assert re.search(
        r"error: qwen2\.5-0\.5b-instruct-gguf: the new version failed: .+; Nomad rolled back to version 0 \(stable\); "
        r"your change is version 1\n",
        run.err,
    ), run.err


def test_a_crash_loop_ends_submit_early_and_says_what_nomad_keeps_doing(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, deployment_file(tmp_path, "v0.yaml")).code == 0
    nomad.default_scenario = scenarios.crash_loop(stderr="error: unknown argument: --threads\n")
    run = submit(nomad, deployment_file(tmp_path, "v1.yaml", threads=8))
    assert run.code == 1, run.err
    assert "exited with code 1 and was restarted 2 times; Nomad gave up restarting it" in run.err
    assert "| error: unknown argument: --threads" in run.err
    (deployment,) = [d for d in nomad.deployments.values() if d["JobVersion"] == 1]
    deadline = clock_time(deployment["TaskGroups"]["inference"]["RequireProgressBy"])
    assert deadline is not None and re.fullmatch(r"\d\d:\d\d", deadline)
    assert (
        f"  Nomad keeps replacing it until {deadline} (the progress deadline), then rolls back to version 0; "
        f"`nomadgs revert {JOB}` or `nomadgs stop {JOB}` now\n"
    ) in run.err, run.err


def test_a_crash_loop_in_json_says_what_nomad_keeps_doing(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, deployment_file(tmp_path, "v0.yaml")).code == 0
    nomad.default_scenario = scenarios.oom_kill()
    run = submit(nomad, deployment_file(tmp_path, "v1.yaml", threads=8), "--output", "json")
    assert run.code == 1, run.err
    (result,) = json.loads(run.out)["results"]
    assert (result["status"], result["exit_code"], result["failures"][0]["kind"]) == ("failed", 1, "oom")
    assert result["nomad_continues"].startswith("Nomad keeps replacing it until ")
    assert result["nomad_continues"].endswith(" (the progress deadline), then rolls back to version 0")


def test_the_first_version_has_nothing_to_roll_back_to(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.crash_loop()
    run = submit(nomad, deployment_file(tmp_path, "v0.yaml"))
    assert run.code == 1, run.err
    assert "then fails the deployment: there is no earlier version to roll back to; " in run.err
    assert f"`nomadgs revert {JOB}` or `nomadgs stop {JOB}` now" in run.err


def test_clock_time_reads_nomads_nanoseconds() -> None:
    when = datetime.fromisoformat("2025-03-01T12:34:56.123456+00:00").astimezone().strftime("%H:%M")
    assert clock_time("2025-03-01T12:34:56.123456789Z") == when
    assert clock_time("0001-01-01T00:00:00Z") is None and clock_time("soon") is None
