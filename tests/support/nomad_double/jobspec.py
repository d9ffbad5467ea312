"""Reading submitted jobs the way Nomad does: defaults (`Canonicalize`), spec comparison, task roles.

Jobs stay plain JSON dicts with Go field names, exactly as they travel over the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .goduration import SECOND
from .jsoncopy import clone

JSON = dict[str, Any]

# Fields the server sets; Nomad's Job.SpecChanged ignores them when it decides whether a register changes the job.
SERVER_FIELDS = frozenset(
    {
        "Status",
        "StatusDescription",
        "Stable",
        "Version",
        "SubmitTime",
        "CreateIndex",
        "ModifyIndex",
        "JobModifyIndex",
        "NomadTokenID",
        "VersionTag",
    }
)

# api/jobs.go DefaultUpdateStrategy (service and system jobs).
DEFAULT_UPDATE: JSON = {
    "Stagger": 30 * SECOND,
    "MaxParallel": 1,
    "HealthCheck": "checks",
    "MinHealthyTime": 10 * SECOND,
    "HealthyDeadline": 300 * SECOND,
    "ProgressDeadline": 600 * SECOND,
    "Canary": 0,
    "AutoRevert": False,
    "AutoPromote": False,
}
# api/tasks.go restart and reschedule defaults, by job type.
DEFAULT_RESTART: dict[str, JSON] = {
    "service": {"Attempts": 2, "Interval": 1800 * SECOND, "Delay": 15 * SECOND, "Mode": "fail"},
    "batch": {"Attempts": 3, "Interval": 86400 * SECOND, "Delay": 15 * SECOND, "Mode": "fail"},
}
DEFAULT_RESCHEDULE: dict[str, JSON] = {
    "service": {
        "Attempts": 0,
        "Interval": 0,
        "Delay": 30 * SECOND,
        "DelayFunction": "exponential",
        "MaxDelay": 3600 * SECOND,
        "Unlimited": True,
    },
    "batch": {
        "Attempts": 1,
        "Interval": 86400 * SECOND,
        "Delay": 5 * SECOND,
        "DelayFunction": "constant",
        "MaxDelay": 0,
        "Unlimited": False,
    },
}


def _merge(defaults: JSON, override: JSON | None) -> JSON:
    """Non-null fields of `override` over `defaults` (Nomad's `Merge` on pointer fields)."""
    merged = dict(defaults)
    merged.update({k: v for k, v in (override or {}).items() if v is not None})
    return merged


def canonicalize(submitted: JSON, namespace: str) -> JSON:
    """A copy of the job with the client-side defaults Nomad applies before storing it (nomad-api.md §1.1)."""
    job = clone(submitted)
    job["ID"] = job.get("ID") or ""  # validation reports a missing ID
    job["Name"] = job.get("Name") or job["ID"]
    job["Type"] = job.get("Type") or "service"
    job["Priority"] = job.get("Priority") or 50
    job["Region"] = job.get("Region") or "global"
    job["Namespace"] = namespace
    job["Datacenters"] = job.get("Datacenters") or ["*"]
    job["NodePool"] = job.get("NodePool") or "default"
    job["Stop"] = bool(job.get("Stop"))
    job["AllAtOnce"] = bool(job.get("AllAtOnce"))
    job["ParentID"] = job.get("ParentID") or ""
    job["Dispatched"] = bool(job.get("Dispatched"))
    kind = "batch" if job["Type"] in ("batch", "sysbatch") else "service"
    for group in job.get("TaskGroups") or []:
        _canonicalize_group(job, group, kind)
    return job


def _canonicalize_group(job: JSON, group: JSON, kind: str) -> None:
    # api/tasks.go TaskGroup.Canonicalize: the count defaults to the scaling policy's min (0 included), else 1;
    # api/scaling.go ScalingPolicy.Canonicalize: Enabled true, Min the count, Type horizontal (the HTTP agent
    # canonicalizes the api job before converting it: command/agent/job_endpoint.go ApiJobToStructJob).
    scaling = group.get("Scaling")
    if group.get("Count") is None:
        minimum = (scaling or {}).get("Min")
        group["Count"] = minimum if minimum is not None else 1
    if scaling is not None:
        if scaling.get("Enabled") is None:
            scaling["Enabled"] = True
        if scaling.get("Min") is None:
            scaling["Min"] = group["Count"]
        scaling["Type"] = scaling.get("Type") or "horizontal"
    if job["Type"] in ("service", "system"):
        group["Update"] = _merge(_merge(DEFAULT_UPDATE, job.get("Update")), group.get("Update"))
    group["RestartPolicy"] = _merge(DEFAULT_RESTART[kind], group.get("RestartPolicy"))
    group["ReschedulePolicy"] = _merge(DEFAULT_RESCHEDULE[kind], group.get("ReschedulePolicy"))
    group["EphemeralDisk"] = _merge({"Sticky": False, "Migrate": False, "SizeMB": 300}, group.get("EphemeralDisk"))
    for service in group.get("Services") or []:
        _canonicalize_service(service, f"{job['Name']}-{group.get('Name', '')}")
    for task in group.get("Tasks") or []:
        task["RestartPolicy"] = _merge(group["RestartPolicy"], task.get("RestartPolicy"))
        task["KillTimeout"] = task.get("KillTimeout") or 5 * SECOND
        task["Resources"] = _merge({"CPU": 100, "MemoryMB": 300}, task.get("Resources"))
        task["LogConfig"] = _merge({"MaxFiles": 10, "MaxFileSizeMB": 10}, task.get("LogConfig"))
        for service in task.get("Services") or []:
            _canonicalize_service(service, f"{job['Name']}-{group.get('Name', '')}-{task.get('Name', '')}")


def _canonicalize_service(service: JSON, default_name: str) -> None:
    service["Name"] = service.get("Name") or default_name
    service["Provider"] = service.get("Provider") or "consul"
    service["AddressMode"] = service.get("AddressMode") or "auto"
    service["OnUpdate"] = service.get("OnUpdate") or "require_healthy"
    for check in service.get("Checks") or []:
        check["OnUpdate"] = check.get("OnUpdate") or service["OnUpdate"]


def spec_of(job: JSON) -> JSON:
    """The part of a stored job that Nomad compares to decide whether a register is a change."""
    return {k: v for k, v in job.items() if k not in SERVER_FIELDS}


def groups(job: JSON) -> list[JSON]:
    return list(job.get("TaskGroups") or [])


def group_named(job: JSON, name: str) -> JSON:
    for group in groups(job):
        if group.get("Name") == name:
            return group
    raise KeyError(f"job {job.get('ID')!r} has no task group {name!r}")


def is_prestart(task: JSON) -> bool:
    """An init task (prestart, not a sidecar): it runs to completion before the main tasks start."""
    hook = (task.get("Lifecycle") or {}).get("Hook")
    return hook == "prestart" and not (task.get("Lifecycle") or {}).get("Sidecar")


def main_tasks(group: JSON) -> list[JSON]:
    """Tasks that keep running for the life of the allocation (poststop tasks only run at shutdown)."""
    return [
        t
        for t in group.get("Tasks") or []
        if not is_prestart(t) and (t.get("Lifecycle") or {}).get("Hook") != "poststop"
    ]


def prestart_tasks(group: JSON) -> list[JSON]:
    return [t for t in group.get("Tasks") or [] if is_prestart(t)]


def services(group: JSON) -> list[tuple[JSON, str | None]]:
    """Every service of the group with the task that owns it (None for group-level services)."""
    found: list[tuple[JSON, str | None]] = [(s, None) for s in group.get("Services") or []]
    for task in group.get("Tasks") or []:
        found += [(s, task["Name"]) for s in task.get("Services") or []]
    return found


@dataclass(frozen=True)
class PortSpec:
    """A port of the group network: a static port (`ReservedPorts`) or a dynamic one (`static == 0`)."""

    label: str
    static: int
    to: int


def ports(group: JSON) -> list[PortSpec]:
    found: list[PortSpec] = []
    for network in group.get("Networks") or []:
        for port in network.get("ReservedPorts") or []:
            found.append(PortSpec(port["Label"], port.get("Value") or 0, port.get("To") or 0))
        for port in network.get("DynamicPorts") or []:  # a Value here is ignored: the scheduler picks one
            found.append(PortSpec(port["Label"], 0, port.get("To") or 0))
    return found


def auto_revert(job: JSON) -> bool:
    """True when any group's merged update strategy asks for auto-revert."""
    return any((g.get("Update") or {}).get("AutoRevert") for g in groups(job))
