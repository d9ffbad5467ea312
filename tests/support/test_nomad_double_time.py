"""The Nomad double over time: rescheduling, the deployment watcher, rolling and in-place updates, auto-revert.

Each test names the Nomad source (hashicorp/nomad at aa026cc99c) whose rule it checks. Nomad's durations stay
in Nomad's units; the double's clock runs `time_scale` times faster, and every timestamp the API shows is read
from it, so the tests compare timestamps with the durations of the job, never with the wall clock.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.nomad_double import LocalClient, NomadDouble, scenarios
from tests.support.nomad_double import reschedule as rules
from tests.support.nomad_double.objects import parse_rfc3339
from tests.support.test_nomad_double import (
    SERVER_SCRIPT,
    allocs_of,
    deployments_of,
    local_job,
    make_job,
    register,
    wait_deployment,
)

SECOND = 10**9
MINUTE = 60 * SECOND
JSON = dict[str, Any]


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble(time_scale=1200) as double:  # a 10m progress deadline passes in 0.5s
        yield double


@pytest.fixture
def api(nomad: NomadDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nomad.address, timeout=10) as client:
        yield client


def by_name(nomad: NomadDouble, job_id: str) -> dict[str, list[JSON]]:
    found: dict[str, list[JSON]] = {}
    for alloc in allocs_of(nomad, job_id):
        found.setdefault(alloc["Name"], []).append(alloc)
    return found


def no_deployment(job: JSON) -> JSON:
    """A job without an update strategy: no deployment, so a failure is replaced without the watcher."""
    job["TaskGroups"][0]["Update"] = {"MaxParallel": 0}
    return job


def reschedule_policy(job: JSON, **policy: Any) -> JSON:
    job["TaskGroups"][0]["ReschedulePolicy"] = policy
    return job


# --- the reschedule delay (pure) ------------------------------------------------------------------------------------


def failed(policy: JSON, delays: list[int], finished: int = 0, rescheduled_at: int = 0) -> JSON:
    """A failed allocation whose tracker holds attempts with these delays."""
    events = [{"RescheduleTime": rescheduled_at, "PrevAllocID": "x", "PrevNodeID": "n", "Delay": d} for d in delays]
    return {
        "ID": "a",
        "NodeID": "n",
        "TaskGroup": "g",
        "Job": {"Type": "service", "TaskGroups": [{"Name": "g", "ReschedulePolicy": policy}]},
        "RescheduleTracker": {"Events": events, "LastReschedule": "ok"} if delays else None,
        "TaskStates": {"t": {"FinishedAt": "0001-01-01T00:00:00Z"}},
        "ModifyTime": finished,
        "ClientStatus": "failed",
        "DesiredStatus": "run",
        "DesiredTransition": {},
    }


def test_next_delay_follows_the_delay_function_up_to_max_delay() -> None:
    """nomad/structs/alloc.go NextDelay: exponential doubles the last delay, fibonacci adds the last two,
    constant never changes; MaxDelay caps the first two."""
    exponential = {"Delay": 30 * SECOND, "DelayFunction": "exponential", "MaxDelay": 3600 * SECOND, "Unlimited": True}
    series, delays = [], []
    for _ in range(9):
        delay = rules.next_delay(failed(exponential, delays))
        series.append(delay // SECOND)
        delays.append(delay)
    assert series == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    fibonacci = {"Delay": 5 * SECOND, "DelayFunction": "fibonacci", "MaxDelay": 40 * SECOND, "Unlimited": True}
    series, delays = [], []
    for _ in range(7):
        delay = rules.next_delay(failed(fibonacci, delays))
        series.append(delay // SECOND)
        delays.append(delay)
    assert series == [5, 5, 10, 15, 25, 40, 40]
    constant = {"Delay": 5 * SECOND, "DelayFunction": "constant", "MaxDelay": SECOND, "Unlimited": True}
    assert rules.next_delay(failed(constant, [5 * SECOND, 5 * SECOND])) == 5 * SECOND


def test_next_delay_starts_again_after_an_allocation_outlived_the_cap() -> None:
    """alloc.go NextDelay: when capped, an allocation that ran longer than MaxDelay since its last reschedule
    (failure time − RescheduleTime > delay) gets the initial Delay again."""
    policy = {"Delay": 30 * SECOND, "DelayFunction": "exponential", "MaxDelay": 3600 * SECOND, "Unlimited": True}
    assert rules.next_delay(failed(policy, [3600 * SECOND], finished=7200 * SECOND)) == 30 * SECOND
    assert rules.next_delay(failed(policy, [3600 * SECOND], finished=1800 * SECOND)) == 3600 * SECOND


def test_eligibility_counts_the_attempts_within_the_interval() -> None:
    """nomad/structs/structs.go RescheduleTracker.RescheduleEligible: disabled with Attempts 0 and not
    Unlimited; with Attempts, only the attempts made within Interval before the failure count."""
    assert not rules.eligible(None, {"Attempts": 0, "Unlimited": False}, 0)
    policy = {"Attempts": 1, "Interval": 600 * SECOND, "Unlimited": False}
    assert rules.eligible(None, policy, 0)
    tracker = {"Events": [{"RescheduleTime": 100 * SECOND, "Delay": SECOND}]}
    assert not rules.eligible(tracker, policy, 200 * SECOND)
    assert rules.eligible(tracker, policy, 800 * SECOND)


# --- rescheduling on the server ---------------------------------------------------------------------------------


def test_a_failed_allocation_is_replaced_after_its_reschedule_delay(nomad: NomadDouble, api: httpx.Client) -> None:
    """node_endpoint.go UpdateAlloc (an `alloc-failure` evaluation), reconcile_cluster.go
    createRescheduleLaterEvals (a follow-up `alloc-reschedule` evaluation at failure time + delay, marked on the
    allocation), generic_sched.go computePlacements/UpdateRescheduleTracker and state_store.go
    upsertAllocsImpl: the replacement keeps the name, links both ways, carries the tracker; the old allocation
    is stopped but stays failed."""
    nomad.set_scenario("web", scenarios.crash_loop(restarts=0))
    register(api, no_deployment(make_job()))
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) >= 3, timeout=10)
    first, second, third = allocs_of(nomad, "web")[:3]
    assert first["Name"] == second["Name"] == third["Name"] == "web.server[0]"
    assert (first["NextAllocation"], second["PreviousAllocation"]) == (second["ID"], first["ID"])
    assert (second["NextAllocation"], third["PreviousAllocation"]) == (third["ID"], second["ID"])
    assert (first["DesiredStatus"], first["DesiredDescription"], first["ClientStatus"]) == (
        "stop",
        "alloc was rescheduled because it failed",
        "failed",
    )
    followup = nomad.evaluations[first["FollowupEvalID"]]
    assert (followup["TriggeredBy"], followup["StatusDescription"], followup["Status"]) == (
        "alloc-reschedule",
        "created for delayed rescheduling",
        "complete",
    )
    failed_at = parse_rfc3339(first["TaskStates"]["backend"]["FinishedAt"])
    assert parse_rfc3339(followup["WaitUntil"]) == failed_at + 30 * SECOND
    failure_eval = nomad.evaluations[followup["PreviousEval"]]
    assert (failure_eval["TriggeredBy"], failure_eval["NextEval"]) == ("alloc-failure", followup["ID"])
    assert second["EvalID"] == followup["ID"]
    assert [e["Delay"] // SECOND for e in second["RescheduleTracker"]["Events"]] == [30]
    assert [e["Delay"] // SECOND for e in third["RescheduleTracker"]["Events"]] == [30, 60]
    event = third["RescheduleTracker"]["Events"][-1]
    assert (event["PrevAllocID"], event["PrevNodeID"]) == (second["ID"], second["NodeID"])
    assert third["RescheduleTracker"]["LastReschedule"] == "ok"
    assert second["CreateTime"] >= parse_rfc3339(nomad.evaluations[second["EvalID"]]["WaitUntil"])
    stub = next(s for s in api.get("/v1/job/web/allocations").json() if s["ID"] == second["ID"])
    assert "PreviousAllocation" not in stub, "structs.AllocListStub has no PreviousAllocation"
    assert api.get(f"/v1/allocation/{second['ID']}").json()["PreviousAllocation"] == first["ID"]


def test_attempts_run_out_then_the_failure_stays(nomad: NomadDouble, api: httpx.Client) -> None:
    """structs.go RescheduleEligible and alloc.go NextRescheduleTime: with Attempts 1 per hour, the first
    failure is replaced, the second is not: no evaluation, no replacement."""
    nomad.set_scenario("web", scenarios.crash_loop(restarts=0))
    job = reschedule_policy(no_deployment(make_job()), Attempts=1, Interval=3600 * SECOND, Delay=5 * SECOND,
                            DelayFunction="constant", Unlimited=False)  # fmt: skip
    register(api, job)
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 2 and allocs_of(n, "web")[1]["ClientStatus"] == "failed")
    nomad.wait_for(lambda n: not any(e["Status"] == "pending" for e in n.evaluations.values()))
    first, second = allocs_of(nomad, "web")
    assert first["NextAllocation"] == second["ID"]
    assert (second["DesiredStatus"], second["NextAllocation"], second["FollowupEvalID"]) == ("run", "", "")
    assert len(by_name(nomad, "web")["web.server[0]"]) == 2
    assert [e["TriggeredBy"] for e in nomad.evaluations.values()].count("alloc-failure") == 1


def test_a_policy_without_attempts_fails_the_deployment_at_once(nomad: NomadDouble, api: httpx.Client) -> None:
    """deployment_watcher.go shouldFailEarly: an unhealthy allocation that cannot be rescheduled fails the
    deployment at once, `Failed due to unhealthy allocations`, before any progress deadline."""
    nomad.set_scenario("web", scenarios.crash_loop(restarts=0))
    register(api, reschedule_policy(make_job(), Attempts=0, Unlimited=False))
    deployment = wait_deployment(nomad, "web", "failed")
    assert deployment["StatusDescription"] == (
        "Failed due to unhealthy allocations - no stable job version to auto revert to"
    )
    assert deployment["ModifyTime"] < parse_rfc3339(deployment["TaskGroups"]["server"]["RequireProgressBy"])
    (alloc,) = allocs_of(nomad, "web")
    assert alloc["DesiredStatus"] == "run", "a failed allocation of a failed deployment is not replaced"


def test_a_crash_loop_is_replaced_until_the_progress_deadline(nomad: NomadDouble, api: httpx.Client) -> None:
    """deployment_watcher.go handleAllocUpdate (an unhealthy allocation that may be rescheduled gets
    DesiredTransition.Reschedule and an evaluation 1s later), reconcile_cluster.go (it is replaced by its
    policy), state_store.go updateDeploymentWithAlloc (RequireProgressBy from the first placement) and the
    watcher's deadline timer: the deployment fails at the progress deadline, not before."""
    nomad.set_scenario("web", scenarios.crash_loop(restarts=0))
    register(api, make_job())
    failed = wait_deployment(nomad, "web", "failed", timeout=10)
    # The last replacement can be placed just before the deadline and fail after it: its health still counts on
    # the failed deployment (state_store.go updateDeploymentWithAlloc), so wait for every allocation's verdict.
    nomad.wait_for(lambda n: all((a["DeploymentStatus"] or {}).get("Healthy") is False for a in allocs_of(n, "web")))
    deployment = nomad.deployments[failed["ID"]]
    assert deployment["StatusDescription"] == (
        "Failed due to progress deadline - no stable job version to auto revert to"
    )
    group = deployment["TaskGroups"]["server"]
    allocs = allocs_of(nomad, "web")
    assert len(allocs) >= 3 and {a["Name"] for a in allocs} == {"web.server[0]"}
    assert parse_rfc3339(group["RequireProgressBy"]) == allocs[0]["CreateTime"] + 600 * SECOND
    assert deployment["ModifyTime"] >= parse_rfc3339(group["RequireProgressBy"])
    assert group["PlacedAllocs"] == len(allocs) and group["UnhealthyAllocs"] == len(allocs)
    assert all(a["DeploymentID"] == deployment["ID"] for a in allocs)
    assert allocs[0]["DesiredTransition"]["Reschedule"] is True
    triggers = [e["TriggeredBy"] for e in sorted(nomad.evaluations.values(), key=lambda e: e["CreateIndex"])]
    assert triggers[:3] == ["job-register", "alloc-failure", "deployment-watcher"]
    assert "alloc-reschedule" in triggers


# --- rolling, in-place, auto-revert ---------------------------------------------------------------------------------


def healthy_all(nomad: NomadDouble, job_id: str) -> None:
    for alloc in allocs_of(nomad, job_id):
        if alloc["DesiredStatus"] == "run" and (alloc["DeploymentStatus"] or {}).get("Healthy") is None:
            nomad.update_allocation(alloc["ID"], task_state="running", task_events=[{"Type": "Started"}], healthy=True)


def test_a_destructive_update_rolls_max_parallel_at_a_time(nomad: NomadDouble, api: httpx.Client) -> None:
    """reconcile_cluster.go computeUnderProvisionedBy / computeDestructiveUpdates: MaxParallel (1) allocations
    replaced per evaluation, the rest ignored; the next one when the new one is healthy (the watcher's
    evaluation); names kept, PreviousAllocation set; isDeploymentComplete marks it successful at the end."""
    nomad.default_scenario = scenarios.manual(start_after=0)
    register(api, make_job(count=3))
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 3)
    healthy_all(nomad, "web")
    wait_deployment(nomad, "web", "successful")
    old = {a["Name"]: a["ID"] for a in allocs_of(nomad, "web")}
    plan = api.put("/v1/job/web/plan", json={"Job": make_job(count=3, image="redis:8")}).json()
    assert (
        plan["Annotations"]["DesiredTGUpdates"]["server"] | {"DestructiveUpdate": 1, "Ignore": 2}
        == plan["Annotations"]["DesiredTGUpdates"]["server"]
    )
    register(api, make_job(count=3, image="redis:8"))
    for step in range(1, 4):
        nomad.wait_for(lambda n, step=step: sum(a["JobVersion"] == 1 for a in allocs_of(n, "web")) == step)
        new = [a for a in allocs_of(nomad, "web") if a["JobVersion"] == 1]
        live_old = [a for a in allocs_of(nomad, "web") if a["JobVersion"] == 0 and a["DesiredStatus"] == "run"]
        assert len(live_old) == 3 - step
        latest = new[-1]
        replaced = nomad.allocations[latest["PreviousAllocation"]]
        assert (replaced["Name"], replaced["ID"]) == (latest["Name"], old[latest["Name"]])
        assert replaced["DesiredDescription"] == "alloc is being updated due to job update"
        healthy_all(nomad, "web")
    nomad.wait_for(lambda n: deployments_of(n, "web")[-1]["Status"] == "successful")
    deployment = deployments_of(nomad, "web")[-1]
    assert deployment["JobVersion"] == 1 and deployment["TaskGroups"]["server"]["DesiredTotal"] == 3
    assert sorted(a["Name"] for a in allocs_of(nomad, "web") if a["JobVersion"] == 1) == sorted(old)


def test_a_count_change_updates_in_place(nomad: NomadDouble, api: httpx.Client) -> None:
    """scheduler/util.go tasksUpdated (a count is not a task change) and generic_sched.go computeJobAllocs: the
    existing allocations keep their IDs and join the new version's deployment with their health cleared; new
    names are placed; the plan says InPlaceUpdate 2, Place 1."""
    nomad.default_scenario = scenarios.rollout(healthy_after=0)
    register(api, make_job(count=2))
    wait_deployment(nomad, "web", "successful")
    before = {a["ID"] for a in allocs_of(nomad, "web")}
    updates = api.put("/v1/job/web/plan", json={"Job": make_job(count=3)}).json()["Annotations"]["DesiredTGUpdates"]
    assert (updates["server"]["InPlaceUpdate"], updates["server"]["Place"]) == (2, 1)
    register(api, make_job(count=3))
    nomad.wait_for(lambda n: len([d for d in deployments_of(n, "web") if d["Status"] == "successful"]) == 2)
    allocs = allocs_of(nomad, "web")
    assert before < {a["ID"] for a in allocs} and len(allocs) == 3
    second = deployments_of(nomad, "web")[-1]
    assert all(a["JobVersion"] == 1 and a["DeploymentID"] == second["ID"] for a in allocs)
    assert all(a["DeploymentStatus"]["Healthy"] for a in allocs), "health watched again after the update"
    assert second["TaskGroups"]["server"]["DesiredTotal"] == 3
    assert sorted(a["Name"] for a in allocs) == ["web.server[0]", "web.server[1]", "web.server[2]"]
    assert_indexes_match_the_tables(nomad)


def assert_indexes_match_the_tables(nomad: NomadDouble) -> None:
    """The state's indexes (allocations by job and by deployment, evaluations by job) hold what a scan of the
    tables finds: an allocation updated in place is under its new deployment only."""
    state = nomad.cluster.state
    with state.cond:
        for key, indexed in state.allocs_by_job.items():
            assert set(indexed) == {i for i, a in state.allocs.items() if (a["Namespace"], a["JobID"]) == key}
        for deployment_id, indexed in state.allocs_by_deployment.items():
            assert set(indexed) == {i for i, a in state.allocs.items() if a["DeploymentID"] == deployment_id}
        for key, indexed in state.deployments_by_job.items():
            assert set(indexed) == {i for i, d in state.deployments.items() if (d["Namespace"], d["JobID"]) == key}
        for key, indexed in state.evals_by_job.items():
            assert set(indexed) == {i for i, e in state.evals.items() if (e["Namespace"], e["JobID"]) == key}
        assert sum(map(len, state.allocs_by_job.values())) == len(state.allocs)


def test_auto_revert_is_to_the_newest_stable_version(nomad: NomadDouble, api: httpx.Client) -> None:
    """deployment_watcher.go latestStableJob + handleRollbackValidity: the revert goes to the newest stable
    version whatever its spec; when that spec is the job's own, `not rolling back to stable job version N as
    current job has same specification` and no revert. The reverted version keeps Stable."""
    nomad.default_scenario = scenarios.rollout(healthy_after=0)
    register(api, make_job(meta="v0"))
    wait_deployment(nomad, "web", "successful")
    nomad.default_scenario = scenarios.unhealthy(healthy_after=0, then=scenarios.unhealthy(healthy_after=0))
    register(api, make_job(meta="v1"))
    nomad.wait_for(lambda n: len([d for d in deployments_of(n, "web") if d["Status"] == "failed"]) == 2, timeout=10)
    first, second = [d for d in deployments_of(nomad, "web") if d["Status"] == "failed"]
    assert first["StatusDescription"] == "Failed due to progress deadline - rolling back to job version 0"
    assert second["JobVersion"] == 2
    assert second["StatusDescription"] == (
        "Failed due to progress deadline - not rolling back to stable job version 2 as current job has same "
        "specification"
    )
    versions = nomad.job_versions("web")
    assert [(v["Version"], v["Stable"], v["Meta"]["revision"]) for v in versions] == [
        (0, True, "v0"),
        (1, False, "v1"),
        (2, True, "v0"),
    ]


# --- canaries ---------------------------------------------------------------------------------------------------


def canary_job(image: str, canary: int = 1, auto_promote: bool = False) -> JSON:
    job = make_job(count=2, image=image)
    group = job["TaskGroups"][0]
    group["Update"].update(Canary=canary, AutoPromote=auto_promote)
    group["Services"][0].update(Tags=["live"], CanaryTags=["canary"])
    return job


def test_canaries_wait_for_promotion_then_replace_the_rest(nomad: NomadDouble, api: httpx.Client) -> None:
    """reconcile_cluster.go requiresCanaries / computeCanaries / NextCanaries: the canary runs beside the old
    allocation of the same name, nothing else moves, the deployment waits for promotion (RequiresPromotion; the
    progress deadline does not fail healthy canaries, deployment_watcher.go shouldFail); state_store.go
    UpdateDeploymentPromotion: a promotion needs healthy canaries; then computeStop stops the old allocation named
    like the canary and the rest roll. The canary registers its CanaryTags until promoted (service_client.go)."""
    nomad.default_scenario = scenarios.rollout(healthy_after=0)
    register(api, canary_job("redis:7"))
    wait_deployment(nomad, "web", "successful")
    old = {a["Name"]: a for a in allocs_of(nomad, "web")}
    nomad.default_scenario = scenarios.manual(start_after=0)
    plan = api.put("/v1/job/web/plan", json={"Job": canary_job("redis:8")}).json()
    updates = plan["Annotations"]["DesiredTGUpdates"]["server"]
    assert (updates["Canary"], updates["Ignore"], updates["DestructiveUpdate"], updates["Place"]) == (1, 2, 0, 0)
    register(api, canary_job("redis:8"))
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 3)
    canary = allocs_of(nomad, "web")[-1]
    assert canary["Name"] == "web.server[0]" and canary["DeploymentStatus"]["Canary"] is True
    assert all(nomad.allocations[a["ID"]]["DesiredStatus"] == "run" for a in old.values())
    deployment = deployments_of(nomad, "web")[-1]
    group = deployment["TaskGroups"]["server"]
    assert deployment["StatusDescription"] == "Deployment is running but requires manual promotion"
    assert (group["DesiredCanaries"], group["DesiredTotal"], group["PlacedCanaries"]) == (1, 2, [canary["ID"]])
    promote = {"DeploymentID": deployment["ID"], "All": True}
    too_early = api.put(f"/v1/deployment/promote/{deployment['ID']}", json=promote)
    assert (too_early.status_code, too_early.text) == (
        500,
        '1 error occurred:\n\t* Task group "server" has 0/1 healthy allocations\n\n',
    )
    nomad.update_allocation(canary["ID"], task_state="running", task_events=[{"Type": "Started"}], healthy=True)
    # Past the progress deadline, healthy canaries still wait for their promotion.
    deadline = parse_rfc3339(deployments_of(nomad, "web")[-1]["TaskGroups"]["server"]["RequireProgressBy"])
    nomad.wait_for(lambda n: n.clock.now() > deadline + 10 * SECOND)
    assert deployments_of(nomad, "web")[-1]["Status"] == "running"
    promoted = api.put(f"/v1/deployment/promote/{deployment['ID']}", json=promote)
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert set(body) == {"EvalID", "EvalCreateIndex", "DeploymentModifyIndex", "RevertedJobVersion", "Index"}
    assert body["RevertedJobVersion"] is None
    assert nomad.evaluations[body["EvalID"]]["TriggeredBy"] == "deployment-watcher"
    after = nomad.deployments[deployment["ID"]]
    assert after["TaskGroups"]["server"]["Promoted"] is True and after["StatusDescription"] == "Deployment is running"
    assert nomad.allocations[canary["ID"]]["DeploymentStatus"]["Canary"] is False
    nomad.wait_for(lambda n: n.allocations[old["web.server[0]"]["ID"]]["DesiredStatus"] == "stop")
    assert nomad.allocations[old["web.server[0]"]["ID"]]["DesiredDescription"] == "alloc not needed due to job update"
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 4)
    replacement = allocs_of(nomad, "web")[-1]
    assert (replacement["Name"], replacement["PreviousAllocation"]) == ("web.server[1]", old["web.server[1]"]["ID"])
    nomad.update_allocation(replacement["ID"], task_state="running", task_events=[{"Type": "Started"}], healthy=True)
    nomad.wait_for(lambda n: n.deployments[deployment["ID"]]["Status"] == "successful")


def test_canary_services_carry_the_canary_tags_until_promoted(nomad: NomadDouble, api: httpx.Client) -> None:
    """command/agent/consul/service_client.go serviceRegs (and nsd.go for Nomad's own registry): a canary
    registers exactly its CanaryTags; once promoted, the same registration ID gets the normal Tags. With
    `auto_promote`, the watcher promotes when the canaries are healthy (autoPromoteDeployment)."""
    nomad.default_scenario = scenarios.rollout(healthy_after=0)
    register(api, canary_job("redis:7"))
    wait_deployment(nomad, "web", "successful")
    nomad.default_scenario = scenarios.rollout(healthy_after=0.3)
    register(api, canary_job("redis:8", auto_promote=True))
    nomad.wait_for(lambda n: len(allocs_of(n, "web")) == 3)
    canary = allocs_of(nomad, "web")[-1]
    deployment = deployments_of(nomad, "web")[-1]
    assert deployment["StatusDescription"] == "Deployment is running pending automatic promotion"
    nomad.wait_for(lambda n: any(s["AllocID"] == canary["ID"] for s in n.services.values()))
    (registration,) = [s for s in nomad.services.values() if s["AllocID"] == canary["ID"]]
    assert registration["Tags"] == ["canary"]
    nomad.wait_for(lambda n: n.deployments[deployment["ID"]]["TaskGroups"]["server"]["Promoted"])
    assert nomad.services[registration["ID"]]["Tags"] == ["live"]
    nomad.wait_for(lambda n: n.deployments[deployment["ID"]]["Status"] == "successful", timeout=10)


def test_client_mode_canaries_register_their_canary_tags_in_consul(consul: Any, tmp_path: Path) -> None:
    """command/agent/consul/service_client.go serviceRegs: in Consul, a canary's service carries exactly the
    group's CanaryTags (and CanaryMeta); once promoted, the client registers the same service ID again with the
    normal tags (service_hook.go Update). Client mode follows the same server rules as scenarios."""
    client = LocalClient(consul_address=consul.address, workdir=tmp_path, check_interval=0.1)
    command = [sys.executable, "-c", SERVER_SCRIPT, "${NOMAD_ADDR_http}"]

    def job(greeting: str) -> JSON:
        built = local_job("canary", command, "consul", "/health", {"GREETING": greeting})
        group = built["TaskGroups"][0]
        group["Update"]["Canary"] = 1
        group["Services"][0].update(Tags=["live"], CanaryTags=["canary"], Meta={"m": "live"}, CanaryMeta={"m": "c"})
        return built

    def consul_service(service_id: str) -> JSON:
        found: JSON = httpx.get(f"{consul.address}/v1/agent/services").json().get(service_id) or {}
        return found

    with NomadDouble(client=client) as nomad, httpx.Client(base_url=nomad.address, timeout=10) as api:
        register(api, job("one"))
        wait_deployment(nomad, "canary", "successful", timeout=30)
        register(api, job("two"))
        nomad.wait_for(lambda n: len(allocs_of(n, "canary")) == 2, timeout=10)
        canary = allocs_of(nomad, "canary")[1]
        service_id = f"_nomad-task-{canary['ID']}-group-server-canary-http-http"
        deadline = time.monotonic() + 20
        while not consul_service(service_id):
            assert time.monotonic() < deadline, "the canary's service was not registered"
            time.sleep(0.1)
        registered = consul_service(service_id)
        assert (registered["Tags"], registered["Meta"]) == (["canary"], {"m": "c", "external-source": "nomad"})
        nomad.wait_for(lambda n: (n.allocations[canary["ID"]]["DeploymentStatus"] or {}).get("Healthy"), timeout=30)
        deployment = deployments_of(nomad, "canary")[-1]
        promoted = api.put(
            f"/v1/deployment/promote/{deployment['ID']}", json={"DeploymentID": deployment["ID"], "All": True}
        )
        assert promoted.status_code == 200, promoted.text
        while consul_service(service_id).get("Tags") != ["live"]:
            assert time.monotonic() < deadline + 20, consul_service(service_id)
            time.sleep(0.1)
        assert consul_service(service_id)["Meta"] == {"m": "live", "external-source": "nomad"}
        nomad.wait_for(lambda n: n.deployments[deployment["ID"]]["Status"] == "successful", timeout=30)


# --- health on the client ---------------------------------------------------------------------------------------


def test_health_waits_for_min_healthy_time_and_fails_at_the_healthy_deadline(
    nomad: NomadDouble, api: httpx.Client
) -> None:
    """client/allochealth/tracker.go and client/allocrunner/health_hook.go: healthy only once the tasks have
    run for MinHealthyTime; unhealthy at HealthyDeadline, counted from the alloc runner's start (so image pulls
    count); with HealthCheck `manual` the client never sets health."""
    nomad.set_scenario("web", scenarios.rollout(healthy_after=0))
    register(api, make_job())  # MinHealthyTime 10s, HealthyDeadline 5m
    wait_deployment(nomad, "web", "successful")
    (alloc,) = allocs_of(nomad, "web")
    healthy_at = parse_rfc3339(alloc["DeploymentStatus"]["Timestamp"])
    assert healthy_at - parse_rfc3339(alloc["TaskStates"]["backend"]["StartedAt"]) >= 10 * SECOND

    nomad.set_scenario("sick", scenarios.unhealthy(healthy_after=0))
    register(api, make_job("sick"))
    nomad.wait_for(lambda n: any((a["DeploymentStatus"] or {}).get("Healthy") is False for a in allocs_of(n, "sick")))
    (sick,) = allocs_of(nomad, "sick")
    assert parse_rfc3339(sick["DeploymentStatus"]["Timestamp"]) - sick["CreateTime"] >= 300 * SECOND

    manual = make_job("manual")
    manual["TaskGroups"][0]["Update"]["HealthCheck"] = "manual"
    nomad.set_scenario("manual", scenarios.rollout(healthy_after=0))
    register(api, manual)
    deployment = wait_deployment(nomad, "manual", "failed")
    assert deployment["StatusDescription"].startswith("Failed due to progress deadline")
    assert allocs_of(nomad, "manual")[0]["DeploymentStatus"] is None


def test_reschedule_policies_are_validated(nomad: NomadDouble, api: httpx.Client) -> None:
    """nomad/structs/structs.go ReschedulePolicy.Validate (in TaskGroup.Validate): ambiguous or impossible
    policies are refused with Nomad's lines; a disabled policy is not checked."""
    cases = [
        (
            {"Attempts": 2, "Interval": 0, "Delay": 30 * SECOND, "DelayFunction": "constant", "Unlimited": True},
            [
                "Interval must be a non zero value if Attempts > 0",
                "Reschedule Policy with Attempts = 2, Interval = 0s, and Unlimited = true is ambiguous",
                "If Attempts >0, Unlimited cannot also be set to true",
            ],
        ),
        (
            {"Unlimited": True, "Delay": SECOND, "DelayFunction": "linear", "MaxDelay": 3600 * SECOND},
            [
                "Delay cannot be less than 5s (got 1s)",
                'Invalid delay function "linear", must be one of ["constant" "exponential" "fibonacci"]',
            ],
        ),
        (
            {"Attempts": 5, "Interval": 60 * SECOND, "Delay": 30 * SECOND, "DelayFunction": "constant"},
            [
                'Nomad can only make 2 attempts in 1m0s with initial delay 30s and delay function "constant"',
                "Set the interval to at least 2m30s to accommodate 5 attempts",
            ],
        ),
    ]
    for policy, lines in cases:
        job = reschedule_policy(make_job(), **{"Unlimited": False, "MaxDelay": 0, **policy})
        errors = api.put("/v1/validate/job", json={"Job": job}).json()["Error"]
        for line in lines:
            assert f"\t* {line}\n" in errors, (line, errors)
    disabled = reschedule_policy(make_job(), Attempts=0, Unlimited=False, Delay=0)
    assert api.put("/v1/validate/job", json={"Job": disabled}).json()["Error"] == ""
