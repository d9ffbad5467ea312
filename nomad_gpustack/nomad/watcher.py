"""Follow a job version's rollout with blocking queries until it is healthy, failed, or out of time.

Three blocking queries run side by side (the evaluations, the allocations, the deployments: `feed.Feed`, shared
by every watch of a fleet); each returns as soon as Nomad's state changes, so progress shows up without a
polling interval, and an idle watch costs a handful of requests a minute. A dropped connection or a 5xx is
retried with backoff and the query resumes from the last index seen.

The watch reads the job's deployments rather than its latest one: the verdict is about this version's
deployment, and by the watch's first read Nomad may have moved on (an auto-revert registers the old spec as a
later version, whose deployment is then the latest).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..contract.metadata import DOWNLOAD_TASK
from ..contract.request import GroupRequest
from ..urls import openai_base_url
from .client import NomadAPI, NomadError, TransientError
from .explain import NodeDevices, node_devices
from .feed import Feed
from .responses import Allocation, Deployment, Evaluation
from .rollout import (
    Assessment,
    ReplicaHistory,
    Rollback,
    Snapshot,
    assess,
    assess_rollback,
    deployment_of,
    latest_deployment,
    shown_forward,
)

LOG_LINES = 20


class Reporter(Protocol):
    def update(self, assessment: Assessment, elapsed: float) -> None: ...

    def note(self, message: str) -> None: ...


@dataclass
class WatchResult:
    """How the watch ended."""

    assessment: Assessment
    elapsed: float
    timed_out: bool = False
    logs: dict[str, str] = field(default_factory=dict)  # "replica 0 (vllm)" -> last lines of stderr
    endpoints: list[str] = field(default_factory=list)
    rollback: Rollback | None = None  # followed to its end when Nomad auto-reverts the failed version
    requests: int = 0


@dataclass(frozen=True)
class _Target:
    """What one watch follows."""

    job_id: str
    version: int | None
    eval_id: str | None  # None: nothing was registered (no changes), the job is judged as it stands
    request: GroupRequest
    wait_for_capacity: bool
    stable_version: int | None = None  # the version an auto-revert would go back to, when known
    earlier_versions: bool = True  # False: the job's first version
    job_create_index: int = 0  # the job's CreateIndex (0: not known), which tells its objects from a purged one's


@dataclass
class _Heard:
    """What the blocking queries have answered so far."""

    evaluation: Evaluation | None = None
    blocked: Evaluation | None = None
    deployments: tuple[Deployment, ...] = ()
    allocations: tuple[Allocation, ...] = ()
    nodes: tuple[NodeDevices, ...] | None = None  # None: not listed (yet), or the listing failed
    answered: set[str] = field(default_factory=set)  # which queries have answered at least once

    @property
    def informed(self) -> bool:
        """Whether the allocations and the deployments were read: before that, no replica can be judged (a
        placed replica would show as pending)."""
        return {"allocations", "deployments"} <= self.answered

    def snapshot(self, target: _Target) -> Snapshot:
        deployment = deployment_of(self.deployments, target.version)
        return Snapshot(
            target.job_id,
            target.version,
            self.evaluation,
            self.blocked,
            deployment,
            self.allocations,
            self.nodes,
            target.stable_version,
            target.earlier_versions,
        )


class _Watch:
    """One watch: the feed (`feed.Feed`) hands it what the blocking queries hear of its job (the evaluation, its
    blocked evaluation, the job's allocations, its deployments), which it stores, waking the judge; the judge
    assesses at each change until there is a verdict or the time is out; then `finish` gathers what explains
    the verdict (logs, endpoints, the rollback Nomad started)."""

    def __init__(
        self, api: NomadAPI, feed: Feed, target: _Target, reporter: Reporter, timeout: float | None, start: float
    ) -> None:
        self.api, self.feed, self.http, self.target, self.reporter = api, feed, feed.http, target, reporter
        self.timeout, self.start = timeout, start
        self.heard = _Heard()
        if target.eval_id is None:  # nothing was registered: no evaluation to wait for
            self.heard.evaluation = Evaluation(ID="", Status="complete")
        self.changed = asyncio.Event()
        self.failure: Exception | None = None
        self.nodes_listed = False
        self.verified = False
        self.rollback: Rollback | None = None  # the rollback Nomad started, as far as it was followed
        self.history = ReplicaHistory()  # what this watch has shown: a replica's state only moves forward

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def remaining(self) -> float | None:
        return None if self.timeout is None else self.timeout - self.elapsed

    # --- what the feed delivers ----------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.target.job_id

    def start_pollers(self) -> None:
        self.feed.subscribe(self)

    def stop_pollers(self) -> None:
        self.feed.unsubscribe(self)

    def on_allocations(self, allocations: list[Allocation]) -> None:
        # Allocations of an earlier job of the same ID (stopped and purged) are not this job's.
        created = self.target.job_create_index
        self.heard.allocations = tuple(a for a in allocations if a.CreateIndex >= created)
        self.heard.answered.add("allocations")
        self.changed.set()

    def on_deployments(self, deployments: list[Deployment]) -> None:
        created = self.target.job_create_index
        self.heard.deployments = tuple(d for d in deployments if not created or d.JobCreateIndex in (0, created))
        self.heard.answered.add("deployments")
        self.changed.set()

    def on_evaluations(self, evaluations: list[Evaluation]) -> None:
        if not self.target.eval_id:
            return
        by_id = {e.ID: e for e in evaluations}
        evaluation = by_id.get(self.target.eval_id)
        if evaluation is None:
            return
        self.heard.evaluation = evaluation
        if evaluation.BlockedEval:
            self.heard.blocked = by_id.get(evaluation.BlockedEval, self.heard.blocked)
        self.changed.set()

    def on_failure(self, exc: Exception) -> None:
        self.failure = exc
        self.changed.set()

    def _raise_poller_failure(self) -> None:
        if self.failure is not None:
            raise self.failure  # a non-transient error: 403, 404 ...

    # --- the judge ---------------------------------------------------------------------------------------

    async def until_verdict(self) -> tuple[Assessment, bool]:
        """Assess at each change until there is a verdict, or the time is out: (the last assessment, timed out)."""
        while True:
            self._raise_poller_failure()
            assessment = assess(
                self.heard.snapshot(self.target), self.target.request, wait_for_capacity=self.target.wait_for_capacity
            )
            if await self._read_more(assessment):
                continue
            if self.heard.informed:
                assessment = shown_forward(assessment, self.history)
                self.reporter.update(assessment, self.elapsed)
                if assessment.done:
                    return assessment, False
            remaining = self.remaining
            if remaining is not None and remaining <= 0:
                return assessment, True
            self.changed.clear()
            # Wake on a change, or once a second to refresh the elapsed time on a terminal (no request).
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation (Ctrl-C) that
            # comes as the wait ends (CPython gh-86296).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, remaining or 1.0)):
                    await self.changed.wait()

    async def _read_more(self, assessment: Assessment) -> bool:
        """Read once what `assessment` needs before it is shown; True when something was read (assess again).

        A placement failure of a GPU group is explained with the devices the nodes have (the node listing).
        The queries answer independently: before a verdict, all of them are read once more, so it never rests
        on a deployment newer than the allocations held."""
        capacity = assessment.phase in ("placement-failed", "waiting-capacity")
        if capacity and self.target.request.device and not self.nodes_listed:
            self.nodes_listed = True
            devices = await _node_devices(self.feed)
            self.heard.nodes = tuple(devices) if devices is not None else None
            return True
        if assessment.done and not self.verified:
            self.verified = True
            await self._refresh()
            return True
        return False

    async def _refresh(self) -> None:
        """Plain reads of everything the watch follows (the client retries them); when they keep failing, the
        verdict rests on what the blocking queries delivered."""
        try:
            await self.feed.refresh(self.target.job_id)  # one read for every watch that wants one now
        except TransientError:
            return

    # --- the finish --------------------------------------------------------------------------------------

    async def finish(self, assessment: Assessment, timed_out: bool) -> WatchResult:
        """The result: with the logs that explain a failure, the endpoints of a success, and the rollback Nomad
        started after this version's deployment failed, followed to its end within the time left."""
        result = WatchResult(assessment, self.elapsed, timed_out)
        if assessment.failures or assessment.phase == "failed" or timed_out:
            result.logs = await self.feed.read(
                lambda: _failure_logs(self.api, self.http, assessment, self.heard.allocations)
            )
        if assessment.phase == "succeeded":
            result.endpoints = await self.feed.read(
                lambda: running_endpoints(self.api, self.http, assessment, self.heard.allocations)
            )
        failed = deployment_of(self.heard.deployments, self.target.version)
        if assessment.rollback_to is not None and not timed_out and failed is not None:
            result.rollback = await self._follow_rollback(assessment, assessment.rollback_to, failed)
            result.elapsed = self.elapsed
        result.requests = self.api.requests
        return result

    async def _follow_rollback(self, assessment: Assessment, to_version: int, failed: Deployment) -> Rollback:
        """Follow the job's deployments until the rollback Nomad started after `failed` ends, or the time
        is out; the reporter sees each step as phase `rolling-back`, then the verdict again (it stands)."""
        self.rollback = assess_rollback(to_version, failed, None)
        self._show_rollback(assessment, self.rollback)
        remaining = self.remaining
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if remaining is None else max(0.0, remaining)):  # see until_verdict
                while True:
                    self._raise_poller_failure()
                    step = assess_rollback(to_version, failed, latest_deployment(self.heard.deployments))
                    if step != self.rollback:
                        self.rollback = step
                        self._show_rollback(assessment, step)
                    if step.done:
                        break
                    self.changed.clear()
                    await self.changed.wait()
        self.reporter.update(assessment, self.elapsed)
        return self.rollback

    def _show_rollback(self, assessment: Assessment, step: Rollback) -> None:
        self.reporter.update(replace(assessment, phase="rolling-back", headline=step.summary), self.elapsed)


async def watch(
    api: NomadAPI,
    *,
    job_id: str,
    version: int | None,
    eval_id: str | None,
    request: GroupRequest,
    reporter: Reporter,
    timeout: float | None = None,
    wait_for_capacity: bool = False,
    stable_version: int | None = None,
    earlier_versions: bool = True,
    job_create_index: int = 0,
    feed: Feed | None = None,
) -> WatchResult:
    """Watch one job version until the assessment says it is done, or `timeout` seconds pass.

    The blocking queries retry until the watch ends; the client's plain reads (a last look before the verdict,
    nodes, logs, endpoints) keep to the same `timeout`, so a failing Nomad never holds the watch past it.
    `feed`: the feed of a fleet's watches (`fleet`); without one, the watch has a feed of its own."""
    start = time.monotonic()
    earlier = api.deadline
    if timeout is not None:
        api.deadline = start + timeout if earlier is None else min(earlier, start + timeout)
    target = _Target(
        job_id, version, eval_id, request, wait_for_capacity, stable_version, earlier_versions, job_create_index
    )
    try:
        if feed is not None:
            return await _watch_on(api, feed, target, reporter, timeout, start)
        async with api.async_client() as http:
            own = Feed(api, http, note=reporter.note)
            try:
                return await _watch_on(api, own, target, reporter, timeout, start)
            finally:
                await own.close()
    finally:
        api.deadline = earlier


async def _watch_on(
    api: NomadAPI, feed: Feed, target: _Target, reporter: Reporter, timeout: float | None, start: float
) -> WatchResult:
    run = _Watch(api, feed, target, reporter, timeout, start)
    run.start_pollers()
    try:
        assessment, timed_out = await run.until_verdict()
        return await run.finish(assessment, timed_out)
    finally:
        run.stop_pollers()


async def _node_devices(feed: Feed) -> list[NodeDevices] | None:
    try:
        return node_devices(await feed.nodes())
    except NomadError:
        return None  # listing nodes needs node:read; the explanation works without it


def _main_task_name(alloc: Allocation) -> str:
    return next((t for t in alloc.TaskStates if t != DOWNLOAD_TASK), "")


def _logs_wanted(assessment: Assessment, allocs: tuple[Allocation, ...]) -> list[tuple[str, str, str]]:
    """(label, allocation ID, task) of the logs that explain the verdict: those of the tasks that failed (the
    first two), else, when the rollout failed with no task to blame (unhealthy), the first replica's main task."""
    by_id = {a.ID: a for a in allocs}
    wanted: list[tuple[str, str, str]] = []
    for failure in assessment.failures[:2]:
        alloc = by_id.get(failure.alloc_id)
        task = (failure.task or _main_task_name(alloc)) if alloc is not None else ""
        if task:
            wanted.append((f"replica {failure.replica} ({task})", failure.alloc_id, task))
    if wanted or assessment.phase != "failed":
        return wanted
    placed = [(r.index, by_id[r.alloc_id]) for r in assessment.replicas if r.alloc_id and r.alloc_id in by_id]
    for index, alloc in placed[:1]:
        task = _main_task_name(alloc)
        if task:
            wanted.append((f"replica {index} ({task})", alloc.ID, task))
    return wanted


async def _stderr_tail(api: NomadAPI, http: Any, alloc_id: str, task: str) -> str:
    """The last LOG_LINES non-blank lines of a task's stderr; "" when there are none or they cannot be read."""
    try:
        text = await api.log_tail(http, alloc_id, task)
    except NomadError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-LOG_LINES:])


async def _failure_logs(
    api: NomadAPI, http: Any, assessment: Assessment, allocs: tuple[Allocation, ...]
) -> dict[str, str]:
    """The last lines of stderr of the tasks that failed (or of the main task of unhealthy replicas)."""
    logs: dict[str, str] = {}
    for label, alloc_id, task in _logs_wanted(assessment, allocs):
        text = await _stderr_tail(api, http, alloc_id, task)
        if text:
            logs[label] = text
    return logs


async def running_endpoints(
    api: NomadAPI, http: Any, assessment: Assessment, held: Sequence[Allocation] = ()
) -> list[str]:
    """OpenAI base URLs of the running replicas (host IP and port): from the allocations `held` when they carry
    their resources (listed with `resources=true`), else read from the full allocations."""
    by_id = {a.ID: a for a in held}
    urls = []
    for replica in assessment.replicas:
        if replica.state != "running" or not replica.alloc_id:
            continue
        port = by_id[replica.alloc_id].port("http") if replica.alloc_id in by_id else None
        if port is None:
            try:
                port = (await api.allocation(http, replica.alloc_id)).port("http")
            except NomadError:
                continue
        if port and port[0]:
            urls.append(openai_base_url(port[0], port[1]))
    return urls
