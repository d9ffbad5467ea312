"""Plain-words explanations of why Nomad could not place or run a model. Pure functions over API models.

The scheduler's reasons (`FailedTGAllocs`, the AllocMetric of `nomad/structs`) and task events are precise
but cryptic ("devices: no devices match request", "Driver Failure"). These functions turn them into
sentences that say what is missing and what to change, in the deployment's own terms.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..contract.metadata import DOWNLOAD_TASK
from ..contract.request import GroupRequest
from ..durations import format_duration
from ..sizes import MIB, human_size, parse_size
from .responses import Allocation, AllocMetric, TaskEvent, TaskState


@dataclass(frozen=True)
class NodeDevices:
    """Accelerators one node reports (from `/v1/nodes?resources=true`)."""

    node: str
    name: str  # vendor/type/model
    memory_mib: int | None
    count: int


def node_devices(nodes: Iterable[dict[str, Any]]) -> list[NodeDevices] | None:
    """Device groups of node list stubs that carry `NodeResources` (Nomad >= 1.6 with `resources=true`).

    None when the list says nothing about devices (no node listed, or none with `NodeResources`, as from an
    older Nomad): "no node reports a GPU" must never rest on a listing that could not show one.
    """
    listed = [node for node in nodes if "NodeResources" in node]
    if not listed:
        return None
    out: list[NodeDevices] = []
    for node in listed:
        for dev in ((node.get("NodeResources") or {}).get("Devices")) or []:
            memory = (dev.get("Attributes") or {}).get("memory") or {}
            mib: int | None = None
            if "Int" in memory:
                unit = memory.get("Unit") or "MiB"
                try:
                    mib = parse_size(f"{memory['Int']} {unit}") // MIB
                except ValueError:
                    mib = None
            name = "/".join(str(dev.get(k) or "") for k in ("Vendor", "Type", "Name"))
            out.append(NodeDevices(node.get("Name") or node.get("ID", "?"), name, mib, len(dev.get("Instances") or [])))
    return out


def _gpu_phrase(req: GroupRequest) -> str:
    phrase = f"{req.gpus} × {req.device}"
    if req.gpu_model:
        phrase += f" ({req.gpu_model})"
    if req.gpu_memory:
        phrase += f" with ≥ {req.gpu_memory}"
    return phrase


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _nodes_have(n: int) -> str:
    return f"{_plural(n, 'node')} {'has' if n == 1 else 'have'}"


class DeviceFacts:
    """What is known about the GPUs a group asks for, from the node listing; every device sentence of a
    placement explanation is derived from it, so no two of them can disagree.

    `state` is one of: unknown (no usable node listing), none (no node reports a device of the vendor and
    type), unfit (some do, but none of the model, memory and count asked for), fit (a node has what is asked
    for, so the scheduler found those GPUs in use).
    """

    def __init__(self, req: GroupRequest, devices: Sequence[NodeDevices] | None) -> None:
        self.req = req
        self.kind = "/".join((req.device or "").split("/")[:2])  # vendor/type
        self.matching = [d for d in devices or () if d.name.startswith(self.kind)]
        self.fitting = [d for d in self.matching if self._fits(d)]
        if devices is None:
            self.state = "unknown"
        elif not self.matching:
            self.state = "none"
        elif not self.fitting:
            self.state = "unfit"
        else:
            self.state = "fit"

    def _fits(self, device: NodeDevices) -> bool:
        req = self.req
        if device.count < req.gpus:
            return False
        if req.gpu_model and device.name.split("/", 2)[-1] != req.gpu_model:
            return False
        if req.gpu_memory:
            try:
                wanted = parse_size(req.gpu_memory)
            except ValueError:
                return True  # a size we cannot read is not evidence against the device
            if device.memory_mib is None or device.memory_mib * MIB < wanted:
                return False
        return True

    def _plugin(self) -> str:
        vendor = self.kind.split("/")[0]
        return "nomad-device-nvidia" if vendor == "nvidia" else f"a {vendor} device plugin"

    def headline(self) -> str:
        """The sentence that leads the explanation."""
        phrase = _gpu_phrase(self.req)
        if self.state == "unknown":
            return f"no node has {phrase} available"
        if self.state == "none":
            return (
                f"no node has {phrase}: no node reports any {self.kind} device "
                f"(is {self._plugin()} installed on the clients?)"
            )
        if self.state == "fit":
            nodes = len({d.node for d in self.fitting})
            return f"no node has {phrase} free: {_nodes_have(nodes)} them, all in use by other allocations"
        return f"no node has {phrase}: {self._inventory()}"

    def _inventory(self) -> str:
        """What the nodes do have, e.g. `3 nodes have GPUs, all 24 GiB; the most on one node is 1`."""
        nodes = {d.node for d in self.matching}
        text = f"{_nodes_have(len(nodes))} {self.kind.split('/')[-1].upper()}s"
        models = sorted({d.name.split("/", 2)[-1] for d in self.matching if d.name.count("/") == 2})
        if self.req.gpu_model and models:
            text += f" ({', '.join(models)})"
        memories = sorted({d.memory_mib for d in self.matching if d.memory_mib is not None})
        if memories:
            sizes = ", ".join(human_size(m * MIB) for m in memories)
            text += f", {'all ' if len(memories) == 1 and len(nodes) > 1 else ''}{sizes}"
        most = max(d.count for d in self.matching)
        if most < self.req.gpus:
            text += f"; the most on one node is {most}"
        return text

    def exhausted(self, dimension: str, nodes: int) -> str:
        """The scheduler's `devices: ...` exhaustion on `nodes` nodes, in the same terms as the headline."""
        if self.state == "none":
            what = f"no {self.kind} device"
        elif self.state == "unfit":
            what = "no device that matches the request"
        elif self.state == "fit":
            what = "no free matching device"
        else:
            what = "no matching device available"
        verb = "had" if self.state in ("fit", "unknown") else ("has" if nodes == 1 else "have")
        return f"{_plural(nodes, 'node')} {verb} {what} ({dimension})"

    def missing(self, nodes: int) -> str:
        """Nodes the feasibility check filtered for `missing devices`."""
        if self.state == "none":
            why = f"they report no {self.kind} device: install {self._plugin()} in the clients' plugin_dir"
        elif self.state == "unknown":
            why = f"no device there matches the request: is {self._plugin()} installed there?"
        else:
            why = "no device there matches the request"
        return f"{_plural(nodes, 'node')} excluded by missing devices ({why})"


# Hints for constraints the compiler writes (and common ones users add).
_CONSTRAINT_HINTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"docker\.runtimes"), "the NVIDIA container runtime is not registered with Docker on those nodes"),
    (re.compile(r"\$\{meta\.gpu_vendor\}"), 'set `meta { gpu_vendor = "..." }` in the client config of GPU nodes'),
    (re.compile(r"\$\{attr\.cpu\.arch\}"), "the image is built for another CPU architecture"),
    (re.compile(r"missing drivers"), "the task driver (docker, exec, raw_exec) is not enabled on those nodes"),
    (re.compile(r"missing compatible host volumes"), "the host volume for the model weights is not configured there"),
    (re.compile(r"\$\{meta\.(?!gpu_vendor)"), "the node meta does not match the deployment's worker_selector"),
    (re.compile(r"distinct_hosts"), "each replica needs its own node"),
]


def _constraint_text(key: str) -> str:
    for pattern, hint in _CONSTRAINT_HINTS:
        if pattern.search(key):
            return f"{key} ({hint})"
    return key


def _readable_size(text: str) -> str:
    """A Nomad size ("46324 MiB") as people read it ("45.2 GiB"); as it is when it is not a size."""
    try:
        return human_size(parse_size(text))
    except ValueError:
        return text


@dataclass(frozen=True)
class _Placement:
    """What a placement explanation rests on: the request, the scheduler's metric, the nodes' devices."""

    req: GroupRequest
    metric: AllocMetric
    devices: DeviceFacts

    def nodes(self, n: int) -> str:
        return _plural(n, "node")


def _no_node_evaluated(p: _Placement) -> list[str]:
    """Why no node was even looked at: an empty node pool, empty datacenters, or none eligible."""
    metric, req = p.metric, p.req
    if metric.NodesEvaluated != 0:
        return []
    empty_dcs = [dc for dc, n in metric.NodesAvailable.items() if n == 0]
    if req.node_pool and metric.NodesInPool == 0:
        return [f"node pool '{req.node_pool}' has no ready nodes"]
    if empty_dcs:
        return ["no ready node in datacenter " + ", ".join(empty_dcs)]
    where = f" in {', '.join(req.datacenters)}" if req.datacenters else ""
    return [f"no nodes were eligible for evaluation{where}"]


def _gpus_missing(p: _Placement) -> list[str]:
    """The GPUs asked for, when the scheduler found none to give: what the nodes have, what the model needs."""
    metric, req = p.metric, p.req
    exhausted = any(k.startswith("devices") for k in metric.DimensionExhausted)
    if not req.device or not (exhausted or "missing devices" in metric.ConstraintFiltered):
        return []
    lines = [p.devices.headline()]
    if req.gpu_need:
        # The estimate says what the model needs, which may be less than the constraint asks for.
        need = f"the model needs {_plural(req.gpus, 'GPU')} with ≥ {_readable_size(req.gpu_need)} each"
        lines.append(f"{need} ({req.estimate})" if req.estimate else need)
    return lines


def _exhausted(p: _Placement, dimension: str, nodes: int) -> str:
    if dimension.startswith("devices"):
        return p.devices.exhausted(dimension, nodes)
    if dimension == "memory":
        return f"not enough free memory for {human_size(p.req.memory_mb * MIB)} on {p.nodes(nodes)}"
    if dimension == "cpu":
        return f"not enough free CPU for {p.req.cpu} MHz on {p.nodes(nodes)}"
    return f"{dimension} exhausted on {p.nodes(nodes)}"


def _dimensions(p: _Placement) -> list[str]:
    return [_exhausted(p, dimension, nodes) for dimension, nodes in sorted(p.metric.DimensionExhausted.items())]


def _constraints(p: _Placement) -> list[str]:
    return [
        p.devices.missing(nodes)
        if constraint == "missing devices" and p.req.device
        else f"{p.nodes(nodes)} excluded by {_constraint_text(constraint)}"
        for constraint, nodes in sorted(p.metric.ConstraintFiltered.items())
    ]


def _classes(p: _Placement) -> list[str]:
    return [
        f"{p.nodes(n)} of class {klass} excluded by constraints" for klass, n in sorted(p.metric.ClassFiltered.items())
    ]


def _quotas(p: _Placement) -> list[str]:
    return [f"quota exhausted: {quota}" for quota in p.metric.QuotaExhausted]


# The parts of a placement explanation, in the order they are said.
_PLACEMENT_STEPS: tuple[Callable[[_Placement], list[str]], ...] = (
    _no_node_evaluated,
    _gpus_missing,
    _dimensions,
    _constraints,
    _classes,
    _quotas,
)


def placement_failure(
    req: GroupRequest, metric: AllocMetric, devices: Sequence[NodeDevices] | None = None
) -> list[str]:
    """Sentences that explain one group's failed placement; the first one is the headline.

    `devices` is what the node listing reports (None when it could not be read); the device sentences all
    come from one `DeviceFacts`, so they never contradict each other.
    """
    placement = _Placement(req, metric, DeviceFacts(req, devices))
    lines = [line for step in _PLACEMENT_STEPS for line in step(placement)]
    if not lines:
        lines.append(f"{_plural(metric.NodesEvaluated, 'node')} evaluated, none could take the replica")
    failed = metric.CoalescedFailures + 1
    lines[0] = f"cannot place {failed} of {req.count} replica{'s' if req.count != 1 else ''}: " + lines[0]
    return lines


# --- task failures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFailure:
    """Why one task of one allocation failed, in words, plus the events worth showing."""

    alloc_id: str
    replica: int | None
    task: str
    kind: str  # image-pull | oom | crash-loop | unhealthy | driver | setup | download | exited | lost
    summary: str
    hint: str | None = None
    events: list[TaskEvent] = field(default_factory=list)


_DRIVER_HINTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r'runtime "nvidia" was not found'), "install nvidia-container-toolkit and register the runtime"),
    (re.compile(r"volumes are not enabled"), "enable `volumes` in the docker plugin config, or use host volumes"),
    (re.compile(r'cannot apply "\w+_mode"'), "namespace modes are locked down since Nomad 2.0.4; use shm_size"),
    (
        re.compile(r"pull access denied|unauthorized|authentication required", re.I),
        "the registry refused the pull: check the image name and registry credentials",
    ),
    (re.compile(r"manifest unknown|not found", re.I), "check the image name and tag (backend version image_name)"),
]

_INTERESTING = {
    "Driver Failure",
    "Setup Failure",
    "Failed Validation",
    "Task hook failed",
    "Terminated",
    "Not Restarting",
    "Killing",
    "Restarting",
    "Failed Artifact Download",
    "Sibling Task Failed",
    "Alloc Unhealthy",
    "Disk Resources Exceeded",
    "Driver",
    "Started",
}


def _hint_for(text: str, hints: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, hint in hints:
        if pattern.search(text):
            return hint
    return None


@dataclass(frozen=True)
class _Task:
    """What a task failure explanation rests on: the task's state, its allocation, the limits it runs under."""

    alloc: Allocation
    name: str
    state: TaskState
    memory_mb: int
    restart_limit: int

    def failure(self, kind: str, summary: str, hint: str | None = None) -> TaskFailure:
        shown = [e for e in self.state.Events if e.Type in _INTERESTING][-8:]
        return TaskFailure(self.alloc.ID, self.alloc.index, self.name, kind, summary, hint, shown)


def _out_of_memory(t: _Task) -> TaskFailure | None:
    if not any(e.Type == "Terminated" and e.Details.get("oom_killed") == "true" for e in t.state.Events):
        return None
    limit = f" (limit {human_size(t.memory_mb * MIB)})" if t.memory_mb else ""
    return t.failure("oom", f"{t.name} ran out of memory and was killed{limit}", "raise nomad.memory")


def _driver_failure(t: _Task, event: TaskEvent) -> TaskFailure:
    text = event.text
    if "pull" in text.lower() or "manifest" in text.lower():
        return t.failure("image-pull", f"the image could not be pulled: {text}", _hint_for(text, _DRIVER_HINTS))
    return t.failure("driver", f"{t.name} could not start: {text}", _hint_for(text, _DRIVER_HINTS))


def _setup_failure(t: _Task, event: TaskEvent) -> TaskFailure:
    text = event.text
    token = "nomadVar" in text or "nomad/jobs" in text
    hint = "the token variable (nomad.token_variable) is missing or not readable by the job" if token else None
    return t.failure("setup", f"{t.name} could not be set up: {text}", hint)


def _artifact_failure(t: _Task, event: TaskEvent) -> TaskFailure:
    return t.failure("download", f"{t.name} could not download an artifact: {event.text}")


# Events that fail a task before it runs, and what each says; the latest of them explains the failure.
_FAILING_EVENTS: dict[str, Callable[[_Task, TaskEvent], TaskFailure]] = {
    "Driver Failure": _driver_failure,
    "Setup Failure": _setup_failure,
    "Failed Validation": _setup_failure,
    "Task hook failed": _setup_failure,
    "Failed Artifact Download": _artifact_failure,
}


def _failing_event(t: _Task) -> TaskFailure | None:
    event = next((e for e in reversed(t.state.Events) if e.Type in _FAILING_EVENTS), None)
    return _FAILING_EVENTS[event.Type](t, event) if event is not None else None


def _used_up_restarts(t: _Task) -> bool:
    """The task exited after its last allowed restart (or was restarted past the limit: a restart policy in
    "delay" mode never gives up). Restarted exactly `restart_limit` times and running again is not yet a
    failure: that last run may serve, and if it exits, Nomad says "Not Restarting" with the exit (the client's
    task runner emits both in one pass, client/allocrunner/taskrunner/task_runner.go Run, shouldRestart)."""
    if t.state.Restarts > t.restart_limit:
        return True
    if t.state.Restarts < t.restart_limit:
        return False
    kinds = [e.Type for e in t.state.Events]
    last_exit = max((i for i, kind in enumerate(kinds) if kind == "Terminated"), default=-1)
    last_restart = max((i for i, kind in enumerate(kinds) if kind in ("Restarting", "Started")), default=-1)
    return last_exit > last_restart


def _exited(t: _Task) -> TaskFailure | None:
    """The task exited and will not run again: Nomad gave up restarting it, or it used up its restarts."""
    exits = [e for e in t.state.Events if e.Type == "Terminated"]
    gave_up = any(e.Type == "Not Restarting" for e in t.state.Events)
    if not exits or not (gave_up or t.state.Failed or _used_up_restarts(t)):
        return None
    last = exits[-1]
    summary = f"{t.name} {f'exited with code {last.ExitCode}' if last.ExitCode else 'stopped'}"
    if t.state.Restarts:
        summary += f" and was restarted {_plural(t.state.Restarts, 'time')}"
    if gave_up:
        summary += "; Nomad gave up restarting it"
    if t.name == DOWNLOAD_TASK:
        hint = "check the repository id, file name and token variable; the task's log below says more"
        return t.failure("download", f"downloading the model failed: {summary}", hint)
    kind = "crash-loop" if t.state.Restarts or gave_up else "exited"
    return t.failure(kind, summary, "the engine's own error is in its log below")


def _failed(t: _Task) -> TaskFailure | None:
    if not t.state.Failed:
        return None
    reason = next((e.text for e in reversed(t.state.Events) if e.text), "failed")
    return t.failure("exited", f"{t.name} failed: {reason}")


# The ways a task fails, most telling first: an OOM kill explains the exits it caused, and an event that failed
# the task (a driver or setup failure) explains it better than its exit.
_TASK_STEPS: tuple[Callable[[_Task], TaskFailure | None], ...] = (_out_of_memory, _failing_event, _exited, _failed)


def task_failure(
    alloc: Allocation, task: str, state: TaskState, *, memory_mb: int = 0, restart_limit: int = 2
) -> TaskFailure | None:
    """The failure of one task, if its events show one; None while it is healthy or still starting."""
    facts = _Task(alloc, task, state, memory_mb, restart_limit)
    return next((found for step in _TASK_STEPS if (found := step(facts)) is not None), None)


def alloc_failures(alloc: Allocation, *, memory_mb: int = 0) -> list[TaskFailure]:
    """Every failing task of an allocation, plus an unhealthy verdict when no task explains it."""
    out = []
    for task, state in alloc.TaskStates.items():
        found = task_failure(alloc, task, state, memory_mb=memory_mb)
        if found:
            out.append(found)
    if not out and alloc.ClientStatus == "lost":
        out.append(TaskFailure(alloc.ID, alloc.index, "", "lost", f"the node running replica {alloc.index} was lost"))
    if not out and alloc.healthy is False:
        events = [e for s in alloc.TaskStates.values() for e in s.Events if e.Type == "Alloc Unhealthy"]
        reason = events[-1].text if events else "its health check did not pass in time"
        out.append(
            TaskFailure(alloc.ID, alloc.index, "", "unhealthy", f"replica marked unhealthy: {reason}", None, events)
        )
    return out


def unhealthy_hint(req: GroupRequest) -> str:
    """What to try when a replica never passes its health check."""
    if not req.health_path:
        return "the task did not stay running long enough"
    deadline = format_duration(req.startup_timeout_ns) if req.startup_timeout_ns else "the healthy deadline"
    return (
        f"GET {req.health_path} did not answer 200 within {deadline}: a big model may need a longer "
        "nomad.startup_timeout, or the engine failed to start (see its log)"
    )


def rollback_version(description: str) -> int | None:
    """The job version Nomad's auto-revert rolls back to, read from a failed deployment's description."""
    match = re.search(r"rolling back to job version (\d+)", description)
    return int(match.group(1)) if match else None


# --- upgrades -----------------------------------------------------------------------------------------------


def _serves(n: int, count: int) -> str:
    return f"{n} of {count} replicas {'serves' if n == 1 else 'serve'}"


def upgrade_needs(req: GroupRequest) -> str:
    """Which upgrade strategy the group's update block amounts to, and what it needs of the cluster:
    `canary: needs 1 more replica's GPUs (2 × 24 GiB) while both versions run; ...`."""
    strategy, count = req.upgrade, req.count
    extra = "GPUs" if req.gpus else "capacity"
    if count == 0:
        return f"{strategy}: no replica runs, so an update replaces nothing"
    if strategy == "canary":
        n = req.canary
        what = f"{_plural(n, 'more replica')}'{'' if n > 1 else 's'}"
        if req.gpus:
            each = _readable_size(req.gpu_memory) if req.gpu_memory else req.device or "GPU"
            need = f"needs {what} GPUs ({n * req.gpus} × {each})"
        else:
            memory = human_size(n * req.memory_mb * MIB)
            need = f"needs room for {_plural(n, 'more replica')} ({n * req.cpu} MHz, {memory})"
        then = "promoted once healthy" if req.auto_promote else "then waits for `nomadgs promote`"
        return f"canary: {need} while both versions run; {then}"
    if strategy == "recreate":
        return (
            f"recreate: the model is down during the update (all {count} replicas replaced at once, no extra {extra})"
        )
    if count <= req.max_parallel:
        return f"rolling: no extra {extra}; the model is down while its replica is replaced"
    return f"rolling: no extra {extra}; {_serves(count - req.max_parallel, count)} during the update"


def on_new_version(healthy: int, count: int) -> str:
    """`1 of 2 replicas on the new version`."""
    return f"{healthy} of {_plural(count, 'replica')} on the new version"


def clock_time(rfc3339: str) -> str | None:
    """An RFC 3339 time from Nomad (`RequireProgressBy`) as the local HH:MM; None when it is not a time."""
    # Go writes nanoseconds; Python reads at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339.strip())
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.year <= 1:  # Go's zero time: not set
        return None
    return when.astimezone().strftime("%H:%M")


@dataclass(frozen=True)
class Aftermath:
    """What Nomad keeps doing after a watch ended early on a failing replica (a crash loop, an OOM kill, an image
    that cannot be pulled): it replaces the allocation by its reschedule policy until the progress deadline."""

    deadline: str | None  # the progress deadline, local HH:MM; None when not known yet
    auto_revert: bool
    stable_version: int | None  # the version an auto-revert goes back to; None: not known
    earlier_versions: bool  # False: this is the job's first version, there is nothing to go back to

    @property
    def sentence(self) -> str:
        until = f"until {self.deadline} (the progress deadline)" if self.deadline else "until the progress deadline"
        if not self.auto_revert:
            then = "then fails the deployment and leaves this version (auto_revert is off)"
        elif not self.earlier_versions:
            then = "then fails the deployment: there is no earlier version to roll back to"
        elif self.stable_version is not None:
            then = f"then rolls back to version {self.stable_version}"
        else:
            then = "then rolls back to the newest stable version, if there is one"
        return f"Nomad keeps replacing it {until}, {then}"


_ROLLBACK_SUFFIXES: tuple[tuple[re.Pattern[str], str], ...] = (
    # nomad/structs/deployment.go DeploymentStatusDescriptionRollback / RollbackNoop / NoRollbackTarget
    (re.compile(r" - rolling back to job version (\d+)$"), "; Nomad rolls back to job version {0}"),
    (
        re.compile(r" - not rolling back to stable job version (\d+) as current job has same specification$"),
        "; Nomad does not roll back again: its newest stable version, {0}, is this same specification",
    ),
    (re.compile(r" - no stable job version to auto revert to$"), "; there is no stable version to roll back to"),
)


def deployment_failure_words(description: str) -> str:
    """A failed deployment's description with Nomad's rollback suffix said plainly."""
    for pattern, words in _ROLLBACK_SUFFIXES:
        match = pattern.search(description)
        if match:
            return description[: match.start()] + words.format(*match.groups())
    return description


def rolled_back(failure: str, to_version: int, your_version: int | None) -> str:
    """`the new version failed: <why>; Nomad rolled back to version 4 (stable); your change is version 5`."""
    yours = f"; your change is version {your_version}" if your_version is not None else ""
    return f"the new version failed: {failure}; Nomad rolled back to version {to_version} (stable){yours}"
