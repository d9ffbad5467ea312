"""The watcher's data feed: three blocking queries for any number of watched jobs, their answers dispatched to
each job's watch.

One blocking query per job and per object (allocations, deployments, evaluation) holds one connection each
while it waits: a fleet of 120 models would hold 360, and a connection pool smaller than that stalls (the
gateway's discovery broke past 100 services this way). The feed asks Nomad's list endpoints instead, once for
all the jobs it follows: `/v1/allocations`, `/v1/deployments` and `/v1/evaluations`, each narrowed to those
jobs with a `filter` expression (`JobID matches ^(a|b)$`: Nomad evaluates it on the stored objects, as
nomad/state/paginator does), and hands each job's share to the job's watch. A watch of one job uses the same
feed: one code path. The connections it holds are three long polls plus at most `reads` plain reads (a last
look before a verdict, logs, nodes, endpoints), whatever the number of jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Protocol, TypeVar

from . import blocking
from .client import NomadAPI, TransientError
from .responses import Allocation, Deployment, Evaluation

T = TypeVar("T")

READS = 4  # plain reads at once beside the three long polls
# A filter longer than this is not sent (proxies refuse long URLs, nginx at 8 KiB by default): the feed reads
# the whole namespace instead and keeps the followed jobs' share.
MAX_FILTER = 6000
PACE_PER_JOB = 0.002  # seconds between a long poll's queries, per job it covers (`blocking_pace`)
MAX_PACE = 1.0
_GO_REGEXP_SPECIAL = set("\\.+*?()|[]{}^$")  # regexp.QuoteMeta's set (Go's regexp/regexp.go special)


class Subscriber(Protocol):
    """A job's watch, as the feed sees it."""

    @property
    def job_id(self) -> str: ...

    def on_allocations(self, allocations: list[Allocation]) -> None: ...

    def on_deployments(self, deployments: list[Deployment]) -> None: ...

    def on_evaluations(self, evaluations: list[Evaluation]) -> None: ...

    def on_failure(self, exc: Exception) -> None:
        """A query failed for a lasting reason (a revoked token ...): the feed stops."""


def quote_meta(text: str) -> str:
    """`text` as a literal in a Go regular expression (regexp.QuoteMeta)."""
    return "".join("\\" + c if c in _GO_REGEXP_SPECIAL else c for c in text)


def jobs_filter(job_ids: Sequence[str]) -> str | None:
    """The `filter` expression that selects the objects of these jobs; None when it would be too long to send
    (or a job ID cannot be written in it), and the whole namespace is read instead."""
    if any("`" in j for j in job_ids):
        return None
    text = "JobID matches `^(" + "|".join(quote_meta(j) for j in sorted(job_ids)) + ")$`"
    return text if len(text) <= MAX_FILTER else None


def blocking_pace(jobs: int) -> float:
    """Seconds between a long poll's queries for `jobs` jobs: each answer lists all their objects, and while a
    fleet rolls out its state changes many times a second, so without a pace the feed reads (and Nomad encodes)
    the whole fleet over and over. PACE_PER_JOB keeps that work about constant per second whatever the fleet's
    size; one job's watch is not slowed (1 ms), a fleet of 120 hears changes at most 0.24 s late."""
    return min(MAX_PACE, PACE_PER_JOB * jobs)


Listed = Allocation | Deployment | Evaluation  # the objects the long polls list


class Versions:
    """A long poll's objects as models, each validated once per version.

    Nomad stamps an object with the raft index of every write to it (nomad/state/state_store.go: upsertAllocsImpl
    and updateAllocsFromClient set an allocation's ModifyIndex, upsertDeploymentImpl and the deployment updates a
    deployment's, upsertEvalImpl an evaluation's), so an ID and ModifyIndex name one content: an object the
    last answer held at the same index is that answer's model, not validated again. A fleet's answers wake on
    any job's change and hold every job's objects, most of them as they were. Only the last answer's models are
    kept, and only for this query (its parameters shape the objects)."""

    def __init__(self, api: NomadAPI, path: str, model: type[Listed]) -> None:
        self.api, self.path, self.model = api, path, model
        self._known: dict[tuple[Any, Any], Listed] = {}

    def shaped(self, raw: list[Any]) -> list[Listed]:
        known: dict[tuple[Any, Any], Listed] = {}
        out = []
        for item in raw:
            key = (item.get("ID"), item.get("ModifyIndex")) if isinstance(item, dict) else (None, None)
            model: Listed | None = self._known.get(key)
            if model is None:
                model = self.api.shaped(self.model, item, self.path)
            known[key] = model
            out.append(model)
        self._known = known
        return out


class Feed:
    """The blocking queries of every job followed through it, on one HTTP client.

    `subscribe` a watch when it starts and `unsubscribe` it when it ends; the queries are (re)started, with a
    plain read first, when a job they do not cover joins, so the newcomer hears the state as it stands.
    `note` hears of each retried failure."""

    def __init__(self, api: NomadAPI, http: Any, *, note: Callable[[str], None], reads: int = READS) -> None:
        self.api, self.http, self.note = api, http, note
        self._subscribers: dict[str, list[Subscriber]] = defaultdict(list)
        self._covered: frozenset[str] = frozenset()  # the jobs the running queries select
        self._pollers: list[asyncio.Task[None]] = []
        self._restart_due = False
        self._reads = asyncio.Semaphore(reads)
        self._refresh_running: asyncio.Future[None] | None = None
        self._refresh_next: asyncio.Future[None] | None = None
        self._refresh_jobs: set[str] = set()  # the jobs whose watches wait for the next refresh
        self._nodes: asyncio.Future[list[dict[str, Any]]] | None = None
        self._held = False  # `cover` was called: the queries run until `close`
        self._last: dict[str, list[Any]] = {}  # each query's last answer, for a watch that joins later
        self._handed: dict[str, dict[str, tuple[tuple[str, int], ...]]] = {}  # each job's share, as last handed

    # --- who listens ---------------------------------------------------------------------------------------

    def cover(self, job_ids: Sequence[str]) -> None:
        """Start the queries for these jobs now (a fleet's, before they are registered), so that a watch of one
        of them joins without restarting them: it is handed the queries' last answers, and hears every change
        after them."""
        self._covered = self._covered | frozenset(job_ids)
        self._held = True
        self._start_pollers()

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers[subscriber.job_id].append(subscriber)
        if subscriber.job_id in self._covered and self._pollers:
            for kind, items in self._last.items():
                getattr(subscriber, kind)([item for item in items if item.JobID == subscriber.job_id])
        elif not self._restart_due:
            self._restart_due = True  # every watch that starts in this turn of the loop joins one restart
            asyncio.get_running_loop().call_soon(self._restart)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """The watch hears nothing more; the queries keep running (narrowed at the next restart) unless no
        watch is left."""
        subscribers = self._subscribers.get(subscriber.job_id, [])
        if subscriber in subscribers:
            subscribers.remove(subscriber)
        if not subscribers:
            self._subscribers.pop(subscriber.job_id, None)
        if not self._subscribers and not self._held:  # a fleet's feed runs until the fleet closes it
            self._stop_pollers()
            self._covered = frozenset()

    async def close(self) -> None:
        pollers = self._stop_pollers()
        await asyncio.gather(*pollers, return_exceptions=True)
        for pending in (self._refresh_running, self._refresh_next, self._nodes):
            if pending is not None and not pending.done():
                pending.cancel()

    def _stop_pollers(self) -> list[asyncio.Task[None]]:
        pollers, self._pollers = self._pollers, []
        for poller in pollers:
            poller.cancel()
        return pollers

    def _restart(self) -> None:
        self._restart_due = False
        if not self._subscribers:
            return
        self._covered = frozenset(self._subscribers) | (self._covered if self._held else frozenset())
        self._start_pollers()

    def _start_pollers(self) -> None:
        self._stop_pollers()
        self._last = {}
        self._handed = {}
        for what, path, shape, kind in self._queries():
            params = self._params(path, list(self._covered), resources=False)
            self._pollers.append(asyncio.create_task(self._follow(what, path, shape, params, kind)))

    @staticmethod
    def _queries() -> list[tuple[str, str, type[Listed], str]]:
        """(what, path, object model, the Subscriber method that hears it) of each long poll."""
        return [
            ("allocations", "/v1/allocations", Allocation, "on_allocations"),
            ("the deployments", "/v1/deployments", Deployment, "on_deployments"),
            ("the evaluations", "/v1/evaluations", Evaluation, "on_evaluations"),
        ]

    @staticmethod
    def _params(path: str, jobs: list[str], *, resources: bool) -> dict[str, str]:
        """The query's parameters; `resources`: the allocations with their ports, for the endpoints of running
        replicas without more reads (only the last look before a verdict asks: they make each answer bigger)."""
        selection = jobs_filter(jobs)
        params = {"filter": selection} if selection is not None else {}
        if path == "/v1/allocations" and resources:
            params["resources"] = "true"
        return params

    # --- the long polls ------------------------------------------------------------------------------------

    async def _follow(
        self,
        what: str,
        path: str,
        shape: type[Listed],
        params: dict[str, str],
        kind: str,
    ) -> None:
        def retried(exc: Exception, delay: float) -> None:
            self.note(f"{exc} while watching {what}; retried after {delay:.1f}s")

        versions = Versions(self.api, path, shape)

        async def query(index: int) -> tuple[list[Any], int]:
            # A list, its objects shaped one by one (`Versions`): validating them as dicts first would copy each.
            raw, returned = await self.api.get(self.http, path, list[Any], index=index, params=params)
            return versions.shaped(raw), returned

        try:
            pace = blocking_pace(len(self._covered))
            async for value in blocking.follow(query, retry_on=TransientError, on_retry=retried, min_interval=pace):
                self._dispatch(kind, value)
        except Exception as exc:  # a lasting failure (403, 404 ...): every watch ends with it
            for subscribers in list(self._subscribers.values()):
                for subscriber in list(subscribers):
                    subscriber.on_failure(exc)

    def _dispatch(self, kind: str, items: Sequence[Any], only: Collection[str] | None = None) -> None:
        """Each watch's share of a query's answer, handed to its `kind` method (`on_allocations` ...) when it
        differs from the share handed before: a job's objects and their ModifyIndex (an answer wakes on any
        job's change, and most shares are as they were). A watch that joins later is handed `_last` then, so
        each watch holds the latest share whichever way it came. `only`: the answer was asked for these jobs
        alone (a refresh), and each of their watches is handed its share, as it is or not: its objects carry
        their resources; the others' watches are handed nothing."""
        if only is None:
            self._last[kind] = list(items)
        by_job: dict[str, list[Any]] = defaultdict(list)
        for item in items:
            by_job[item.JobID].append(item)
        handed = self._handed.setdefault(kind, {})
        for job_id, subscribers in list(self._subscribers.items()):
            if only is not None and job_id not in only:
                continue
            share = by_job.get(job_id, [])
            versions = tuple((item.ID, item.ModifyIndex) for item in share)
            if only is None and handed.get(job_id) == versions:
                continue
            handed[job_id] = versions
            for subscriber in list(subscribers):
                getattr(subscriber, kind)(share)

    # --- plain reads ---------------------------------------------------------------------------------------

    async def read(self, call: Callable[[], Awaitable[T]]) -> T:
        """A plain read (logs, a full allocation ...), at most `reads` at once."""
        async with self._reads:
            return await call()

    async def refresh(self, job_id: str) -> None:
        """Plain reads of the three lists for `job_id`'s watches, handed to them as the long polls' answers are:
        what was true when this was called. Callers that come while one runs share the next one, which reads
        the jobs of all of them (the client retries passing failures; TransientError when they last)."""
        self._refresh_jobs.add(job_id)
        if self._refresh_next is None:
            self._refresh_next = asyncio.ensure_future(self._refresh_after(self._refresh_running))
        await asyncio.shield(self._refresh_next)

    async def _refresh_after(self, previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        self._refresh_running, self._refresh_next = self._refresh_next, None
        jobs, self._refresh_jobs = sorted(self._refresh_jobs), set()
        reads = [
            self.read(
                functools.partial(
                    self.api.get,
                    self.http,
                    path,
                    list[shape],  # type: ignore[valid-type]
                    params=self._params(path, jobs, resources=True),
                )
            )
            for _, path, shape, _ in self._queries()
        ]
        answers = await asyncio.gather(*reads)
        for (_, _, _, kind), (value, _) in zip(self._queries(), answers, strict=True):
            self._dispatch(kind, value, only=jobs)

    async def nodes(self) -> list[dict[str, Any]]:
        """The client nodes, listed once for every watch that needs them (to explain a placement failure)."""
        if self._nodes is None:
            self._nodes = asyncio.ensure_future(self.read(lambda: self.api.nodes(self.http)))
        return await asyncio.shield(self._nodes)
