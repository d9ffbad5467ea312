"""A model server's log through Nomad's client fs API: which allocation and task, the tail, and a follow stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from ..contract.metadata import DOWNLOAD_TASK
from ..errors import InputError, NomadgsError, Problem, ServiceError, suggestion
from .client import NomadAPI, NomadError
from .responses import JobStub

BACKLOG_BYTES = 256 * 1024  # how far back a tail or a follow starts
BACKLOG_WINDOW = 0.3  # seconds: what a follow stream delivers first is the backlog


class NoLogYet(ServiceError):
    """The task has not started, so Nomad has no log of it yet."""


@dataclass(frozen=True)
class LogSource:
    """One task of one allocation; `replica` and `tasks` (the tasks its group declares) name it in messages."""

    alloc_id: str
    task: str
    replica: int | None = None
    tasks: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"replica {self.replica}" if self.replica is not None else f"allocation {self.alloc_id[:8]}"


async def log_source(
    api: NomadAPI, http: Any, job: JobStub, *, replica: int | None = None, task: str | None = None
) -> LogSource:
    """The allocation to read (the given replica, else the first running one) and its model-server task."""
    allocs, _ = await api.allocations(http, job.ID)
    live = [a for a in allocs if a.DesiredStatus == "run"] or allocs
    if replica is not None:
        live = [a for a in live if a.index == replica]
    live.sort(key=lambda a: (a.ClientStatus != "running", -a.CreateIndex))
    if not live:
        which = f" for replica {replica}" if replica is not None else ""
        raise InputError(Problem(f"job '{job.ID}' has no allocation{which}"))
    alloc = live[0]
    group = next(
        (g for g in job.TaskGroups if g.get("Name") == alloc.TaskGroup), job.TaskGroups[0] if job.TaskGroups else {}
    )
    declared = [str(t.get("Name") or "") for t in group.get("Tasks") or []]
    tasks = tuple(dict.fromkeys([*declared, *alloc.TaskStates]))
    name = task or next((t for t in alloc.TaskStates if t != DOWNLOAD_TASK), None)
    if name is None:
        name = next((str(t.get("Name") or "") for t in group.get("Tasks") or [] if not t.get("Lifecycle")), "")
    return LogSource(alloc.ID, name, alloc.index, tasks)


def _explained(exc: NomadError, source: LogSource) -> NomadgsError:
    """Nomad's refusal to serve a task's log, in words that say what to do.

    Nomad answers 400 `unknown task name "x"` for a task the allocation does not have (yet), and 404 `task "x"
    not started yet. No logs available` for one that has not started (client/fs_endpoint.go, FileSystem.logs).
    """
    text = str(exc)
    declared = source.task in source.tasks
    if (exc.status == 400 and "unknown task name" in text and declared) or (
        exc.status == 404 and "not started yet" in text
    ):
        first = (
            f"; its {DOWNLOAD_TASK} task runs first (`--task {DOWNLOAD_TASK}` shows its log)"
            if DOWNLOAD_TASK in source.tasks and source.task != DOWNLOAD_TASK
            else ""
        )
        return NoLogYet(f"task '{source.task}' of {source.where} has not started yet: it has no log{first}")
    if exc.status == 400 and "unknown task name" in text:
        tasks = ", ".join(source.tasks) or "none"
        return InputError(
            Problem(
                f"{source.where} has no task '{source.task}'; its tasks: {tasks}",
                field="--task",
                hint=suggestion(source.task, source.tasks),
            )
        )
    return exc


async def tail(api: NomadAPI, http: Any, source: LogSource, *, stream: str, lines: int) -> str:
    """The last `lines` lines the task wrote to `stream` (stdout or stderr)."""
    try:
        text = await api.log_tail(http, source.alloc_id, source.task, stream=stream, tail_bytes=BACKLOG_BYTES)
    except NomadError as exc:
        raise _explained(exc, source) from None
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text else "")


async def follow(api: NomadAPI, http: Any, source: LogSource, *, stream: str, lines: int) -> AsyncGenerator[str]:
    """The last `lines` lines, then every new piece as the task writes it.

    One stream from the backlog on: a separate read of the tail would lose or repeat the lines written between
    the two requests. What arrives in the first moment is the backlog, of which only the last `lines` lines
    are yielded. A reader task feeds a queue, so waiting with a timeout never cancels the stream itself.
    """
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for chunk in api.follow_logs(
                http, source.alloc_id, source.task, stream=stream, origin="end", offset=BACKLOG_BYTES
            ):
                await queue.put(chunk)
        finally:
            await queue.put(None)

    reader = asyncio.create_task(pump())
    try:
        backlog: list[str] = []
        ended = False
        with contextlib.suppress(TimeoutError):
            while not ended:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a Ctrl-C that comes as a chunk
                # arrives (CPython gh-86296).
                async with asyncio.timeout(BACKLOG_WINDOW):
                    chunk = await queue.get()
                ended = chunk is None
                backlog.append(chunk or "")
        if ended:  # a refusal (unknown task, not started) is said before anything is printed
            await _ended(reader, source)
        yield "".join("".join(backlog).splitlines(keepends=True)[-lines:])
        while not ended:
            chunk = await queue.get()
            ended = chunk is None
            if chunk:
                yield chunk
        await _ended(reader, source)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _ended(reader: asyncio.Task[None], source: LogSource) -> None:
    """Wait for the stream's reader; a broken or refused stream raises here, as a NomadError explained."""
    try:
        await reader
    except NomadError as exc:
        raise _explained(exc, source) from None
