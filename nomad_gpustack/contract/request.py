"""What one replica asks the scheduler for: the device request the compiler writes, and `GroupRequest`, its
reading from a compiled job that the placement explanations and the rollout assessment work from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..sizes import nomad_size
from .jobspec import Constraint, RequestedDevice
from .metadata import gpu_need

GPU_MEMORY = "${device.attr.memory}"
GPU_MODEL = "${device.model}"


def requested_device(name: str, count: int, gpu_memory: int | None, gpu_model: str | None) -> RequestedDevice:
    """`count` devices of the plugin's `name`, each with at least `gpu_memory` bytes and of `gpu_model`."""
    device = RequestedDevice(Name=name, Count=count)
    constraints: list[Constraint] = []
    if gpu_memory:
        # Nomad compares ${device.attr.memory} (MiB) only with a value that carries a unit.
        constraints.append(Constraint(LTarget=GPU_MEMORY, Operand=">=", RTarget=nomad_size(gpu_memory)))
    if gpu_model:
        constraints.append(Constraint(LTarget=GPU_MODEL, Operand="=", RTarget=gpu_model))
    if constraints:
        device["Constraints"] = constraints
    return device


@dataclass(frozen=True)
class GroupRequest:
    """What one replica of the job asks the scheduler for, read from the compiled job."""

    group: str
    count: int
    cpu: int = 0
    memory_mb: int = 0
    device: str | None = None  # e.g. nvidia/gpu
    gpus: int = 0
    gpu_memory: str | None = None  # e.g. "24 GiB", as the device constraint carries it
    gpu_model: str | None = None
    datacenters: tuple[str, ...] = ()
    node_pool: str | None = None
    health_path: str | None = None
    startup_timeout_ns: int = 0
    gpu_need: str | None = None  # what each GPU needs by the memory estimate (job meta), e.g. "20 GiB"
    estimate: str | None = None  # the estimate in words
    # The group's update block and reschedule policy: how a new version replaces the replicas.
    canary: int = 0
    max_parallel: int = 1
    auto_promote: bool = False
    auto_revert: bool = False
    progress_deadline_ns: int = 0
    reschedules: bool = True  # a failed replica is placed again (ReschedulePolicy Unlimited or Attempts > 0)

    @property
    def upgrade(self) -> str:
        """The strategy the update block amounts to: canaries first, every replica at once, or some at a time."""
        if self.canary > 0:
            return "canary"
        if self.count > 1 and self.max_parallel >= self.count:
            return "recreate"
        return "rolling"


def group_request(job: dict[str, Any], group_index: int = 0) -> GroupRequest:
    """The request of one task group of a compiled job (API JSON form)."""
    group = job["TaskGroups"][group_index]
    cpu = memory = 0
    device = gpu_memory = gpu_model = health = None
    gpus = 0
    startup = 0
    for task in group["Tasks"]:
        if task.get("Lifecycle"):
            continue
        resources = task.get("Resources") or {}
        cpu += resources.get("CPU", 0)
        memory += resources.get("MemoryMB", 0)
        for dev in resources.get("Devices") or []:
            device, gpus = dev["Name"], dev.get("Count", 1)
            for constraint in dev.get("Constraints") or []:
                if constraint.get("LTarget") == GPU_MEMORY:
                    gpu_memory = constraint.get("RTarget")
                if constraint.get("LTarget") == GPU_MODEL:
                    gpu_model = constraint.get("RTarget")
        for service in task.get("Services") or []:
            for check in service.get("Checks") or []:
                health = check.get("Path")
                startup = (check.get("CheckRestart") or {}).get("Grace", 0)
    need, words = gpu_need(job.get("Meta") or {})
    update = group.get("Update") or {}
    reschedule = group.get("ReschedulePolicy") or {}
    return GroupRequest(
        group=group["Name"],
        count=group.get("Count", 1),
        cpu=cpu,
        memory_mb=memory,
        device=device,
        gpus=gpus,
        gpu_memory=gpu_memory,
        gpu_model=gpu_model,
        datacenters=tuple(job.get("Datacenters") or ()),
        node_pool=job.get("NodePool"),
        health_path=health,
        startup_timeout_ns=startup,
        gpu_need=need,
        estimate=words,
        canary=update.get("Canary", 0),
        max_parallel=update.get("MaxParallel", 1),
        auto_promote=update.get("AutoPromote", False),
        auto_revert=update.get("AutoRevert", False),
        progress_deadline_ns=update.get("ProgressDeadline", 0),
        reschedules=bool(reschedule.get("Unlimited") or reschedule.get("Attempts")) if reschedule else True,
    )
