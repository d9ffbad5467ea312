"""State changes shared by scenarios, client mode and the manual test API; each runs inside an open `Tx`.

They mirror who changes what in Nomad: the client updates task states and allocation health, the deployment
watcher counts healthy allocations and sets deployment status, the scheduler stops allocations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .jobspec import JSON, group_named, services
from .objects import client_status, new_task_state, parse_rfc3339, rfc3339, task_event
from .state import JobKey, State, Tx

MAX_TASK_EVENTS = 10  # Nomad keeps the last 10 events per task state


def init_task_states(alloc: JSON) -> JSON:
    """The client's first update: every task of the group `pending` (TaskStates is null before that)."""
    if alloc["TaskStates"] is None:
        group = group_named(alloc["Job"], alloc["TaskGroup"])
        alloc["TaskStates"] = {t["Name"]: new_task_state() for t in group.get("Tasks") or []}
    states: JSON = alloc["TaskStates"]
    return states


def client_update(
    tx: Tx,
    alloc_id: str,
    task: str,
    events: list[JSON] | None = None,
    state: str | None = None,
    failed: bool | None = None,
    restarted: bool = False,
) -> None:
    """One task-state update from the client: events, a state change, the restart counter. The allocation's
    ClientStatus follows from all its task states, as the client derives it."""
    alloc = tx.state.allocs[alloc_id]
    # A task the job does not declare (a synthesized `download-model`, a manual update) gets a fresh state.
    task_state = init_task_states(alloc).setdefault(task, new_task_state())
    for event in events or []:
        event["Time"] = event["Time"] or tx.now
    task_state["Events"] = [*task_state["Events"], *(events or [])][-MAX_TASK_EVENTS:]
    if state is not None:
        # StartedAt on every start, FinishedAt the first time the task dies (task_runner.go UpdateState).
        if state == "running" and task_state["State"] != "running":
            task_state["StartedAt"] = rfc3339(tx.now)
        if state == "dead" and task_state["State"] != "dead" and parse_rfc3339(task_state["FinishedAt"]) == 0:
            task_state["FinishedAt"] = rfc3339(tx.now)
        task_state["State"] = state
    if failed is not None:
        task_state["Failed"] = failed
    if restarted:
        task_state["Restarts"] += 1
        task_state["LastRestart"] = rfc3339(tx.now)
    set_client_status(tx, alloc, *client_status(alloc["TaskStates"]))


def set_client_status(tx: Tx, alloc: JSON, status: str, description: str) -> None:
    """A client update of the allocation; one that turns it `failed` is noted for the server's rescheduling
    evaluation (nomad/node_endpoint.go UpdateAlloc)."""
    if status == "failed" and alloc["ClientStatus"] != "failed":
        tx.failed.append(alloc["ID"])
    alloc["ClientStatus"], alloc["ClientDescription"] = status, description
    tx.put_alloc(alloc)


def set_alloc_health(tx: Tx, alloc_id: str, healthy: bool | None) -> None:
    """The client's deployment health verdict (AllocDeploymentStatus; the canary flag stays). The deployment's
    counters follow in `count_alloc`."""
    alloc = tx.state.allocs[alloc_id]
    previous = alloc.get("DeploymentStatus") or {}
    alloc["DeploymentStatus"] = {
        "Healthy": healthy,
        "Timestamp": rfc3339(tx.now),
        "Canary": bool(previous.get("Canary")),
        "ModifyIndex": previous.get("ModifyIndex", 0),
    }
    tx.put_alloc(alloc)


def count_alloc(tx: Tx, alloc: JSON) -> None:
    """nomad/state/state_store.go updateDeploymentWithAlloc, on every allocation write: PlacedAllocs +1 for an
    allocation new to the deployment; Healthy/UnhealthyAllocs +1 when its health is first set (healthy to
    unhealthy moves one across; nothing ever counts down); PlacedCanaries; and RequireProgressBy, started by the
    first placement and pushed by each healthy allocation."""
    before = tx.state.counted.get(alloc["ID"])
    status = alloc.get("DeploymentStatus") or {}
    health = status.get("Healthy")
    tx.state.counted[alloc["ID"]] = (alloc["DeploymentID"], health)
    deployment = tx.state.deployments.get(alloc["DeploymentID"]) if alloc["DeploymentID"] else None
    if deployment is None or alloc["TaskGroup"] not in deployment["TaskGroups"]:
        return
    placed = healthy = unhealthy = 0
    before_health = before[1] if before is not None else None
    if before is None or before[0] != alloc["DeploymentID"]:
        placed = 1
    elif before_health is None and health is not None:
        healthy, unhealthy = (1, 0) if health else (0, 1)
    elif before_health is True and health is False:
        healthy, unhealthy = -1, 1
    if not (placed or healthy or unhealthy):
        return
    if healthy or unhealthy:
        status["ModifyIndex"] = tx.index
    dstate = deployment["TaskGroups"][alloc["TaskGroup"]]
    dstate["PlacedAllocs"] += placed
    dstate["HealthyAllocs"] += healthy
    dstate["UnhealthyAllocs"] += unhealthy
    if status.get("Canary") and alloc["ID"] not in (dstate["PlacedCanaries"] or []):
        dstate["PlacedCanaries"] = [*(dstate["PlacedCanaries"] or []), alloc["ID"]]
    deadline = int(dstate["ProgressDeadline"] or 0)
    if deadline:
        current = parse_rfc3339(dstate["RequireProgressBy"])
        if placed and current == 0:
            dstate["RequireProgressBy"] = rfc3339(tx.now + deadline)
        elif healthy > 0:
            pushed = parse_rfc3339(status.get("Timestamp")) + deadline
            if pushed > current:
                dstate["RequireProgressBy"] = rfc3339(pushed)
    tx.put_deployment(deployment, "DeploymentAllocHealth" if healthy or unhealthy else "PlanResult")


def set_deployment_status(tx: Tx, deployment_id: str, status: str, description: str) -> None:
    """updateDeploymentStatusImpl (nomad/state/state_store.go): the status; RequireProgressBy starts again from
    now when it becomes running or paused; a successful deployment marks its job version stable."""
    deployment = tx.state.deployments[deployment_id]
    deployment["Status"] = status
    deployment["StatusDescription"] = description
    if status in ("running", "paused"):
        for dstate in deployment["TaskGroups"].values():
            if dstate["ProgressDeadline"]:
                dstate["RequireProgressBy"] = rfc3339(tx.now + int(dstate["ProgressDeadline"]))
    tx.put_deployment(deployment)
    if status == "successful":
        set_job_stability(tx, (deployment["Namespace"], deployment["JobID"]), deployment["JobVersion"], True)


def set_job_stability(tx: Tx, key: JobKey, version: int, stable: bool) -> bool:
    """updateJobStabilityImpl: the version's Stable flag; the job's ModifyIndex moves, not its Version,
    JobModifyIndex or SubmitTime. False when that version is not kept."""
    for job in tx.state.job_versions.get(key, []):
        if job["Version"] == version:
            if job["Stable"] != stable:
                job["Stable"] = stable
                if tx.state.jobs.get(key) is job:
                    tx.put_job(job, "DeploymentStatusUpdate")
            return True
    return False


def stop_alloc(tx: Tx, alloc: JSON, description: str, client_status: str = "") -> None:
    """The scheduler stops an allocation and the client confirms: desired stop, tasks killed, client complete
    (a failed allocation stays failed)."""
    alloc["DesiredStatus"] = "stop"
    alloc["DesiredDescription"] = description
    tx.stopped.append(alloc["ID"])
    if client_status:
        alloc["ClientStatus"] = client_status
    if alloc["ClientStatus"] in ("pending", "running"):
        tasks = {t["Name"]: t for t in group_named(alloc["Job"], alloc["TaskGroup"])["Tasks"]}
        for name, task_state in init_task_states(alloc).items():
            if task_state["State"] == "dead":
                continue
            killing = task_event("Killing", KillTimeout=tasks.get(name, {}).get("KillTimeout", 0), Time=tx.now)
            killed = task_event("Killed", Time=tx.now)
            task_state["Events"] = [*task_state["Events"], killing, killed][-MAX_TASK_EVENTS:]
            task_state["State"] = "dead"
            if parse_rfc3339(task_state["FinishedAt"]) == 0:
                task_state["FinishedAt"] = rfc3339(tx.now)
        alloc["ClientStatus"], alloc["ClientDescription"] = "complete", "All tasks have completed"
    tx.put_alloc(alloc, "AllocationUpdateDesiredStatus")
    for service_id in [s["ID"] for s in tx.state.services.values() if s["AllocID"] == alloc["ID"]]:
        tx.delete_service(service_id)


def alloc_terminal(alloc: JSON) -> bool:
    return alloc["DesiredStatus"] in ("stop", "evict") or alloc["ClientStatus"] in ("complete", "failed", "lost")


def job_status(state: State, key: JobKey) -> str:
    """Nomad's getJobStatus: running with a live allocation, pending with an open evaluation, else dead."""
    job = state.jobs[key]
    allocs = list(state.allocs_by_job[key].values())
    evals = list(state.evals_by_job[key].values())
    if any(not alloc_terminal(a) for a in allocs):
        return "running"
    if any(e["Status"] in ("pending", "blocked") for e in evals):
        return "pending"
    if allocs or evals or job["Stop"]:
        return "dead"
    return "pending"


def port_of(alloc: JSON, label: str | None) -> int:
    """The host port a service or check refers to: a group port label, or a literal number."""
    if not label:
        return 0
    if label.isdigit():
        return int(label)
    for port in alloc["AllocatedResources"]["Shared"]["Ports"] or []:
        if port["Label"] == label:
            return int(port["Value"])
    raise KeyError(f"allocation {alloc['ID']} has no port {label!r}")


def service_id(alloc: JSON, service: JSON, task: str | None) -> str:
    """Nomad's registration ID: `_nomad-task-<alloc>-<task | group-<group>>-<service>-<port label>`."""
    owner = task if task else f"group-{alloc['TaskGroup']}"
    return f"_nomad-task-{alloc['ID']}-{owner}-{service['Name']}-{service.get('PortLabel') or ''}"


def check_id(alloc: JSON, service: JSON, check: JSON, task: str | None) -> str:
    """A stable check ID (Nomad hashes the check definition; this hashes its identity)."""
    text = f"{alloc['ID']}/{task}/{service['Name']}/{check.get('Name')}/{check.get('Type')}/{check.get('Path')}"
    return hashlib.sha1(text.encode()).hexdigest()


def alloc_services(alloc: JSON, provider: str, tasks: list[str] | None = None) -> list[tuple[JSON, str | None]]:
    """The allocation's services of `provider` with their owning task: group services, and those of `tasks`
    (all tasks when None)."""
    group = group_named(alloc["Job"], alloc["TaskGroup"])
    return [
        (s, t) for s, t in services(group) if s["Provider"] == provider and (t is None or tasks is None or t in tasks)
    ]


def canary(alloc: JSON) -> bool:
    return bool((alloc.get("DeploymentStatus") or {}).get("Canary"))


def service_tags(alloc: JSON, service: JSON) -> list[str]:
    """A canary registers exactly the service's CanaryTags, when it has some, instead of its Tags
    (command/agent/consul/service_client.go serviceRegs, client/serviceregistration/nsd/nsd.go)."""
    if canary(alloc) and service.get("CanaryTags"):
        return list(service["CanaryTags"])
    return list(service.get("Tags") or [])


def service_meta(alloc: JSON, service: JSON) -> JSON:
    """Consul meta: exactly CanaryMeta for a canary that has some, else Meta; plus `external-source: nomad`."""
    meta = service.get("CanaryMeta") if canary(alloc) and service.get("CanaryMeta") else service.get("Meta")
    return {**(meta or {}), "external-source": "nomad"}


def register_nomad_services(tx: Tx, alloc: JSON, tasks: list[str] | None = None) -> None:
    """Register the allocation's `nomad` provider services in the double's own registry (`/v1/service/:name`);
    registering again (after a promotion) keeps each registration's ID and updates it."""
    for service, task in alloc_services(alloc, "nomad", tasks):
        sid = service_id(alloc, service, task)
        existing = tx.state.services.get(sid)
        tx.put_service(
            {
                "ID": sid,
                "ServiceName": service["Name"],
                "Namespace": alloc["Namespace"],
                "NodeID": alloc["NodeID"],
                "Datacenter": "dc1",
                "JobID": alloc["JobID"],
                "AllocID": alloc["ID"],
                "Tags": service_tags(alloc, service),
                "Address": "127.0.0.1",
                "Port": port_of(alloc, service.get("PortLabel")),
                "CreateIndex": existing["CreateIndex"] if existing else 0,
                "ModifyIndex": 0,
            }
        )


def retag_nomad_services(tx: Tx, alloc: JSON) -> None:
    """The client's service hook after a promotion: the allocation's registrations again, with its tags now
    (service_hook.go Update; the registration ID does not change)."""
    for service, task in alloc_services(alloc, "nomad"):
        registration = tx.state.services.get(service_id(alloc, service, task))
        if registration is not None:
            registration["Tags"] = service_tags(alloc, service)
            tx.put_service(registration)


@dataclass(frozen=True)
class CheckRef:
    """One check of one service of an allocation, with the task owning the service (None: group service)."""

    service: JSON
    check: JSON
    task: str | None


def alloc_checks(alloc: JSON, provider: str, tasks: list[str] | None = None) -> list[CheckRef]:
    return [CheckRef(s, c, t) for s, t in alloc_services(alloc, provider, tasks) for c in s.get("Checks") or []]


def set_check(tx: Tx, alloc: JSON, ref: CheckRef, status: str, output: str, code: int) -> None:
    """A nomad-provider check result as `/v1/client/allocation/:id/checks` reports it."""
    cid = check_id(alloc, ref.service, ref.check, ref.task)
    tx.put_check(
        alloc["ID"],
        cid,
        {
            "ID": cid,
            "Check": ref.check.get("Name") or f'service: "{ref.service["Name"]}" check',
            "Group": f"{alloc['JobID']}.{alloc['TaskGroup']}",
            "Mode": "readiness" if ref.check.get("OnUpdate") == "ignore" else "healthiness",
            "Output": output,
            "Service": ref.service["Name"],
            "Task": ref.task or "group",
            "Status": status,
            "StatusCode": code,
            "Timestamp": tx.now // 10**9,
        },
    )
