"""Submitting a fleet: every deployment checked before any is registered, then each registered with its own
check-and-set and all followed together, at most `max_parallel` rollouts at once.

What `nomadgs submit a.yaml b.yaml ...` does (and `submit one.yaml`: a fleet of one, the same code). The
checks (one listing of the fleet's jobs; for each listed job, ownership and the plan whose JobModifyIndex the
register enforces, the plan being Nomad's validation too; for each job not there, Nomad's validation) run for
every deployment first: one refused file registers nothing. The watches share one feed per cluster scope (`feed.Feed`:
three blocking queries whatever the number of models) and the one-shot calls run `WORKERS` at once, so the
connections a fleet opens are bounded whatever its size.

`max_parallel` rolls the fleet out as Nomad rolls out a group: that many rollouts at once, the next one
registered when one ends; after a rollout that did not succeed, no further one is started (those left are
"skipped", nothing registered for them), so a bad change common to the fleet stops at the first models it
breaks. Without it, every deployment is registered at once and each rollout runs to its own end.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from ..contract.deploymentjob import DeploymentJob
from ..errors import EXIT_FAILURE, EXIT_OK, InputError, NomadgsError, exit_code_for
from .client import NomadAPI
from .feed import Feed
from .runner import (
    AfterRegistration,
    Notes,
    Preview,
    Registration,
    apply,
    outcome,
    preview,
    result_document,
    watch_registration,
)
from .watcher import Reporter, WatchResult

WORKERS = 8  # one-shot calls (validate, plan, register) at once


@dataclass
class Member:
    """One deployment of the fleet, and how far it got."""

    api: NomadAPI  # scoped to the namespace and region its job names
    compiled: DeploymentJob
    found: Preview | None = None
    registration: Registration | None = None
    result: WatchResult | None = None
    status: str = "pending"  # then registered | succeeded | failed | ... | timeout | skipped | error
    code: int = EXIT_OK
    error: str = ""  # why it ended without a verdict (a conflict, Nomad unreachable ...)
    failure: NomadgsError | None = None  # the error itself

    @property
    def done(self) -> bool:
        return self.status not in ("pending", "registering", "watching")

    def document(self) -> dict[str, Any]:
        """Its result as `submit --output json` lists it."""
        if self.registration is None:
            compiled = self.compiled
            data: dict[str, Any] = {
                "deployment_file": compiled.file,
                "model": compiled.model,
                "job": compiled.job_id,
                "version": None,
                "eval_id": None,
                "status": self.status,
                "exit_code": self.code,
            }
        else:
            data = result_document(self.registration, self.result, self.status, self.code)
        if self.error:
            data["message"] = self.error
        return data


def check_all(members: Sequence[Member], *, force: bool, notes: Notes, workers: int = WORKERS) -> None:
    """Nomad's checks of every member (`listed_jobs`, then `preview` each), `workers` at once. InputError
    naming every refused deployment (each problem located at its file) when any is refused; any other failure
    (Nomad unreachable ...) is raised as it is. Nothing is registered here."""

    listed = listed_jobs(members)

    def check(member: Member) -> None:
        absent = member.compiled.job_id not in listed[id(member.api)]
        try:
            member.found = preview(member.api, member.compiled, force=force, notes=notes, absent=absent)
        except InputError as exc:  # the ownership check does not know the file: say which one
            raise InputError([replace(p, file=p.file or member.compiled.file) for p in exc.problems]) from None

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(members)))) as pool:
        futures = [pool.submit(check, member) for member in members]
        refused: list[InputError] = []
        for future in futures:
            exc = future.exception()
            if isinstance(exc, InputError):
                refused.append(exc)
            elif exc is not None:
                raise exc
    if refused:
        raise InputError.merge(refused)


def listed_jobs(members: Sequence[Member]) -> dict[int, set[str]]:
    """The IDs of the jobs that exist among the members', by cluster scope (`id(member.api)`): one listing per
    scope (`/v1/jobs?prefix=` with the IDs' common prefix), so a job that is not there yet costs no read of its
    own. A fleet of one reads its job directly instead: the same one request, and it answers the whole job."""
    scopes: dict[int, list[Member]] = {}
    for member in members:
        scopes.setdefault(id(member.api), []).append(member)
    listed: dict[int, set[str]] = {}
    for key, scoped in scopes.items():
        ids = [m.compiled.job_id for m in scoped]
        if len(ids) == 1:
            listed[key] = set(ids)  # "maybe there": preview reads it
        else:
            prefix = os.path.commonprefix(ids)  # noqa: RUF071 - job IDs, not paths: `?prefix=` matches characters
            listed[key] = {job.ID for job in scoped[0].api.jobs(prefix=prefix)}
    return listed


def worst(codes: Sequence[int]) -> int:
    """The fleet's exit code: the highest of its members' (0 ok < 1 failed < 3 placement < 4 timeout < 5
    unreachable, errors.EXIT_CODES), so a script sees the gravest outcome any model had."""
    return max(codes, default=EXIT_OK)


async def run(
    members: Sequence[Member],
    *,
    notes: Notes,
    reporter_for: Callable[[Member], Reporter],
    note: Callable[[str], None],
    timeout: float | None,
    wait_for_capacity: bool = False,
    max_parallel: int | None = None,
    detach: bool = False,
    on_done: Callable[[Member], None] = lambda member: None,
    workers: int = WORKERS,
) -> None:
    """Register every checked member (`check_all`) and, unless `detach`, follow them together until each has a
    verdict or `timeout` seconds (for the whole fleet) pass. Each member's outcome is set on it and told to
    `on_done` as it ends; a member's failure (a conflict, a revoked token) ends that member, not the fleet."""
    deadline = None if timeout is None else time.monotonic() + timeout
    registering = asyncio.Semaphore(workers)
    slots = asyncio.Semaphore(max_parallel or max(1, len(members)))
    stopped = False  # a rollout failed under max_parallel: start no further one
    clients: dict[int, Any] = {}
    feeds: dict[int, Feed] = {}
    for member in members:  # one HTTP client and one feed per cluster scope
        key = id(member.api)
        if key not in feeds:
            clients[key] = member.api.async_client()
            feeds[key] = Feed(member.api, await clients[key].__aenter__(), note=note)
    if not detach:
        for key, feed in feeds.items():  # the fleet's jobs from the start: no watch restarts the queries
            feed.cover([m.compiled.job_id for m in members if id(m.api) == key])

    async def one(member: Member) -> None:
        nonlocal stopped
        async with slots:
            if stopped:
                member.status, member.code = "skipped", EXIT_FAILURE
                member.error = "not registered: an earlier rollout of the fleet did not succeed"
                on_done(member)
                return
            await follow_one(member)
            if max_parallel and member.code != EXIT_OK:
                stopped = True
        on_done(member)

    async def follow_one(member: Member) -> None:
        assert member.found is not None, "check_all first"
        member.status = "registering"
        try:
            async with registering:
                member.registration = await asyncio.to_thread(apply, member.api, member.compiled, member.found, notes)
        except NomadgsError as exc:
            member.status, member.code, member.error, member.failure = "error", exit_code_for(exc), str(exc), exc
            return
        if detach:
            member.status = "registered"
            return
        member.status = "watching"
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            member.result = await watch_registration(
                member.api,
                member.registration,
                reporter=reporter_for(member),
                timeout=left,
                wait_for_capacity=wait_for_capacity,
                feed=feeds[id(member.api)],
            )
        except AfterRegistration as exc:
            member.status, member.code, member.error, member.failure = "error", exit_code_for(exc), str(exc), exc
            return
        member.status, member.code = outcome(member.result)

    try:
        await asyncio.gather(*(one(member) for member in members))
    finally:
        for feed in feeds.values():
            await feed.close()
        for client in clients.values():
            await client.__aexit__(None, None, None)
