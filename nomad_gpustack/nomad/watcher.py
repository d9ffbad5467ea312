"""Follow a job version's rollout with blocking queries until it is healthy, failed, or out of time.

Three blocking queries run side by side (the evaluation, the job's allocations, its latest deployment);
each returns as soon as Nomad's state changes, so progress shows up without a polling interval, and an idle
watch costs a handful of requests a minute. A dropped connection or a 5xx is retried with backoff and the
query resumes from the last index seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..compile.metadata import DOWNLOAD_TASK
from ..compile.request import GroupRequest
from ..urls import openai_base_url
from . import blocking
from .client import NomadAPI, NomadError, TransientError
from .explain import NodeDevices, node_devices
from .responses import Allocation, Deployment, Evaluation
from .rollout import Assessment, ReplicaHistory, Rollback, Snapshot, assess, assess_rollback, shown_forward

TERMINAL_EVAL = ("complete", "failed", "canceled")
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


@dataclass
class _State:
    evaluation: Evaluation | None = None
    blocked: Evaluation | None = None
    deployment: Any = None
    allocations: tuple[Allocation, ...] = ()
    nodes: tuple[NodeDevices, ...] | None = None  # None: not listed (yet), or the listing failed
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    heard: set[str] = field(default_factory=set)  # which queries have answered at least once

    @property
    def informed(self) -> bool:
        """Whether the allocations and the deployment were read: before that, no replica can be judged (a
        placed replica would show as pending)."""
        return {"allocations", "deployment"} <= self.heard


async def _poll(
    fetch: Callable[[int], Awaitable[tuple[Any, int]]],
    store: Callable[[Any], bool],
    reporter: Reporter,
    what: str,
) -> None:
    """Follow one blocking query until `store` returns False. Its first read has index 0, which Nomad answers
    at once; as a query with an index, the client leaves retrying it to this loop."""

    def retried(exc: Exception, delay: float) -> None:
        reporter.note(f"{exc} while watching {what}; retried after {delay:.1f}s")

    async for value in blocking.follow(fetch, retry_on=TransientError, on_retry=retried):
        if not store(value):
            return


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
) -> WatchResult:
    """Watch one job version until the assessment says it is done, or `timeout` seconds pass.

    The blocking queries retry until the watch ends; the client's plain reads (a last look before the verdict,
    nodes, logs, endpoints) keep to the same `timeout`, so a failing Nomad never holds the watch past it."""
    start = time.monotonic()
    earlier = api.deadline
    if timeout is not None:
        api.deadline = start + timeout if earlier is None else min(earlier, start + timeout)
    try:
        return await _watch(api, job_id, version, eval_id, request, reporter, timeout, wait_for_capacity, start)
    finally:
        api.deadline = earlier


async def _watch(
    api: NomadAPI,
    job_id: str,
    version: int | None,
    eval_id: str | None,
    request: GroupRequest,
    reporter: Reporter,
    timeout: float | None,
    wait_for_capacity: bool,
    start: float,
) -> WatchResult:
    state = _State()
    if eval_id is None:  # nothing was registered (no changes): judge the job as it stands
        state.evaluation = Evaluation(ID="", Status="complete")

    def store_allocations(value: list[Allocation]) -> bool:
        state.allocations = tuple(value)
        state.heard.add("allocations")
        state.changed.set()
        return True

    def store_deployment(value: Any) -> bool:
        state.deployment = value
        state.heard.add("deployment")
        state.changed.set()
        return True

    def store_eval(value: Evaluation) -> bool:
        state.evaluation = value
        state.changed.set()
        if value.BlockedEval and not blocked_started:
            blocked_started.append(True)
            tasks.append(
                asyncio.create_task(
                    _poll(
                        lambda i: api.evaluation(http, value.BlockedEval, i),
                        store_blocked,
                        reporter,
                        "the blocked evaluation",
                    )
                )
            )
        return value.Status not in TERMINAL_EVAL or bool(value.NextEval)

    def store_blocked(value: Evaluation) -> bool:
        state.blocked = value
        state.changed.set()
        return value.Status == "blocked"

    blocked_started: list[bool] = []
    tasks: list[asyncio.Task[None]] = []
    async with api.async_client() as http:
        tasks.append(
            asyncio.create_task(
                _poll(lambda i: api.allocations(http, job_id, i), store_allocations, reporter, "allocations")
            )
        )
        tasks.append(
            asyncio.create_task(
                _poll(lambda i: api.latest_deployment(http, job_id, i), store_deployment, reporter, "the deployment")
            )
        )
        if eval_id:
            tasks.append(
                asyncio.create_task(
                    _poll(lambda i: api.evaluation(http, eval_id, i), store_eval, reporter, "the evaluation")
                )
            )
        timed_out = False
        nodes_fetched = verified = False
        history = ReplicaHistory()  # what this watch has shown: a replica's state only moves forward
        try:
            while True:
                for task in tasks:
                    if task.done() and task.exception():
                        raise task.exception()  # type: ignore[misc]  # a non-transient error: 403, 404 ...
                snapshot = Snapshot(
                    job_id, version, state.evaluation, state.blocked, state.deployment, state.allocations, state.nodes
                )
                assessment = assess(snapshot, request, wait_for_capacity=wait_for_capacity)
                elapsed = time.monotonic() - start
                if (
                    assessment.phase in ("placement-failed", "waiting-capacity")
                    and request.device
                    and not nodes_fetched
                ):
                    nodes_fetched = True
                    devices = await _node_devices(api, http)
                    state.nodes = tuple(devices) if devices is not None else None
                    continue
                if assessment.done and not verified:
                    # The three queries answer independently: before a verdict, read all of them once
                    # more, so it never rests on a deployment newer than the allocations we hold.
                    verified = True
                    await _refresh(api, http, state, job_id, eval_id)
                    continue
                if state.informed:
                    assessment = shown_forward(assessment, history)
                    reporter.update(assessment, elapsed)
                    if assessment.done:
                        break
                remaining = None if timeout is None else timeout - elapsed
                if remaining is not None and remaining <= 0:
                    timed_out = True
                    break
                state.changed.clear()
                # Wake on a change, or once a second to refresh the elapsed time on a terminal (no request).
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation (Ctrl-C) that
                # comes as the wait ends (CPython gh-86296).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(1.0, remaining or 1.0)):
                        await state.changed.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        result = WatchResult(assessment, time.monotonic() - start, timed_out)
        if assessment.failures or assessment.phase == "failed" or timed_out:
            result.logs = await _failure_logs(api, http, assessment, state.allocations)
        if assessment.phase == "succeeded":
            result.endpoints = await running_endpoints(api, http, assessment)
        failed = state.deployment
        if assessment.rollback_to is not None and not timed_out and isinstance(failed, Deployment):
            remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
            result.rollback = await _follow_rollback(api, http, job_id, failed, assessment, reporter, start, remaining)
            result.elapsed = time.monotonic() - start
        result.requests = api.requests
        return result


async def _follow_rollback(
    api: NomadAPI,
    http: Any,
    job_id: str,
    failed: Deployment,
    assessment: Assessment,
    reporter: Reporter,
    start: float,
    timeout: float | None,
) -> Rollback:
    """Follow the job's latest deployment until the rollback Nomad started after `failed` ends, or `timeout`
    seconds pass; the reporter sees each step as phase `rolling-back`."""
    to_version = assessment.rollback_to if assessment.rollback_to is not None else 0
    rollback = assess_rollback(to_version, failed, None)

    def show(step: Rollback) -> None:
        step_view = replace(assessment, phase="rolling-back", headline=step.summary, exit_code=None)
        reporter.update(step_view, time.monotonic() - start)

    def retried(exc: Exception, delay: float) -> None:
        reporter.note(f"{exc} while watching the rollback; retried after {delay:.1f}s")

    async def follow() -> None:
        nonlocal rollback
        show(rollback)
        query = lambda i: api.latest_deployment(http, job_id, i)  # noqa: E731
        async for latest in blocking.follow(query, retry_on=TransientError, on_retry=retried):
            step = assess_rollback(to_version, failed, latest)
            if step != rollback:
                rollback = step
                show(step)
            if step.done:
                return

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):  # not wait_for: see _watch
            await follow()
    reporter.update(assessment, time.monotonic() - start)  # the verdict stands: this version failed
    return rollback


async def _refresh(api: NomadAPI, http: Any, state: _State, job_id: str, eval_id: str | None) -> None:
    """Plain reads of everything the watch follows (the client retries them); when they keep failing, the
    verdict rests on what the blocking queries delivered."""
    try:
        allocs, deployment = await asyncio.gather(api.allocations(http, job_id), api.latest_deployment(http, job_id))
        state.allocations, state.deployment = tuple(allocs[0]), deployment[0]
        state.heard.update(("allocations", "deployment"))
        if eval_id:
            state.evaluation = (await api.evaluation(http, eval_id))[0]
    except TransientError:
        return


async def _node_devices(api: NomadAPI, http: Any) -> list[NodeDevices] | None:
    try:
        return node_devices(await api.nodes(http))
    except NomadError:
        return None  # listing nodes needs node:read; the explanation works without it


async def _failure_logs(
    api: NomadAPI, http: Any, assessment: Assessment, allocs: tuple[Allocation, ...]
) -> dict[str, str]:
    """The last lines of stderr of the tasks that failed (or of the main task of unhealthy replicas)."""
    wanted: list[tuple[str, str, str]] = []
    for failure in assessment.failures[:2]:
        alloc = next((a for a in allocs if a.ID == failure.alloc_id), None)
        if alloc is None:
            continue
        task = failure.task or next((t for t in alloc.TaskStates if t != DOWNLOAD_TASK), "")
        if task:
            wanted.append((f"replica {failure.replica} ({task})", alloc.ID, task))
    if not wanted and assessment.phase == "failed":
        for replica in assessment.replicas:
            alloc = next((a for a in allocs if a.ID == replica.alloc_id), None)
            if alloc is not None:
                task = next((t for t in alloc.TaskStates if t != DOWNLOAD_TASK), "")
                if task:
                    wanted.append((f"replica {replica.index} ({task})", alloc.ID, task))
                break
    logs: dict[str, str] = {}
    for label, alloc_id, task in wanted:
        try:
            text = await api.log_tail(http, alloc_id, task)
        except NomadError:
            continue
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            logs[label] = "\n".join(lines[-LOG_LINES:])
    return logs


async def running_endpoints(api: NomadAPI, http: Any, assessment: Assessment) -> list[str]:
    """OpenAI base URLs of the running replicas, read from their full allocations (host IP and port)."""
    urls = []
    for replica in assessment.replicas:
        if replica.state != "running" or not replica.alloc_id:
            continue
        try:
            alloc = await api.allocation(http, replica.alloc_id)
        except NomadError:
            continue
        port = alloc.port("http")
        if port and port[0]:
            urls.append(openai_base_url(port[0], port[1]))
    return urls
