"""The watcher, called directly: what it reports, how it ends, and how it rides out a flaky Nomad."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from nomad_gpustack.compile.build import Compiled
from nomad_gpustack.contract.request import group_request
from nomad_gpustack.errors import EXIT_FAILURE, EXIT_OK, EXIT_PLACEMENT
from nomad_gpustack.nomad.client import NomadAPI, NomadDenied
from nomad_gpustack.nomad.rollout import Assessment
from nomad_gpustack.nomad.runner import verdict_exit_code
from nomad_gpustack.nomad.watcher import WatchResult, watch
from nomad_gpustack.settings import NomadSettings

from ..support.components import ROOT
from ..support.helpers import compile_yaml
from ..support.nomad_double import NomadDouble, scenarios

EXAMPLE = (ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml").read_text()  # two replicas


class Recorder:
    def __init__(self) -> None:
        self.updates: list[Assessment] = []
        self.notes: list[str] = []

    def update(self, assessment: Assessment, elapsed: float) -> None:
        self.updates.append(assessment)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def states(self, replica: int) -> list[str]:
        seen: list[str] = []
        for a in self.updates:
            state = a.replicas[replica].state
            if not seen or seen[-1] != state:
                seen.append(state)
        return seen


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble() as double:
        yield double


def run_watch(nomad: NomadDouble, compiled: Compiled, recorder: Recorder, timeout: float = 30) -> WatchResult:
    api = NomadAPI(NomadSettings(address=nomad.address))
    registered = api.register(compiled.job, modify_index=0)
    return asyncio.run(
        watch(
            api,
            job_id=compiled.job_id,
            version=0,
            eval_id=registered.EvalID,
            request=group_request(dict(compiled.job)),
            reporter=recorder,
            timeout=timeout,
        )
    )


def test_a_rollout_ends_healthy_with_the_endpoints(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(step=0.1, healthy_after=0.2)
    recorder = Recorder()
    result = run_watch(nomad, compile_yaml(EXAMPLE), recorder)
    assert result.assessment.phase == "succeeded" and verdict_exit_code(result.assessment.verdict) == EXIT_OK
    assert not result.timed_out
    assert len(result.endpoints) == 2 and all(u.startswith("http://") and u.endswith("/v1") for u in result.endpoints)
    assert recorder.states(0)[-1] == "running" and "starting" in recorder.states(0)
    assert recorder.updates[-1].done and not any(a.done for a in recorder.updates[:-1])


def test_transient_errors_are_retried_and_noted(nomad: NomadDouble) -> None:
    compiled = compile_yaml(EXAMPLE)
    nomad.default_scenario = scenarios.rollout(step=0.1, healthy_after=0.2)
    nomad.faults.fail(r"^/v1/allocations$", status=500, body="No cluster leader", count=2)
    nomad.faults.drop(r"^/v1/deployments$", count=1)
    recorder = Recorder()
    result = run_watch(nomad, compiled, recorder)
    assert result.assessment.phase == "succeeded"
    assert sum("No cluster leader while watching allocations" in n for n in recorder.notes) == 2
    assert any("while watching the deployment" in n for n in recorder.notes)


def test_placement_failure_ends_the_watch_with_exit_3(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.placement_failure()
    result = run_watch(nomad, compile_yaml(EXAMPLE), Recorder())
    assert (
        result.assessment.phase == "placement-failed" and verdict_exit_code(result.assessment.verdict) == EXIT_PLACEMENT
    )
    assert result.assessment.headline.startswith("cannot place")


def test_a_crash_loop_brings_the_last_lines_of_stderr(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.crash_loop(
        exit_code=1, stderr="error: unknown argument: --bogus\nusage: llama-server ...", step=0.05
    )
    result = run_watch(nomad, compile_yaml(EXAMPLE), Recorder())
    assert result.assessment.phase == "failed" and verdict_exit_code(result.assessment.verdict) == EXIT_FAILURE
    assert any(f.kind == "crash-loop" for f in result.assessment.failures)
    assert any("unknown argument: --bogus" in text for text in result.logs.values())


def test_a_timeout_returns_the_state_so_far(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.manual()
    result = run_watch(nomad, compile_yaml(EXAMPLE), Recorder(), timeout=0.5)
    assert result.timed_out and verdict_exit_code(result.assessment.verdict) is None


def test_a_denied_read_ends_the_watch_with_the_error(nomad: NomadDouble) -> None:
    compiled = compile_yaml(EXAMPLE)
    nomad.default_scenario = scenarios.manual()
    nomad.faults.fail(r"^/v1/allocations$", status=403, body="Permission denied")
    with pytest.raises(NomadDenied):
        run_watch(nomad, compiled, Recorder())


def watch_again(nomad: NomadDouble, job: Any, recorder: Recorder, *, register: bool = True) -> WatchResult:
    """Submit `job` over the version on the double (or, `register` false, watch that version as it stands)."""
    api = NomadAPI(NomadSettings(address=nomad.address))
    current = api.job(job["ID"])
    assert current is not None
    eval_id = api.register(job, modify_index=current.JobModifyIndex).EvalID if register else None
    version = current.Version + 1 if register else current.Version
    return asyncio.run(
        watch(api, job_id=job["ID"], version=version, eval_id=eval_id, request=group_request(dict(job)),
              reporter=recorder, timeout=30)
    )  # fmt: skip


FORWARD = ["pending", "scheduled", "downloading", "starting", "running", "error"]


def test_replica_states_only_move_forward(nomad: NomadDouble) -> None:
    # The download task runs, ends, then the server's image is pulled: that gap once showed as "scheduled".
    nomad.default_scenario = scenarios.rollout(download=True, step=0.1, healthy_after=0.2)
    recorder = Recorder()
    assert run_watch(nomad, compile_yaml(EXAMPLE), recorder).assessment.phase == "succeeded"
    for replica in (0, 1):
        states = recorder.states(replica)
        assert states == sorted(states, key=FORWARD.index), states
        assert "downloading" in states and states[-1] == "running"


def test_a_resubmit_shows_the_replicas_as_they_are(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(step=0.05, healthy_after=0.1)
    compiled = compile_yaml(EXAMPLE)
    assert run_watch(nomad, compiled, Recorder()).assessment.phase == "succeeded"
    unchanged = Recorder()
    assert watch_again(nomad, compiled.job, unchanged, register=False).assessment.phase == "succeeded"
    assert [a.replicas[i].state for a in unchanged.updates for i in (0, 1)] == ["running"] * 2 * len(unchanged.updates)
    # A change: until Nomad places the new version, the replicas run the old one, and say so.
    nomad.default_scenario = scenarios.rollout(step=0.05, healthy_after=0.1, start_after=0.5)
    edited = copy.deepcopy(dict(compiled.job))
    edited["Meta"] = {**edited["Meta"], "edited": "yes"}
    changed = Recorder()
    result = watch_again(nomad, edited, changed)
    assert result.assessment.phase == "succeeded" and result.assessment.healthy == 2
    first = changed.updates[0].replicas[0]
    assert (first.state, first.earlier_version) == ("running", 0) and "(job version 0, " in first.detail
    assert changed.updates[0].healthy == 0, "the old version's replicas are not this version's healthy ones"
    replaced = [a.replicas[0] for a in changed.updates if a.replicas[0].alloc_id != first.alloc_id]
    assert replaced[0].detail.startswith(f"new allocation (replaces {first.alloc_id[:8]}): ")
    assert replaced[-1].state == "running" and replaced[-1].earlier_version is None


class CancelOnAnAnswer(NomadAPI):
    """Cancels the watch (as Ctrl-C does) just after an answer woke it: the first blocking read of the
    allocations starts right after the plain read's answer was stored, and cancels once that wake-up is due."""

    watch_task: asyncio.Task[Any] | None = None

    async def get(self, http: Any, path: str, shape: Any, *, index: int | None = None, **kw: Any) -> Any:
        if path == "/v1/allocations" and index and self.watch_task is not None:
            task, self.watch_task = self.watch_task, None
            await asyncio.sleep(0)  # the watch's wait for a change has seen it: its wake-up is queued
            task.cancel()
        return await super().get(http, path, shape, index=index, **kw)


def test_ctrl_c_ends_the_watch_even_as_an_answer_arrives(nomad: NomadDouble) -> None:
    """asyncio.wait_for of Python 3.11 returns the result of a wait that finished as its task was cancelled,
    losing the cancellation (CPython gh-86296): Ctrl-C during `submit` was then ignored until the rollout ended."""
    nomad.default_scenario = scenarios.manual()
    compiled = compile_yaml(EXAMPLE)
    api = CancelOnAnAnswer(NomadSettings(address=nomad.address))
    registered = api.register(compiled.job, modify_index=0)

    async def main() -> WatchResult:
        api.watch_task = asyncio.current_task()
        return await watch(api, job_id=compiled.job_id, version=0, eval_id=registered.EvalID,
                           request=group_request(dict(compiled.job)), reporter=Recorder(), timeout=20)  # fmt: skip

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


@pytest.mark.parametrize(
    ("then", "rollback_status"),
    [(None, "successful"), (scenarios.unhealthy(), "failed")],
    ids=["rolled-back", "both-fail"],
)
def test_a_watch_that_starts_after_the_rollback_still_judges_its_version(
    nomad: NomadDouble, then: scenarios.Scenario | None, rollback_status: str
) -> None:
    # Under load, Nomad can fail version 1's deployment and auto-revert (registering version 0's spec as
    # version 2) before the watch's first read: the latest deployment is then version 2's, not the one judged.
    nomad.default_scenario = scenarios.rollout(step=0.01, healthy_after=0.05)
    compiled = compile_yaml(EXAMPLE)
    assert run_watch(nomad, compiled, Recorder()).assessment.phase == "succeeded"
    nomad.default_scenario = scenarios.unhealthy(rollback_to=0, then=then, healthy_after=0.05)
    edited = copy.deepcopy(dict(compiled.job))
    edited["Meta"] = {**edited["Meta"], "edited": "yes"}
    api = NomadAPI(NomadSettings(address=nomad.address))
    current = api.job(compiled.job_id)
    assert current is not None
    eval_id = api.register(edited, modify_index=current.JobModifyIndex).EvalID
    # Each failure comes at the group's progress deadline (20m of Nomad time, 4s of the double's; Nomad's
    # deployment watcher waits for it when the group has one): two of them when the rollback fails too.
    nomad.wait_for(
        lambda n: any(d["JobVersion"] == 2 and d["Status"] == rollback_status for d in n.deployments.values()),
        timeout=60,
    )
    result = asyncio.run(
        watch(api, job_id=compiled.job_id, version=1, eval_id=eval_id, request=group_request(edited),
              reporter=Recorder(), timeout=30)
    )  # fmt: skip
    assert result.assessment.phase == "failed" and result.assessment.rollback_to == 0
    assert result.rollback is not None
    assert (result.rollback.to_version, result.rollback.job_version, result.rollback.status) == (0, 2, rollback_status)
