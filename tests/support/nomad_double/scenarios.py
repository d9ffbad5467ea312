"""Scripted lives of a job version: what the scheduler, the client and the deployment watcher do after a register.

Each scenario is a small configuration object; the cluster calls `run(ctx)` in a background thread for every
new job version, so one object can serve many jobs (`NomadDouble.default_scenario`). Steps are separated by
short sleeps (`step`, default 10 ms) so a whole scenario takes well under a second.

Every scenario takes `stdout` / `stderr`: a string is the log text of every main task, a dict maps task names
(prestart tasks included) to their text; the logs endpoint serves it once the task has started.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict, Unpack

from .context import Placement, ScenarioContext, failed_tg_allocs
from .goduration import format_duration
from .jobspec import JSON, group_named, main_tasks, prestart_tasks
from .mutations import alloc_checks
from .objects import task_event

Logs = str | Mapping[str, str]
DOWNLOAD_TASK = "download-model"


class Common(TypedDict, total=False):
    """Options every scenario takes."""

    stdout: Logs
    stderr: Logs
    start_after: float  # register → plan applied
    step: float  # between two client updates


@dataclass(kw_only=True)
class Scenario:
    """Base of all scenarios: log texts, timing, and the steps they share."""

    stdout: Logs = ""
    stderr: Logs = ""
    start_after: float = 0.05
    step: float = 0.01

    def run(self, ctx: ScenarioContext) -> None:
        raise NotImplementedError

    def plan_failures(self, job: JSON) -> JSON | None:
        """What `/v1/job/:id/plan` reports as FailedTGAllocs for a job running this scenario."""
        return None

    # --- shared steps -------------------------------------------------------------------------------------

    def logs_of(self, task: str, main: bool) -> tuple[str, str]:
        def pick(spec: Logs) -> str:
            if isinstance(spec, str):
                return spec if main else ""
            return spec.get(task, "")

        return pick(self.stdout), pick(self.stderr)

    def place(self, ctx: ScenarioContext) -> Placement:
        """The scheduler's turn: plan applied (deployment + pending allocations), then the evaluation completes."""
        ctx.sleep(self.start_after)
        placement = ctx.place()
        ctx.complete_eval(placement.deployment_id)
        return placement

    def receive(self, ctx: ScenarioContext, alloc_id: str, download: bool = False) -> list[str]:
        """The client picks the allocation up: Received and Task Setup for every task, then the prestart tasks
        run to completion (`download`: a `download-model` one is synthesized if the job has none). Returns the
        main task names."""
        alloc = ctx.alloc(alloc_id)
        group = group_named(alloc["Job"], alloc["TaskGroup"])
        init = [t["Name"] for t in prestart_tasks(group)]
        if download and not init:
            init = [DOWNLOAD_TASK]
        mains = [t["Name"] for t in main_tasks(group)]
        for task in init + mains:
            ctx.event(alloc_id, task, "Received")
        ctx.sleep(self.step)
        for task in init + mains:
            ctx.event(alloc_id, task, "Task Setup", Message="Building Task Directory")
        for task in init:
            ctx.sleep(self.step)
            self.start_task(ctx, alloc_id, task, main=False)
            ctx.sleep(self.step)
            ctx.update(alloc_id, task, _terminated(0), state="dead", failed=False)
        return mains

    def start_task(self, ctx: ScenarioContext, alloc_id: str, task: str, main: bool = True) -> None:
        """Driver events, then Started and `running`; the task's log text appears."""
        image = _task_config(ctx.alloc(alloc_id), task).get("image")
        if image:
            ctx.event(alloc_id, task, "Driver", DriverMessage=f"Downloading image {image}")
            ctx.sleep(self.step)
        ctx.update(alloc_id, task, task_event("Started"), state="running")
        ctx.write_logs(alloc_id, task, *self.logs_of(task, main))

    def start_main(self, ctx: ScenarioContext, alloc_id: str, download: bool = False) -> list[str]:
        """Receive the allocation and start its main tasks; their nomad-provider services get registered."""
        mains = self.receive(ctx, alloc_id, download)
        for task in mains:
            ctx.sleep(self.step)
            self.start_task(ctx, alloc_id, task)
        ctx.register_services(alloc_id, mains)
        checks = alloc_checks(ctx.alloc(alloc_id), "nomad", mains)
        if checks:
            ctx.set_checks(alloc_id, checks, "pending", "", 0)
        return mains

    def become_healthy(self, ctx: ScenarioContext, alloc_id: str, tasks: list[str]) -> None:
        checks = alloc_checks(ctx.alloc(alloc_id), "nomad", tasks)
        if checks:
            ctx.set_checks(alloc_id, checks, "success", "HTTP: 200 OK", 200)
        ctx.set_health(alloc_id, True)

    def finish(self, ctx: ScenarioContext, placement: Placement, healthy_after: float, download: bool) -> None:
        """Start every allocation, then after `healthy_after` mark them healthy and the deployment successful
        (batch jobs without a deployment instead run to completion)."""
        started = {alloc_id: self.start_main(ctx, alloc_id, download) for alloc_id in placement.alloc_ids}
        ctx.sleep(healthy_after)
        for alloc_id, tasks in started.items():
            if placement.deployment_id:
                self.become_healthy(ctx, alloc_id, tasks)
            else:
                for task in tasks:
                    ctx.update(alloc_id, task, _terminated(0), state="dead", failed=False)
        ctx.succeed_deployment(placement.deployment_id)

    def fail_task(self, ctx: ScenarioContext, alloc_id: str, task: str, event: JSON) -> None:
        """`task` dies failed with `event`; its sibling tasks are killed; the allocation is unhealthy."""
        ctx.update(alloc_id, task, event, state="dead", failed=True)
        for sibling in main_tasks(group_named(ctx.job, ctx.alloc(alloc_id)["TaskGroup"])):
            if sibling["Name"] != task:
                ctx.update(
                    alloc_id, sibling["Name"], task_event("Sibling Task Failed", FailedSibling=task), state="dead"
                )
        ctx.set_health(alloc_id, False)


@dataclass(kw_only=True)
class Rollout(Scenario):
    """Success: deployment running → allocations pending → tasks running → healthy → deployment successful."""

    healthy_after: float = 0.2
    download: bool = False

    def run(self, ctx: ScenarioContext) -> None:
        self.finish(ctx, self.place(ctx), self.healthy_after, self.download)


@dataclass(kw_only=True)
class Manual(Scenario):
    """Evaluation complete, deployment running, allocations pending; then nothing until the test acts."""

    def run(self, ctx: ScenarioContext) -> None:
        self.place(ctx)


@dataclass(kw_only=True)
class PlacementFailure(Scenario):
    """No node fits: the evaluation completes with FailedTGAllocs and a blocked evaluation; no allocations."""

    metrics: JSON | None = None  # fields over the default AllocMetric of failed_tg_allocs

    def plan_failures(self, job: JSON) -> JSON | None:
        return failed_tg_allocs(job, self.metrics)

    def run(self, ctx: ScenarioContext) -> None:
        self.fail_placement(ctx)

    def fail_placement(self, ctx: ScenarioContext) -> tuple[str, str]:
        """Returns (deployment ID, blocked evaluation ID)."""
        ctx.sleep(self.start_after)
        deployment_id = ctx.place(counts={}).deployment_id  # the plan still creates the deployment
        return deployment_id, ctx.fail_placement(deployment_id, self.metrics)


@dataclass(kw_only=True)
class BlockedThenPlaced(PlacementFailure):
    """A placement failure, then capacity appears after `after` s, or when the test sets `capacity`: the
    blocked evaluation places the allocations and the rollout succeeds."""

    after: float = 0.3
    healthy_after: float = 0.2
    capacity: threading.Event | None = None

    def run(self, ctx: ScenarioContext) -> None:
        _deployment_id, blocked = self.fail_placement(ctx)
        if self.capacity is not None:
            ctx.wait(self.capacity)
        else:
            ctx.sleep(self.after)
        placement = ctx.place()
        ctx.complete_eval(placement.deployment_id, eval_id=blocked)
        self.finish(ctx, placement, self.healthy_after, download=False)


@dataclass(kw_only=True)
class ImagePullFailure(Scenario):
    """The docker image cannot be pulled: Driver Failure, task dead and failed, deployment failed."""

    image: str | None = None  # default: the task's Config.image

    def run(self, ctx: ScenarioContext) -> None:
        placement = self.place(ctx)
        for alloc_id in placement.alloc_ids:
            task = self.receive(ctx, alloc_id)[0]
            image = self.image or _task_config(ctx.alloc(alloc_id), task).get("image") or "unknown:latest"
            ctx.sleep(self.step)
            ctx.event(alloc_id, task, "Driver", DriverMessage=f"Downloading image {image}")
            ctx.sleep(self.step)
            error = (
                f"Failed to pull `{image}`: Error response from daemon: manifest for {image} not found: "
                "manifest unknown"
            )
            failure = task_event("Driver Failure", DriverError=error, DisplayMessage=error, FailsTask=True)
            self.fail_task(ctx, alloc_id, task, failure)
        ctx.fail_deployment(placement.deployment_id, "Failed due to unhealthy allocations", None, then=Rollout())


@dataclass(kw_only=True)
class CrashLoop(Scenario):
    """The main task keeps exiting: Started/Terminated, Restarting per restart attempt, then Not Restarting;
    the allocation fails and so does the deployment. `oom` makes each exit an OOM kill."""

    exit_code: int = 1
    restarts: int | None = None  # None: as many as the restart policy allows
    oom: bool = False

    def run(self, ctx: ScenarioContext) -> None:
        placement = self.place(ctx)
        for alloc_id in placement.alloc_ids:
            task = self.start_main(ctx, alloc_id)[0]
            policy = _restart_policy(ctx.job, ctx.alloc(alloc_id)["TaskGroup"], task)
            restarts = policy["Attempts"] if self.restarts is None else self.restarts
            for attempt in range(restarts + 1):
                ctx.sleep(self.step)
                if self.oom:
                    exited = _terminated(self.exit_code, Message="OOM Killed", Details={"oom_killed": "true"})
                else:
                    exited = _terminated(self.exit_code)
                ctx.update(alloc_id, task, exited, state="pending" if attempt < restarts else None)
                if attempt == restarts:
                    break
                delay = policy["Delay"]
                ctx.update(
                    alloc_id,
                    task,
                    task_event("Restarting", RestartReason="Restart within policy", StartDelay=delay),
                    restarted=True,
                )
                ctx.sleep(self.step)
                ctx.update(alloc_id, task, task_event("Started"), state="running")
            reason = (
                f"Exceeded allowed attempts {policy['Attempts']} in interval {format_duration(policy['Interval'])} "
                f'and mode is "{policy["Mode"]}"'
            )
            self.fail_task(ctx, alloc_id, task, task_event("Not Restarting", RestartReason=reason, FailsTask=True))
        ctx.fail_deployment(placement.deployment_id, "Failed due to unhealthy allocations", None, then=Rollout())


@dataclass(kw_only=True)
class Unhealthy(Scenario):
    """Tasks run but never become healthy: `Alloc Unhealthy`, Healthy=false, deployment failed; with a rollback
    target (`rollback_to`, or an earlier stable version under auto-revert) a rollback deployment follows, whose
    version runs `then` (default: a successful rollout)."""

    rollback_to: int | None = None
    healthy_after: float = 0.2
    failed_by: str = "progress deadline"  # or "unhealthy allocations": the deployment's failure description
    then: Scenario | None = None

    def run(self, ctx: ScenarioContext) -> None:
        placement = self.place(ctx)
        started = {alloc_id: self.start_main(ctx, alloc_id) for alloc_id in placement.alloc_ids}
        ctx.sleep(self.healthy_after)
        for alloc_id, tasks in started.items():
            update = group_named(ctx.job, ctx.alloc(alloc_id)["TaskGroup"]).get("Update") or {}
            if update.get("HealthCheck") == "task_states":
                message = (
                    f"Task not running for min_healthy_time of {format_duration(update['MinHealthyTime'])} "
                    f"by healthy_deadline of {format_duration(update['HealthyDeadline'])}"
                )
            else:
                message = "health checks did not pass within the healthy deadline"
            ctx.event(alloc_id, tasks[0], "Alloc Unhealthy", Message=message)
            checks = alloc_checks(ctx.alloc(alloc_id), "nomad", tasks)
            if checks:
                ctx.set_checks(alloc_id, checks, "failure", "HTTP: 503 Service Unavailable", 503)
            ctx.set_health(alloc_id, False)
        then = self.then if self.then is not None else Rollout()
        ctx.fail_deployment(placement.deployment_id, f"Failed due to {self.failed_by}", self.rollback_to, then)


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
    failed_by: str = "progress deadline",
    then: Scenario | None = None,
    **common: Unpack[Common],
) -> Unhealthy:
    return Unhealthy(rollback_to=rollback_to, failed_by=failed_by, then=then, **common)
