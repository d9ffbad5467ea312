"""Nomad's wire objects: builders for evaluations, allocations, deployments and task events, and the renderings
the endpoints return (full objects with empty fields left out, list stubs with every field).

Objects are stored as JSON dicts keyed by Go field names, holding every field; the renderers decide what an
endpoint shows. Shapes follow the reference's sample responses (nomad-api.md §3.8) and its notes (§3.9).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from .goduration import format_duration
from .jobspec import JSON, main_tasks, ports
from .jsoncopy import clone

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as Nomad prints unset timestamps


def new_id() -> str:
    return str(uuid.uuid4())


def rfc3339(ns: int) -> str:
    """A timestamp (unix ns) as Go's RFC3339Nano (UTC, fraction without trailing zeros); 0 is Go's zero time."""
    if ns == 0:
        return ZERO_TIME
    seconds, frac = divmod(ns, 10**9)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def parse_rfc3339(text: str | None) -> int:
    """The unix ns of an RFC3339 timestamp as `rfc3339` writes it; Go's zero time (or nothing) is 0."""
    if not text or text.startswith("0001-"):
        return 0
    base, _, frac = text.rstrip("Z").partition(".")
    seconds = int(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return seconds * 10**9 + int((frac or "0").ljust(9, "0")[:9])


def omit_empty(obj: JSON) -> JSON:
    """Top-level `omitempty`: full evaluations and allocations leave out empty fields (nomad-api.md §3.9)."""
    return {k: v for k, v in obj.items() if v not in (None, "", 0, False, {}, [])}


# --- evaluations ------------------------------------------------------------------------------------------

EVAL_STUB_FIELDS = (
    "ID", "Namespace", "Priority", "Type", "TriggeredBy", "JobID", "NodeID", "DeploymentID", "Status",
    "StatusDescription", "WaitUntil", "NextEval", "PreviousEval", "BlockedEval", "CreateIndex", "ModifyIndex",
    "CreateTime", "ModifyTime",
)  # fmt: skip


def new_eval(job: JSON, triggered_by: str, status: str = "pending", **fields: Any) -> JSON:
    """An evaluation for `job` with every api.Evaluation field."""
    ev: JSON = {
        "ID": new_id(),
        "Priority": job.get("Priority", 50),
        "Type": job.get("Type", "service"),
        "TriggeredBy": triggered_by,
        "Namespace": job["Namespace"],
        "JobID": job["ID"],
        "JobModifyIndex": job.get("JobModifyIndex", 0),
        "NodeID": "",
        "NodeModifyIndex": 0,
        "DeploymentID": "",
        "Status": status,
        "StatusDescription": "",
        "Wait": 0,
        "WaitUntil": None,
        "NextEval": "",
        "PreviousEval": "",
        "BlockedEval": "",
        "RelatedEvals": None,
        "FailedTGAllocs": None,
        "ClassEligibility": None,
        "EscapedComputedClass": False,
        "QuotaLimitReached": "",
        "AnnotatePlan": False,
        "QueuedAllocations": None,
        "SnapshotIndex": 0,
        "CreateIndex": 0,
        "ModifyIndex": 0,
        "CreateTime": 0,
        "ModifyTime": 0,
    }
    ev.update(fields)
    return ev


def full_eval(ev: JSON) -> JSON:
    return omit_empty(ev)


def eval_stub(ev: JSON) -> JSON:
    """api.EvaluationStub, as in `RelatedEvals`: every field present."""
    return {k: ev[k] for k in EVAL_STUB_FIELDS}


def alloc_metric(**fields: Any) -> JSON:
    """api.AllocationMetric with every field (the reference sample shows the nulls)."""
    metric: JSON = {
        "AllocationTime": 4111,
        "ClassExhausted": None,
        "ClassFiltered": None,
        "CoalescedFailures": 0,
        "ConstraintFiltered": None,
        "DimensionExhausted": None,
        "NodesAvailable": {"dc1": 1},
        "NodesEvaluated": 1,
        "NodesExhausted": 0,
        "NodesFiltered": 0,
        "NodesInPool": 1,
        "QuotaExhausted": None,
        "ResourcesExhausted": None,
        "ScoreMetaData": None,
        "Scores": None,
    }
    metric.update(fields)
    return metric


# --- deployments ------------------------------------------------------------------------------------------


def new_deployment(job: JSON, eval_priority: int, now: int) -> JSON:
    """A running deployment for the job's current version, with every structs.Deployment field and no group yet
    (nomad/structs/deployment.go NewDeployment; the reconciler adds each group's state)."""
    return {
        "ID": new_id(),
        "Namespace": job["Namespace"],
        "JobID": job["ID"],
        "JobVersion": job["Version"],
        "JobModifyIndex": job["ModifyIndex"],
        "JobSpecModifyIndex": job["JobModifyIndex"],
        "JobCreateIndex": job["CreateIndex"],
        "IsMultiregion": False,
        "TaskGroups": {},
        "Status": "running",
        "StatusDescription": "Deployment is running",
        "EvalPriority": eval_priority,
        "CreateIndex": 0,
        "ModifyIndex": 0,
        "CreateTime": now,
        "ModifyTime": now,
    }


def new_deployment_state(update: JSON | None) -> JSON:
    """A group's structs.DeploymentState as the reconciler starts it (initializeDeploymentState)."""
    update = update or {}
    return {
        "AutoRevert": bool(update.get("AutoRevert")),
        "AutoPromote": bool(update.get("AutoPromote")),
        "ProgressDeadline": update.get("ProgressDeadline", 0),
        "RequireProgressBy": ZERO_TIME,
        "Promoted": False,
        "PlacedCanaries": None,
        "DesiredCanaries": 0,
        "DesiredTotal": 0,
        "PlacedAllocs": 0,
        "HealthyAllocs": 0,
        "UnhealthyAllocs": 0,
    }


# --- allocations ------------------------------------------------------------------------------------------

# nomad/structs/alloc.go AllocListStub: no DeploymentID and no PreviousAllocation (read the full allocation).
ALLOC_STUB_FIELDS = (
    "ID", "EvalID", "Name", "Namespace", "NodeID", "NodeName", "JobID", "JobType", "JobVersion", "TaskGroup",
    "DesiredStatus", "DesiredDescription", "ClientStatus", "ClientDescription", "DesiredTransition", "TaskStates",
    "DeploymentStatus", "FollowupEvalID", "NextAllocation", "RescheduleTracker", "PreemptedAllocations",
    "PreemptedByAllocation", "CreateIndex", "ModifyIndex", "CreateTime", "ModifyTime",
)  # fmt: skip


def new_alloc(
    job: JSON,
    group: JSON,
    name: str,
    eval_id: str,
    deployment_id: str,
    node: tuple[str, str],
    port_values: dict[str, int],
) -> JSON:
    """A pending allocation of `group`, placed on `node` (id, name) with the given host ports."""
    group_ports = [
        (p, {"Label": p.label, "Value": port_values[p.label], "To": p.to, "HostIP": "127.0.0.1"}) for p in ports(group)
    ]
    network = {
        "Mode": "host",
        "IP": "127.0.0.1",
        "DynamicPorts": [entry for spec, entry in group_ports if not spec.static] or None,
        "ReservedPorts": [entry for spec, entry in group_ports if spec.static] or None,
    }
    tasks: JSON = {}
    for task in group.get("Tasks") or []:
        res = task.get("Resources") or {}
        tasks[task["Name"]] = {
            "Cpu": {"CpuShares": res.get("CPU", 100), "ReservedCores": None},
            "Memory": {"MemoryMB": res.get("MemoryMB", 300), "MemoryMaxMB": res.get("MemoryMaxMB") or 0},
            "Networks": None,
            "Devices": [_allocated_device(d, i) for i, d in enumerate(res.get("Devices") or [])] or None,
        }
    return {
        "ID": new_id(),
        "Namespace": job["Namespace"],
        "EvalID": eval_id,
        "Name": name,
        "NodeID": node[0],
        "NodeName": node[1],
        "JobID": job["ID"],
        "Job": clone(job),
        "JobType": job.get("Type", "service"),
        "JobVersion": job["Version"],
        "TaskGroup": group["Name"],
        "AllocatedResources": {
            "Tasks": tasks,
            "TaskLifecycles": {t["Name"]: t.get("Lifecycle") for t in group.get("Tasks") or []},
            "Shared": {
                "DiskMB": (group.get("EphemeralDisk") or {}).get("SizeMB", 300),
                "Networks": [network] if group_ports else None,
                "Ports": [entry for _spec, entry in group_ports] or None,
            },
        },
        "Metrics": alloc_metric(),
        "DesiredStatus": "run",
        "DesiredDescription": "",
        "DesiredTransition": {
            "Migrate": None,
            "Reschedule": None,
            "ForceReschedule": None,
            "NoShutdownDelay": None,
            "MigrateDisablePlacement": None,
        },
        "ClientStatus": "pending",
        "ClientDescription": "",
        # The client fills TaskStates once it picks the allocation up; until then the field is null.
        "TaskStates": None,
        "DeploymentID": deployment_id,
        # Undecided health is a nil DeploymentStatus until the client reports (api/allocations.go:413).
        "DeploymentStatus": None,
        "FollowupEvalID": "",
        "PreviousAllocation": "",
        "NextAllocation": "",
        "RescheduleTracker": None,
        "NetworkStatus": None,
        "PreemptedAllocations": None,
        "PreemptedByAllocation": "",
        "CreateIndex": 0,
        "ModifyIndex": 0,
        "AllocModifyIndex": 0,
        "CreateTime": 0,
        "ModifyTime": 0,
    }


def _allocated_device(request: JSON, index: int) -> JSON:
    """A device the fake node hands out for a `Resources.Devices` request (`nvidia/gpu[/model]`)."""
    parts = (request.get("Name") or "gpu").split("/", 2)
    vendor, kind = (parts[0], parts[1]) if len(parts) >= 2 else ("nvidia", parts[0])
    model = parts[2] if len(parts) == 3 else "NVIDIA A100-SXM4-40GB"
    count = request.get("Count") or 1
    return {
        "Vendor": vendor,
        "Type": kind,
        "Name": model,
        "DeviceIDs": [f"GPU-{uuid.UUID(int=index * 100 + n + 1)}" for n in range(count)],
    }


def full_alloc(alloc: JSON) -> JSON:
    return omit_empty(alloc)


def alloc_stub(alloc: JSON, task_states: bool = True, resources: bool = False) -> JSON:
    """structs.AllocListStub: every field present, no Job; `task_states=false` leaves TaskStates out and
    `resources=true` adds AllocatedResources (AllocStubFields, command/agent/alloc_endpoint.go)."""
    stub = {k: alloc[k] for k in ALLOC_STUB_FIELDS if task_states or k != "TaskStates"}
    if resources:
        stub["AllocatedResources"] = alloc["AllocatedResources"]
    return stub


def alloc_name(job_id: str, group: str, index: int) -> str:
    """structs.AllocName: `job.group[index]`."""
    return f"{job_id}.{group}[{index}]"


def alloc_index(alloc: JSON) -> int:
    """structs.Allocation.Index: the number between the last brackets of the name."""
    name: str = alloc["Name"]
    return int(name[name.rindex("[") + 1 : -1])


def event_alloc(alloc: JSON) -> JSON:
    """The event-stream payload: the full allocation with `Job` stripped (nomad-api.md §3.7)."""
    return omit_empty({k: v for k, v in alloc.items() if k != "Job"})


def new_task_state() -> JSON:
    return {
        "State": "pending",
        "Failed": False,
        "Restarts": 0,
        "LastRestart": ZERO_TIME,
        "StartedAt": ZERO_TIME,
        "FinishedAt": ZERO_TIME,
        "Events": [],
        "TaskHandle": None,
    }


def client_status(task_states: JSON) -> tuple[str, str]:
    """The allocation status the client derives from its task states (client/allocrunner getClientStatus)."""
    states = task_states.values()
    if any(s["State"] == "dead" and s["Failed"] for s in states):
        return "failed", "Failed tasks"
    if any(s["State"] == "running" for s in states):
        return "running", "Tasks are running"
    if any(s["State"] == "pending" for s in states):
        return "pending", "No tasks have started"
    return "complete", "All tasks have completed"


def main_task_names(alloc: JSON) -> list[str]:
    group = next(g for g in alloc["Job"]["TaskGroups"] if g["Name"] == alloc["TaskGroup"])
    return [t["Name"] for t in main_tasks(group)]


# --- task events ------------------------------------------------------------------------------------------


def task_event(kind: str, **fields: Any) -> JSON:
    """An api.TaskEvent of type `kind` with every field, `Time` now and `DisplayMessage` derived like the server's
    `PopulateEventDisplayMessage`. `Details` values are strings, as in Nomad."""
    event: JSON = {
        "Type": kind,
        "Time": 0,  # stamped with the write's time when the client update is applied
        "DisplayMessage": "",
        "Details": {},
        "Message": "",
        "FailsTask": False,
        "RestartReason": "",
        "SetupError": "",
        "DriverError": "",
        "DriverMessage": "",
        "ExitCode": 0,
        "Signal": 0,
        "KillReason": "",
        "KillTimeout": 0,
        "KillError": "",
        "StartDelay": 0,
        "DownloadError": "",
        "ValidationError": "",
        "DiskLimit": 0,
        "FailedSibling": "",
        "VaultError": "",
        "TaskSignalReason": "",
        "TaskSignal": "",
        "GenericSource": "",
    }
    event.update(fields)
    details: dict[str, str] = dict(event["Details"] or {})
    for key, field in (("exit_code", "ExitCode"), ("restart_reason", "RestartReason"), ("driver_error", "DriverError")):
        if event[field] or (key == "exit_code" and kind == "Terminated"):
            details.setdefault(key, str(event[field]))
    if event["Signal"]:
        details.setdefault("signal", str(event["Signal"]))
    if event["FailsTask"]:
        details.setdefault("fails_task", "true")
    event["Details"] = details
    if not event["DisplayMessage"]:
        event["DisplayMessage"] = display_message(event)
    return event


def display_message(event: JSON) -> str:
    kind = event["Type"]
    if kind == "Received":
        return "Task received by client"
    if kind == "Started":
        return "Task started by client"
    if kind == "Driver":
        return str(event["DriverMessage"])
    if kind == "Driver Failure":
        return str(event["DriverError"] or event["Message"])
    if kind == "Terminated":
        parts = [f"Exit Code: {event['ExitCode']}"]
        if event["Signal"]:
            parts.append(f"Signal: {event['Signal']}")
        if event["Message"]:
            parts.append(f'Exit Message: "{event["Message"]}"')
        return ", ".join(parts)
    if kind == "Restarting":
        return f"Task restarting in {format_duration(int(event['StartDelay']))}"
    if kind in ("Not Restarting",):
        return str(event["RestartReason"])
    if kind == "Killing":
        return f"Sent interrupt. Waiting {format_duration(int(event['KillTimeout']))} before force killing"
    if kind == "Killed":
        return "Task successfully killed"
    return str(event["Message"])


# --- nodes ------------------------------------------------------------------------------------------------


def new_node(
    name: str,
    *,
    node_id: str | None = None,
    http_addr: str = "127.0.0.1:4646",
    datacenter: str = "dc1",
    node_pool: str = "default",
    node_class: str = "",
    status: str = "ready",
    eligible: bool = True,
    drain: bool = False,
    attributes: dict[str, str] | None = None,
    devices: list[JSON] | None = None,
) -> JSON:
    """A client node with the api.Node fields the endpoints show (`/v1/node/:id`)."""
    host = http_addr.rpartition(":")[0].strip("[]")
    return {
        "ID": node_id or new_id(),
        "Name": name,
        "Datacenter": datacenter,
        "NodePool": node_pool,
        "NodeClass": node_class,
        "HTTPAddr": http_addr,
        "TLSEnabled": False,
        "Status": status,
        "StatusDescription": "",
        "SchedulingEligibility": "eligible" if eligible else "ineligible",
        "Drain": drain,
        "Attributes": {
            "os.name": "ubuntu",
            "kernel.name": "linux",
            "nomad.version": "1.9.7",
            "unique.hostname": name,
            "unique.network.ip-address": host,
            **(attributes or {}),
        },
        "Meta": {},
        "Drivers": {},
        "NodeResources": {
            "Cpu": {"CpuShares": 8000},
            "Memory": {"MemoryMB": 32768},
            "Disk": {"DiskMB": 100000},
            "Devices": devices or [],
        },
        "ReservedResources": {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    }


def node_stub(node: JSON, resources: bool, os: bool) -> JSON:
    """api.NodeListStub (`Node.Stub`): the host of HTTPAddr as Address; resources and `os.name` on request."""
    stub: JSON = {
        "Address": node["HTTPAddr"].rpartition(":")[0].strip("[]"),
        "ID": node["ID"],
        "Datacenter": node["Datacenter"],
        "Name": node["Name"],
        "NodeClass": node["NodeClass"],
        "NodePool": node["NodePool"],
        "Version": node["Attributes"].get("nomad.version", ""),
        "Drain": node["Drain"],
        "SchedulingEligibility": node["SchedulingEligibility"],
        "Status": node["Status"],
        "StatusDescription": node["StatusDescription"],
        "Drivers": node["Drivers"],
        "HostVolumes": None,
        "LastDrain": None,
        "CreateIndex": node["CreateIndex"],
        "ModifyIndex": node["ModifyIndex"],
    }
    if resources:
        stub["NodeResources"] = node["NodeResources"]
        stub["ReservedResources"] = node["ReservedResources"]
    if os:
        stub["Attributes"] = {"os.name": node["Attributes"].get("os.name", "")}
    return stub


def nvidia_gpus(model: str, count: int, memory_mib: int, driver_version: str = "550.54.15") -> JSON:
    """A device group as Nomad's NVIDIA device plugin fingerprints it (`nvidia/gpu/<model>`)."""
    return {
        "Vendor": "nvidia",
        "Type": "gpu",
        "Name": model,
        "Attributes": {
            "memory": {"Int": memory_mib, "Unit": "MiB"},
            "driver_version": {"String": driver_version},
            "display_state": {"String": "Disabled"},
            "persistence_mode": {"String": "Enabled"},
            "power": {"Int": 300, "Unit": "W"},
        },
        "Instances": [{"ID": f"GPU-{new_id()}", "Healthy": True, "HealthDescription": ""} for _ in range(count)],
    }
