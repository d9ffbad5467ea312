"""`nomadgs logs` when Nomad has no log to give: a task the allocation does not have, a task not started yet.

The double answers as Nomad does (client/fs_endpoint.go; its own test in tests/support/test_nomad_double.py):
400 `unknown task name "x"`, 404 `task "x" not started yet. No logs available`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..support.components import ROOT
from ..support.helpers import nomadgs
from ..support.nomad_double import NomadDouble, scenarios

VLLM = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"
JOB = "qwen2-5-7b-instruct"


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble() as double:
        yield double


def only_alloc(nomad: NomadDouble) -> str:
    (alloc_id,) = [a["ID"] for a in nomad.allocations.values() if a["JobID"] == JOB]
    return alloc_id


def test_an_unknown_task_names_the_tasks_there_are(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(stdout="INFO: ready\n")
    env = {"NOMAD_ADDR": nomad.address}
    assert nomadgs("submit", VLLM, "--timeout", "60s", env=env).code == 0
    for follow in ([], ["--follow"]):
        run = nomadgs("logs", JOB, "--task", "nope", *follow, env=env)
        assert run.code == 2, run.err
        assert run.out == ""
        assert run.err == "error: --task: replica 0 has no task 'nope'; its tasks: download-model, vllm\n"
    run = nomadgs("logs", JOB, "--task", "vlm", env=env)
    assert run.code == 2 and run.err.endswith("its tasks: download-model, vllm (did you mean 'vllm'?)\n")
    run = nomadgs("logs", JOB, "--task", "vllm", env=env)
    assert run.code == 0 and run.out == "INFO: ready\n"


def test_a_task_that_has_not_started_has_no_log_yet(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.manual()
    env = {"NOMAD_ADDR": nomad.address}
    assert nomadgs("submit", VLLM, "--detach", env=env).code == 0
    nomad.wait_for(lambda n: any(a["JobID"] == JOB for a in n.allocations.values()))
    alloc_id = only_alloc(nomad)
    expected = (
        "error: task 'vllm' of replica 0 has not started yet: it has no log; its download-model task runs first "
        "(`--task download-model` shows its log)\n"
    )
    # Before the client has taken the allocation up (no task states: Nomad says "unknown task"), and after.
    for update in (None, {"Type": "Received"}):
        if update:
            nomad.update_allocation(alloc_id, task_events=[update])
        for follow in ([], ["-f"]):
            run = nomadgs("logs", JOB, *follow, env=env)
            assert (run.code, run.out, run.err) == (1, "", expected), update
    nomad.update_allocation(alloc_id, task="download-model", task_events=[{"Type": "Received"}])
    run = nomadgs("logs", JOB, "--task", "download-model", env=env)
    assert run.code == 1 and "task 'download-model' of replica 0 has not started yet: it has no log\n" in run.err
