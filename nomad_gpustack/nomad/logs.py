"""A model server's log through Nomad's client fs API: which allocation and task, the tail, and a follow stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..compile.metadata import DOWNLOAD_TASK
from ..errors import InputError, Problem
from .client import NomadAPI
from .responses import JobStub

BACKLOG_BYTES = 256 * 1024  # how far back a tail or a follow starts
BACKLOG_WINDOW = 0.3  # seconds: what a follow stream delivers first is the backlog


@dataclass(frozen=True)
class LogSource:
    """One task of one allocation."""

    alloc_id: str
    task: str


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
    name = task or next((t for t in alloc.TaskStates if t != DOWNLOAD_TASK), None)
    if name is None:
        group = job.TaskGroups[0] if job.TaskGroups else {}
        name = next((str(t.get("Name") or "") for t in group.get("Tasks") or [] if not t.get("Lifecycle")), "")
    return LogSource(alloc.ID, name)


async def tail(api: NomadAPI, http: Any, source: LogSource, *, stream: str, lines: int) -> str:
    """The last `lines` lines the task wrote to `stream` (stdout or stderr)."""
    text = await api.log_tail(http, source.alloc_id, source.task, stream=stream, tail_bytes=BACKLOG_BYTES)
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text else "")


async def follow(api: NomadAPI, http: Any, source: LogSource, *, stream: str, lines: int) -> AsyncIterator[str]:
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
                chunk = await asyncio.wait_for(queue.get(), timeout=BACKLOG_WINDOW)
                ended = chunk is None
                backlog.append(chunk or "")
        yield "".join("".join(backlog).splitlines(keepends=True)[-lines:])
        while not ended:
            chunk = await queue.get()
            ended = chunk is None
            if chunk:
                yield chunk
        await reader  # a broken stream raises here, as a NomadError
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
