"""Upgrades: what each strategy needs (explain.upgrade_needs), and how a watch follows canaries, promotion,
auto-revert and crash loops (rollout's rules) from Nomad's deployment and allocation shapes."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.contract.request import GroupRequest
from nomad_gpustack.nomad.explain import Aftermath, clock_time, deployment_failure_words, upgrade_needs
from nomad_gpustack.nomad.responses import Allocation, Deployment, Evaluation
from nomad_gpustack.nomad.rollout import Snapshot, assess
from nomad_gpustack.nomad.runner import verdict_exit_code

from ..support.helpers import compile_yaml

VLLM_24G: dict[str, Any] = {
    "name": "m", "huggingface_repo_id": "Qwen/Qwen2.5-7B-Instruct", "backend": "vLLM", "replicas": 2,
}  # fmt: skip
LLAMA_CPU: dict[str, Any] = {"name": "m", "local_path": "m.gguf", "backend": "llama.cpp", "backend_version": "cpu"}


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        ({**VLLM_24G, "nomad": {"gpus": 2, "gpu_memory": "24 GiB", "upgrade": "canary"}},
         "canary: needs 1 more replica's GPUs (2 × 24 GiB) while both versions run; promoted once healthy"),
        ({**VLLM_24G, "nomad": {"gpus": 1, "update": {"canary": 2, "auto_promote": False}}},
         "canary: needs 2 more replicas' GPUs (2 × nvidia/gpu) while both versions run; then waits for "
         "`nomadgs promote`"),
        ({**VLLM_24G, "nomad": {"gpus": 1}}, "rolling: no extra GPUs; 1 of 2 replicas serves during the update"),
        ({**VLLM_24G, "replicas": 4, "nomad": {"gpus": 1, "update": {"max_parallel": 2}}},
         "rolling: no extra GPUs; 2 of 4 replicas serve during the update"),
        ({**VLLM_24G, "replicas": 1, "nomad": {"gpus": 1}},
         "rolling: no extra GPUs; the model is down while its replica is replaced"),
        ({**VLLM_24G, "nomad": {"gpus": 1, "upgrade": "recreate"}},
         "recreate: the model is down during the update (all 2 replicas replaced at once, no extra GPUs)"),
        ({**LLAMA_CPU, "nomad": {"upgrade": "canary", "cpu": 2000, "memory": "4 GiB"}},
         "canary: needs room for 1 more replica (2000 MHz, 4 GiB) while both versions run; promoted once healthy"),
    ],
)  # fmt: skip
def test_each_strategy_says_what_it_needs(deployment: dict[str, Any], expected: str) -> None:
    assert upgrade_needs(compile_yaml(deployment).request) == expected


def test_validate_says_which_strategy_applies() -> None:
    from ..support.components import ROOT
    from ..support.helpers import nomadgs

    run = nomadgs("validate", ROOT / "examples" / "vllm-qwen2.5-32b-instruct-tp2.yaml")
    assert run.code == 0, run.err
    assert (
        "    upgrade: canary: needs 1 more replica's GPUs (2 × 40 GiB) while both versions run; promoted once healthy\n"
    ) in run.out


# --- the rollout's canary and crash-loop rules, from Nomad's shapes -------------------------------------------


REQUEST = GroupRequest(group="inference", count=2, canary=1, auto_promote=True, auto_revert=True)
DONE = Evaluation(ID="e1", Status="complete")


def alloc(index: int, version: int, *, healthy: bool | None = None, canary: bool = False) -> Allocation:
    return Allocation.model_validate(
        {
            "ID": f"a{index}v{version}",
            "Name": f"m.inference[{index}]",
            "JobVersion": version,
            "DesiredStatus": "run",
            "ClientStatus": "running",
            "TaskStates": {"llama-cpp": {"State": "running", "StartedAt": "2025-03-01T12:00:00Z"}},
            "DeploymentStatus": {"Healthy": healthy, "Canary": canary},
            "CreateIndex": 10 * version + index,
        }
    )


def canary_deployment(*, healthy: int, promoted: bool = False, auto_promote: bool = True) -> Deployment:
    return Deployment.model_validate(
        {
            "ID": "d1",
            "JobVersion": 1,
            "Status": "running",
            "StatusDescription": "Deployment is running pending automatic promotion",
            "TaskGroups": {
                "inference": {
                    "AutoRevert": True,
                    "AutoPromote": auto_promote,
                    "Promoted": promoted,
                    "DesiredTotal": 2,
                    "DesiredCanaries": 1,
                    "PlacedCanaries": ["a0v1"],
                    "HealthyAllocs": healthy,
                    "RequireProgressBy": "2025-03-01T12:40:00.123456789Z",
                }
            },
        }
    )


def canary_snapshot(deployment: Deployment, canary_healthy: bool | None) -> Snapshot:
    allocs = (alloc(0, 0, healthy=True), alloc(1, 0, healthy=True), alloc(0, 1, healthy=canary_healthy, canary=True))
    return Snapshot("m", 1, DONE, None, deployment, allocs, stable_version=0)


def test_a_canary_beside_the_running_version() -> None:
    a = assess(canary_snapshot(canary_deployment(healthy=0), None), REQUEST)
    assert (a.phase, a.headline) == ("deploying", "canary beside the running version: 0/2 healthy")


def test_a_healthy_canary_is_promoted_by_nomad_when_auto_promote_is_on() -> None:
    a = assess(canary_snapshot(canary_deployment(healthy=1), True), REQUEST)
    assert (a.phase, a.headline) == (
        "deploying",
        "canary healthy, 1 of 2 replicas on the new version; Nomad promotes it",
    )


def test_a_healthy_canary_without_auto_promote_waits_for_a_person_and_the_watch_ends() -> None:
    a = assess(canary_snapshot(canary_deployment(healthy=1, auto_promote=False), True), REQUEST)
    assert (a.verdict, a.headline) == (
        "awaiting-promotion",
        "canary healthy, 1 of 2 replicas on the new version; waiting for promotion",
    )
    assert verdict_exit_code(a.verdict) == 0


def test_a_promoted_canary() -> None:
    a = assess(canary_snapshot(canary_deployment(healthy=1, promoted=True), True), REQUEST)
    assert (a.phase, a.headline) == ("deploying", "canary promoted, 1 of 2 replicas on the new version")


def test_a_crash_loop_says_until_when_nomad_replaces_it_and_where_it_rolls_back() -> None:
    crashed = Allocation.model_validate(
        {
            **alloc(0, 1, canary=True).model_dump(exclude={"TaskStates"}),
            "ClientStatus": "failed",
            "TaskStates": {
                "llama-cpp": {
                    "State": "dead",
                    "Failed": True,
                    "Restarts": 2,
                    "Events": [{"Type": "Terminated", "ExitCode": 1}, {"Type": "Not Restarting"}],
                }
            },
        }
    )
    snapshot = Snapshot("m", 1, DONE, None, canary_deployment(healthy=0), (crashed,), stable_version=4)
    a = assess(snapshot, REQUEST)
    assert a.verdict == "failed" and a.failures[0].kind == "crash-loop"
    deadline = clock_time("2025-03-01T12:40:00.123456Z")
    assert (
        a.aftermath
        == f"Nomad keeps replacing it until {deadline} (the progress deadline), then rolls back to version 4"
    )
    # Without a reschedule policy, Nomad fails the deployment at once (shouldFailEarly): wait for its verdict.
    no_reschedule = GroupRequest(group="inference", count=2, canary=1, reschedules=False)
    assert assess(snapshot, no_reschedule).verdict is None


@pytest.mark.parametrize(
    ("aftermath", "then"),
    [
        (Aftermath("12:40", False, 4, True), "then fails the deployment and leaves this version (auto_revert is off)"),
        (Aftermath("12:40", True, None, True), "then rolls back to the newest stable version, if there is one"),
        (Aftermath(None, True, None, False), "then fails the deployment: there is no earlier version to roll back to"),
    ],
)
def test_what_nomad_does_at_the_progress_deadline(aftermath: Aftermath, then: str) -> None:
    assert aftermath.sentence.endswith(then)


@pytest.mark.parametrize(
    ("description", "words"),
    [
        ("Failed due to progress deadline - rolling back to job version 3",
         "Failed due to progress deadline; Nomad rolls back to job version 3"),
        ("Failed due to unhealthy allocations - not rolling back to stable job version 2 as current job has same "
         "specification",
         "Failed due to unhealthy allocations; Nomad does not roll back again: its newest stable version, 2, is this "
         "same specification"),
        ("Failed due to progress deadline - no stable job version to auto revert to",
         "Failed due to progress deadline; there is no stable version to roll back to"),
        ("Deployment marked as failed", "Deployment marked as failed"),
    ],
)  # fmt: skip
def test_nomads_rollback_suffixes_in_plain_words(description: str, words: str) -> None:
    assert deployment_failure_words(description) == words
