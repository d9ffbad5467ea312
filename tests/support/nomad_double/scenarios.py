"""Scripted lives of a job version's allocations: what the client node does with each allocation the server
places (the scheduler, the deployment watcher and rescheduling are the server's, in `cluster`).

Each scenario is a small configuration object; the cluster calls `run_alloc(ctx)` in a background thread for
every allocation of a version that runs it, so one object can serve many jobs (`NomadDouble.default_scenario`).
Steps are separated by short sleeps (`step`, default 10 ms) so an allocation's life takes well under a second.

Every scenario takes `stdout` / `stderr`: a string is the log text of every main task, a dict maps task names
(prestart tasks included) to their text; the logs endpoint serves it once the task has started.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict, Unpack

from .context import AllocContext, Runnable, Version, failed_tg_allocs
from .goduration import format_duration
from .jobspec import JSON, PortSpec, group_named, main_tasks, prestart_tasks
from .mutations import alloc_checks
from .objects import task_event

Logs = str | Mapping[str, str]
DOWNLOAD_TASK = "download-model"


class Common(TypedDict, total=False):
    """Options every scenario takes."""

    stdout: Logs
    stderr: Logs
    start_after: float  # a registration → its plan applied (the scheduler's latency)
    step: float  # between two client updates


@dataclass(kw_only=True)
class Scenario:
    """Base of all scenarios: log texts, timing, and the steps they share. A scenario is the client half of a
    job version: the server places, replaces and stops allocations by Nomad's rules; the scenario scripts what
    each allocation's tasks do, from its placement until the server stops it."""

    stdout: Logs = ""
    stderr: Logs = ""
    start_after: float = 0.05
    step: float = 0.01

    # --- the Runnable protocol ----------------------------------------------------------------------------

    def plan_failures(self, job: JSON) -> JSON | None:
        """What `/v1/job/:id/plan` reports as FailedTGAllocs for a job running this scenario."""
        return None

    def placement_failures(self, version: Version) -> JSON | None:
        return self.plan_failures(version.job)

    def port(self, spec: PortSpec) -> int | None:
        return None  # numbers nothing listens on, picked by the cluster

    def after_revert(self) -> Runnable:
        return self

    def run_alloc(self, ctx: AllocContext) -> None:
        """The allocation's life, then its in-place updates until the server stops it."""
        ctx.health_from = ctx.clock.now()  # the health deadline counts from the alloc runner's start
        self.live(ctx)
        generation = 0
        while True:
            generation = ctx.wait_update(generation)
            alloc = ctx.alloc()
            if alloc["DeploymentID"] and alloc["DeploymentStatus"] is None:
                # Moved into a new deployment: the client watches its health again (health_hook.go Update).
                if alloc["ClientStatus"] == "failed":
                    ctx.set_health(False)
                else:
                    ctx.health_from = ctx.clock.now()
                    self.rehealth(ctx)

    def live(self, ctx: AllocContext) -> None:
        """What the allocation's tasks do after placement."""

    def rehealth(self, ctx: AllocContext) -> None:
        """The health verdict again after an in-place update into a new deployment."""

    # --- shared steps -------------------------------------------------------------------------------------

    def logs_of(self, task: str, main: bool) -> tuple[str, str]:
        def pick(spec: Logs) -> str:
            if isinstance(spec, str):
                return spec if main else ""
            return spec.get(task, "")

        return pick(self.stdout), pick(self.stderr)

    def receive(self, ctx: AllocContext, download: bool = False) -> list[str]:
        """The client picks the allocation up: Received and Task Setup for every task, then the prestart tasks
        run to completion (`download`: a `download-model` one is synthesized if the job has none). Returns the
        main task names."""
        alloc = ctx.alloc()
        group = group_named(alloc["Job"], alloc["TaskGroup"])
        init = [t["Name"] for t in prestart_tasks(group)]
        if download and not init:
            init = [DOWNLOAD_TASK]
        mains = [t["Name"] for t in main_tasks(group)]
        ctx.sleep(self.step)
        for task in init + mains:
            ctx.event(task, "Received")
        ctx.sleep(self.step)
        for task in init + mains:
            ctx.event(task, "Task Setup", Message="Building Task Directory")
        for task in init:
            ctx.sleep(self.step)
            self.start_task(ctx, task, main=False)
            ctx.sleep(self.step)
            ctx.update(task, _terminated(0), state="dead", failed=False)
        return mains

    def start_task(self, ctx: AllocContext, task: str, main: bool = True) -> None:
        """Driver events, then Started and `running`; the task's log text appears."""
        image = _task_config(ctx.alloc(), task).get("image")
        if image:
            ctx.event(task, "Driver", DriverMessage=f"Downloading image {image}")
            ctx.sleep(self.step)
        ctx.update(task, task_event("Started"), state="running")
        ctx.write_logs(task, *self.logs_of(task, main))

    def start_main(self, ctx: AllocContext, download: bool = False) -> list[str]:
        """Receive the allocation and start its main tasks; their nomad-provider services get registered."""
        mains = self.receive(ctx, download)
        for task in mains:
            ctx.sleep(self.step)
            self.start_task(ctx, task)
        ctx.register_services(mains)
        checks = alloc_checks(ctx.alloc(), "nomad", mains)
        if checks:
            ctx.set_checks(checks, "pending", "", 0)
        return mains

    def become_healthy(self, ctx: AllocContext, running_since: int) -> None:
        """The checks pass; the client's health tracker calls the allocation healthy once its tasks have run
        for MinHealthyTime (client/allochealth/tracker.go); with HealthCheck `manual` it never does."""
        checks = alloc_checks(ctx.alloc(), "nomad", _mains(ctx))
        if checks:
            ctx.set_checks(checks, "success", "HTTP: 200 OK", 200)
        update = _update(ctx)
        ctx.sleep_nomad(running_since + int(update.get("MinHealthyTime") or 0) - ctx.clock.now())
        if update.get("HealthCheck") != "manual":
            ctx.set_health(True)

    def fail_task(self, ctx: AllocContext, task: str, event: JSON) -> None:
        """`task` dies failed with `event`; its sibling tasks are killed; the allocation is unhealthy."""
        ctx.update(task, event, state="dead", failed=True)
        for sibling in _mains(ctx):
            if sibling != task:
                ctx.update(sibling, task_event("Sibling Task Failed", FailedSibling=task), state="dead")
        ctx.set_health(False)


@dataclass(kw_only=True)
class Rollout(Scenario):
    """Success: every allocation starts, turns healthy after `healthy_after` (real seconds) and the group's
    MinHealthyTime (Nomad time), and runs on (a batch job's tasks exit 0); the server marks the deployment
    successful."""

    healthy_after: float = 0.2
    download: bool = False

    def live(self, ctx: AllocContext) -> None:
        tasks = self.start_main(ctx, self.download)
        running_since = ctx.clock.now()
        ctx.sleep(self.healthy_after)
        if ctx.alloc()["DeploymentID"]:
            self.become_healthy(ctx, running_since)
        elif ctx.job.get("Type") in ("batch", "sysbatch"):
            for task in tasks:
                ctx.update(task, _terminated(0), state="dead", failed=False)

    def rehealth(self, ctx: AllocContext) -> None:
        running_since = ctx.clock.now()  # MinHealthyTime counted afresh (health_hook.go)
        ctx.sleep(self.healthy_after)
        self.become_healthy(ctx, running_since)


@dataclass(kw_only=True)
class Manual(Scenario):
    """Allocations are placed and stay pending; the client does nothing until the test acts."""


@dataclass(kw_only=True)
class PlacementFailure(Scenario):
    """No node fits: evaluations complete with FailedTGAllocs and a blocked evaluation; no allocations."""

    metrics: JSON | None = None  # fields over the default AllocMetric of failed_tg_allocs

    def plan_failures(self, job: JSON) -> JSON | None:
        return failed_tg_allocs(job, self.metrics)


@dataclass(kw_only=True)
class BlockedThenPlaced(PlacementFailure):
    """A placement failure, then capacity appears `after` s later, or once the test sets `capacity`: the
    blocked evaluation places the allocations, which roll out as `Rollout` does."""

    after: float = 0.3
    healthy_after: float = 0.2
    capacity: threading.Event | None = None

    def placement_failures(self, version: Version) -> JSON | None:
        if version.data.get("capacity"):
            return None
        if not version.data.get("coming"):
            version.data["coming"] = True
            capacity = self.capacity

            def appear() -> None:
                if capacity is not None and not capacity.is_set():
                    # The test's event is not a state change, so nothing wakes the leader when it is set:
                    # look again shortly, on the leader's thread, until the double stops.
                    version.later(0.05, appear)
                    return
                version.data["capacity"] = True
                version.unblock()

            version.later(self.after if capacity is None else 0.0, appear)
        return failed_tg_allocs(version.job, self.metrics)

    def live(self, ctx: AllocContext) -> None:
        Rollout(healthy_after=self.healthy_after, stdout=self.stdout, stderr=self.stderr, step=self.step).live(ctx)

    def rehealth(self, ctx: AllocContext) -> None:
        Rollout(healthy_after=self.healthy_after, step=self.step).rehealth(ctx)


@dataclass(kw_only=True)
class ImagePullFailure(Scenario):
    """The docker image cannot be pulled: Driver Failure, task dead and failed, allocation unhealthy. The
    server replaces it by its reschedule policy; the version an auto-revert registers runs `then`."""

    image: str | None = None  # default: the task's Config.image
    then: Scenario | None = None

    def after_revert(self) -> Runnable:
        return self.then if self.then is not None else Rollout()

    def live(self, ctx: AllocContext) -> None:
        task = self.receive(ctx)[0]
        image = self.image or _task_config(ctx.alloc(), task).get("image") or "unknown:latest"
        ctx.sleep(self.step)
        ctx.event(task, "Driver", DriverMessage=f"Downloading image {image}")
        ctx.sleep(self.step)
        error = f"Failed to pull `{image}`: Error response from daemon: manifest for {image} not found: "
        error += "manifest unknown"
        failure = task_event("Driver Failure", DriverError=error, DisplayMessage=error, FailsTask=True)
        self.fail_task(ctx, task, failure)


@dataclass(kw_only=True)
class CrashLoop(Scenario):
    """The main task keeps exiting: Started/Terminated, Restarting per restart attempt, then Not Restarting;
    the allocation fails and the server replaces it by its reschedule policy (each replacement crashes too).
    `oom` makes each exit an OOM kill. The version an auto-revert registers runs `then`."""

    exit_code: int = 1
    restarts: int | None = None  # None: as many as the restart policy allows
    oom: bool = False
    then: Scenario | None = None

    def after_revert(self) -> Runnable:
        return self.then if self.then is not None else Rollout()

    def live(self, ctx: AllocContext) -> None:
        task = self.start_main(ctx)[0]
        policy = _restart_policy(ctx.job, ctx.alloc()["TaskGroup"], task)
        restarts = policy["Attempts"] if self.restarts is None else self.restarts
        for attempt in range(restarts + 1):
            ctx.sleep(self.step)
            if self.oom:
                exited = _terminated(self.exit_code, Message="OOM Killed", Details={"oom_killed": "true"})
            else:
                exited = _terminated(self.exit_code)
            ctx.update(task, exited, state="pending" if attempt < restarts else None)
            if attempt == restarts:
                break
            delay = policy["Delay"]
            ctx.update(
                task, task_event("Restarting", RestartReason="Restart within policy", StartDelay=delay), restarted=True
            )
            ctx.sleep(self.step)
            ctx.update(task, task_event("Started"), state="running")
        reason = (
            f"Exceeded allowed attempts {policy['Attempts']} in interval {format_duration(policy['Interval'])} "
            f'and mode is "{policy["Mode"]}"'
        )
        self.fail_task(ctx, task, task_event("Not Restarting", RestartReason=reason, FailsTask=True))


@dataclass(kw_only=True)
class Unhealthy(Scenario):
    """Tasks run but never become healthy: `Alloc Unhealthy` at the group's healthy deadline (no earlier than
    `healthy_after`), Healthy=false, the allocation keeps running. The server fails the deployment by Nomad's
    rules (at the progress deadline, as a running allocation is not replaced) and auto-reverts; the version it
    registers runs `then` (default: a successful rollout). `rollback_to`, when given, is the version the test
    expects Nomad to revert to: another one fails the test at exit."""

    rollback_to: int | None = None
    healthy_after: float = 0.2
    then: Scenario | None = None

    def after_revert(self) -> Runnable:
        return self.then if self.then is not None else Rollout()

    def live(self, ctx: AllocContext) -> None:
        self.start_main(ctx)
        self.rehealth(ctx)

    def rehealth(self, ctx: AllocContext) -> None:
        """Unhealthy at the health deadline, counted from the alloc runner's start (health_hook.go init);
        `healthy_after` is the earliest (real seconds)."""
        ctx.sleep(self.healthy_after)
        update = _update(ctx)
        if update.get("HealthCheck") == "manual":
            return  # the client never sets health: the user does, or the progress deadline decides
        ctx.sleep_nomad(ctx.health_from + int(update.get("HealthyDeadline") or 0) - ctx.clock.now())
        tasks = _mains(ctx)
        if update.get("HealthCheck") == "task_states":
            message = (
                f"Task not running for min_healthy_time of {format_duration(update['MinHealthyTime'])} "
                f"by healthy_deadline of {format_duration(update['HealthyDeadline'])}"
            )
        else:
            message = "health checks did not pass within the healthy deadline"
        ctx.event(tasks[0], "Alloc Unhealthy", Message=message)
        checks = alloc_checks(ctx.alloc(), "nomad", tasks)
        if checks:
            ctx.set_checks(checks, "failure", "HTTP: 503 Service Unavailable", 503)
        ctx.set_health(False)


# --- helpers ------------------------------------------------------------------------------------------------


def _terminated(exit_code: int, **fields: object) -> JSON:
    return task_event("Terminated", ExitCode=exit_code, **fields)


def _task_config(alloc: JSON, task: str) -> JSON:
    group = group_named(alloc["Job"], alloc["TaskGroup"])
    for spec in group.get("Tasks") or []:
        if spec["Name"] == task:
            config: JSON = spec.get("Config") or {}
            return config
    return {}


def _update(ctx: AllocContext) -> JSON:
    alloc = ctx.alloc()
    update: JSON = group_named(alloc["Job"], alloc["TaskGroup"]).get("Update") or {}
    return update


def _mains(ctx: AllocContext) -> list[str]:
    alloc = ctx.alloc()
    return [t["Name"] for t in main_tasks(group_named(alloc["Job"], alloc["TaskGroup"]))]


def _restart_policy(job: JSON, group: str, task: str) -> JSON:
    for spec in group_named(job, group).get("Tasks") or []:
        if spec["Name"] == task:
            policy: JSON = spec["RestartPolicy"]
            return policy
    raise KeyError(task)


# --- the factories the tests use ------------------------------------------------------------------------------


def rollout(healthy_after: float = 0.2, download: bool = False, **common: Unpack[Common]) -> Rollout:
    return Rollout(healthy_after=healthy_after, download=download, **common)


def manual(**common: Unpack[Common]) -> Manual:
    return Manual(**common)


def placement_failure(metrics: JSON | None = None, **common: Unpack[Common]) -> PlacementFailure:
    return PlacementFailure(metrics=metrics, **common)


def blocked_then_placed(
    after: float = 0.3,
    healthy_after: float = 0.2,
    capacity: threading.Event | None = None,
    **common: Unpack[Common],
) -> BlockedThenPlaced:
    return BlockedThenPlaced(after=after, healthy_after=healthy_after, capacity=capacity, **common)


def image_pull_failure(image: str | None = None, **common: Unpack[Common]) -> ImagePullFailure:
    return ImagePullFailure(image=image, **common)


def crash_loop(exit_code: int = 1, restarts: int | None = None, **common: Unpack[Common]) -> CrashLoop:
    return CrashLoop(exit_code=exit_code, restarts=restarts, **common)


def oom_kill(restarts: int = 0, **common: Unpack[Common]) -> CrashLoop:
    return CrashLoop(exit_code=137, restarts=restarts, oom=True, **common)


def unhealthy(
    rollback_to: int | None = None,
    then: Scenario | None = None,
    **common: Unpack[Common],
) -> Unhealthy:
    return Unhealthy(rollback_to=rollback_to, then=then, **common)
