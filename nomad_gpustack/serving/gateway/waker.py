"""Scale to zero and back: models whose job carries the scale-to-zero meta are scaled to 0 through Nomad's scale
API after `idle_after` without a request, and back to 1 when a request arrives, which is held meanwhile.

The gateway knows these jobs through Nomad, not Consul (a model at zero instances has no service there): one
blocking query follows the job list (`/v1/jobs?meta=true`, filtered to the jobs nomadgs compiled), whatever
the number of models. A wake-up:

1. the first request for a model that has no passing instance is held (at most `max_held` per model, then 429;
   each for at most `hold_timeout`, then 503 with Retry-After); the requests that follow join it;
2. one wake per model at a time reads the group's count (`GET /v1/job/:id/scale`): above 0, someone (another
   gateway, a person, the autoscaler) is already waking it, and the wake joins theirs; at 0 it scales the group
   to 1 (`POST /v1/job/:id/scale`, with a message and meta saying why), as a check-and-set on the job's
   JobModifyIndex, so that of several gateways racing one scales and the others, refused, read the count
   again and join;
3. when the routing table has a passing instance of the model (Consul's check passed), the held requests go on.

Idle: a model with no request in flight, none held and none for `idle_after` is scaled to 0 the same way
(count read first, check-and-set). With several gateways (or worker processes) in front of one model, each also
reads the others' last activity from Consul's key/value store (`activity`) before it scales a model down, and
goes on only when they are all idle too: one that sees no traffic never scales down a model another serves.
Without Consul (a gateway in front of fixed instances) a gateway judges from its own requests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...contract.metadata import META_BACKEND, is_managed, model_name, scale_to_zero
from ...durations import SECOND, parse_duration
from ...nomad import blocking
from ...nomad.client import IndexConflict, NomadAPI, NomadDenied, NomadError, NomadRejected
from ...nomad.responses import JobStub
from ...nomad.status import MANAGED_FILTER
from ...settings import ConsulSettings
from ..consul import ConsulWatcher
from .activity import Activity, ActivityUnknown, interval, others_idle_in
from .errors import RETRY_AFTER, ApiError, GatewayError
from .relay import seconds_text

if TYPE_CHECKING:
    from ...settings import NomadSettings
    from ..discovery import RoutingTable
    from .metrics import GatewayMetrics
    from .source import RouteSource

log = logging.getLogger("nomadgs.gateway")

HOLD_TIMEOUT = 600.0  # seconds a request waits for a model to wake: loading a model takes minutes
MAX_HELD = 100  # requests held per model
ACL_POLICY = "examples/acl/nomadgs-gateway.policy.hcl"
CAPABILITIES = ("list-jobs", "read-job", "scale-job")
REASON = "nomadgs_reason"  # the key of the scale event's meta that says why
ACTIVE_DEPLOYMENT = "blocked due to active deployment"  # nomad/job_endpoint.go Scale


@dataclass(frozen=True)
class Sleeper:
    """A model whose job may be scaled to zero: which job and group, after how long without a request."""

    model: str
    job_id: str
    group: str
    idle_after: float  # seconds
    idle_text: str  # as the job says it ("15m")
    job_modify_index: int
    backend: str


def sleepers(stubs: Iterable[JobStub]) -> dict[str, Sleeper]:
    """The models that may be scaled to zero, from the job list: jobs nomadgs compiled, not stopped, with the
    scale-to-zero meta (`contract.metadata.scale_to_zero`)."""
    found: dict[str, Sleeper] = {}
    for stub in stubs:
        meta = stub.Meta
        if stub.Stop or not is_managed(meta):
            continue
        scaling = scale_to_zero(meta)
        model = model_name(meta)
        if scaling is None or model is None:
            continue
        try:
            idle_after = parse_duration(scaling.idle_after) / SECOND
        except ValueError:
            log.warning("job %s: its idle time %r is not a duration; it is not scaled to zero", stub.ID,
                        scaling.idle_after)  # fmt: skip
            continue
        if idle_after <= 0:
            continue
        backend = meta.get(META_BACKEND, "")
        index = stub.JobModifyIndex
        found[model] = Sleeper(model, stub.ID, scaling.group, idle_after, scaling.idle_after, index, backend)
    return found


class WakeFailed(Exception):
    """The model could not be scaled up; the words say why."""


@dataclass
class _Model:
    """What the waker knows of one model: its requests, its wake-up."""

    last: float  # when a request for it last began or ended (the waker's clock)
    active: int = 0  # requests between arrival and end, held ones included
    held: int = 0
    wake: asyncio.Task[None] | None = None
    wake_started: float | None = None  # the first held request of the wake now running
    denied: bool = False  # a 403 was already explained in the log
    waiting: set[asyncio.Future[None]] = field(default_factory=set)
    shared: float = -math.inf  # when (wall clock) its last activity was last written to Consul
    sharing: asyncio.Task[bool] | None = None  # that write, while it runs
    not_before: float = -math.inf  # no idle check before then (the waker's clock): another gateway served it

    def busy(self) -> bool:
        return self.active > 0 or self.held > 0 or (self.wake is not None and not self.wake.done())


class Waker:
    """Scales the models that may be at zero instances: up when a request arrives, down when idle."""

    def __init__(
        self,
        settings: NomadSettings,
        *,
        hold_timeout: float = HOLD_TIMEOUT,
        max_held: int = MAX_HELD,
        clock: Callable[[], float] = time.monotonic,
        consul: ConsulSettings | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`hold_timeout` (seconds; 0: no limit) and `max_held` bound the requests held for each model. The
        gateways' last activity is shared through the Consul of `consul`, by default the one the routing table
        comes from (a ConsulWatcher's); `wall` is the clock of the times written there (unix seconds)."""
        self.settings = settings
        self.hold_timeout = hold_timeout or None
        self.max_held = max_held
        self.clock = clock
        self.wall = wall
        self.consul = consul
        self.activity: Activity | None = None
        self.sleepers: dict[str, Sleeper] = {}
        self.deployed: frozenset[str] = frozenset()  # the models of every running job nomadgs compiled
        self.api = NomadAPI(settings)
        self._models: dict[str, _Model] = {}
        self._http: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._source: RouteSource | None = None
        self._metrics: GatewayMetrics | None = None
        self._gateway_name = socket.gethostname()
        self.idle_passes = 0  # passes of the idle check so far (tests wait on it)

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def start(self, source: RouteSource, metrics: GatewayMetrics) -> None:
        """Read the job list once (GatewayError when Nomad cannot be read: an error before anything listens),
        then follow it, and watch for idle models."""
        if self._http is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._source = source
        self._metrics = metrics
        self._http = self.api.async_client()
        try:
            stubs, index = await self.api.job_list(self._http, filter_expr=MANAGED_FILTER)
        except NomadDenied:
            await self.stop()
            raise GatewayError(self.denied("list the jobs")) from None
        except NomadError as exc:
            await self.stop()
            raise GatewayError(f"scale to zero needs Nomad, which cannot be read: {exc}") from None
        self._set(stubs)
        consul = self.consul or (source.settings if isinstance(source, ConsulWatcher) else None)
        if consul is not None:
            # Made here, not in __init__: each worker process started from one gateway gets an ID of its own.
            self.activity = Activity(consul)
        else:
            log.info("no Consul: idle models are judged from this gateway's own requests only")
        source.subscribe(self._table_changed)
        self._tasks = [
            asyncio.create_task(self._follow_jobs(blocking.next_index(0, index))),
            asyncio.create_task(self._watch_idle()),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        tasks += [m.wake for m in self._models.values() if m.wake is not None]
        writes = [m.sharing for m in self._models.values() if m.sharing is not None]
        for task in [*tasks, *writes]:
            task.cancel()
        for task in [*tasks, *writes]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.activity is not None:
            activity, self.activity = self.activity, None
            await activity.close()
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    # --- what the gateway asks ------------------------------------------------------------------------------

    def knows(self, model: str) -> bool:
        """Whether `model` is one that may be at zero instances."""
        return model in self.sleepers

    def has_job(self, model: str) -> bool:
        """Whether a job that nomadgs compiled runs `model`, registered instances or not: while its instances
        are down (a crash, a distributed replica restarting as a whole) it is unavailable, not unknown."""
        return model in self.deployed

    def must_hold(self, model: str, table: RoutingTable) -> bool:
        """Whether a request for `model` must wait for it to wake: it may be at zero and has no passing
        instance."""
        return model in self.sleepers and not table.routes.get(model)

    def held(self, model: str) -> int:
        """Requests held for `model` now."""
        state = self._models.get(model)
        return state.held if state is not None else 0

    def active(self, model: str) -> int:
        """Requests for `model` between arrival and end now (the end comes after the answer is sent)."""
        state = self._models.get(model)
        return state.active if state is not None else 0

    def begin(self, model: str) -> None:
        """A request for `model` arrived (held or not): it is not idle until the request ends."""
        state = self._state(model)
        state.active += 1
        state.last = self.clock()
        self._share(model, state)

    def end(self, model: str) -> None:
        state = self._state(model)
        state.active -= 1
        state.last = self.clock()

    async def hold(self, model: str) -> None:
        """Wait until `model` has a passing instance, waking it; ApiError 429 when `max_held` requests already
        wait, 503 (with Retry-After) when it did not wake within `hold_timeout` or could not be woken."""
        sleeper = self.sleepers.get(model)
        if sleeper is None:  # its job went away meanwhile
            raise ApiError(503, f"The model '{model}' has no instance.", "server_error", "no_healthy_instance",
                           retry_after=RETRY_AFTER)  # fmt: skip
        state = self._state(model)
        if state.held >= self.max_held:
            raise ApiError(
                429,
                f"The model '{model}' is starting and {state.held} requests already wait for it; try again later.",
                "server_error",
                "too_many_waiting",
                retry_after=RETRY_AFTER,
            )
        metrics = self._metrics
        assert metrics is not None and self._loop is not None
        gauge = metrics.holding(model)
        state.held += 1
        gauge.inc()
        try:
            wake = state.wake
            if wake is None or (wake.done() and (wake.cancelled() or wake.exception() is not None)):
                # No wake running, or the last one failed: this request starts one (a retry, for a failure).
                log.info("model %s: a request arrived while it has no instance; waking it", model)
                state.wake_started = self.clock()
                wake = state.wake = asyncio.create_task(self._wake(sleeper))
                # Once it is over (done, not just about to be), the held requests look again.
                wake.add_done_callback(lambda _: self._notify(model))
            deadline = None if self.hold_timeout is None else self._loop.time() + self.hold_timeout
            while not self._routes(model):
                if wake.done():
                    failure = None if wake.cancelled() else wake.exception()
                    if failure is not None:
                        raise ApiError(
                            503,
                            f"The model '{model}' is scaled to zero and could not be started: {failure}.",
                            "server_error",
                            "wake_failed",
                            retry_after=RETRY_AFTER,
                        )
                waiter = self._loop.create_future()
                state.waiting.add(waiter)
                try:
                    timeout = None if deadline is None else deadline - self._loop.time()
                    if timeout is not None and timeout <= 0:
                        raise TimeoutError
                    await asyncio.wait_for(asyncio.shield(waiter), timeout)
                except TimeoutError:
                    log.warning("model %s: a request waited %s for it to start; answered 503", model,
                                seconds_text(self.hold_timeout))  # fmt: skip
                    raise ApiError(
                        503,
                        f"The model '{model}' is starting (it was scaled to zero) and did not become ready within "
                        f"{seconds_text(self.hold_timeout)}; try again later.",
                        "server_error",
                        "model_starting",
                        retry_after=RETRY_AFTER,
                    ) from None
                finally:
                    state.waiting.discard(waiter)
        finally:
            state.held -= 1
            gauge.dec()

    # --- waking up ------------------------------------------------------------------------------------------

    async def _wake(self, sleeper: Sleeper) -> None:
        """Scale the model's group to 1 unless its count is above 0 already (then join that wake)."""
        model = sleeper.model
        metrics = self._metrics
        assert metrics is not None
        try:
            index = sleeper.job_modify_index
            for _ in range(3):
                desired = await self._desired(sleeper)
                if desired >= 1:
                    log.info("model %s: its group %s is already scaled to %d; waiting for its instance", model,
                             sleeper.group, desired)  # fmt: skip
                    metrics.wakeup(model, "joined")
                    return
                try:
                    why = f"nomadgs gateway: a request for model {model} arrived while it had no instance"
                    await self._scale(sleeper, 1, "up", index, "request", why)
                except IndexConflict:
                    # The job changed since the list was read (another gateway scaled it?): read it again.
                    stub, _ = await self.api.get(self._http, f"/v1/job/{sleeper.job_id}", JobStub)
                    index = stub.JobModifyIndex
                    continue
                except NomadRejected as exc:
                    # Nomad checks for a deployment before the check-and-set (nomad/job_endpoint.go Scale): a
                    # scale from 0 that someone else just made opens one. Read the count again, and join it.
                    if ACTIVE_DEPLOYMENT not in str(exc):
                        raise
                    continue
                log.info("model %s: scaled group %s of job %s to 1", model, sleeper.group, sleeper.job_id)
                metrics.wakeup(model, "scaled")
                return
            raise WakeFailed(f"its job {sleeper.job_id} kept changing while the gateway tried to scale it")
        except NomadDenied:
            metrics.wakeup(model, "failed")
            reason = self.denied(f"scale job {sleeper.job_id}")
            log.error("model %s: %s", model, reason)
            raise WakeFailed(reason) from None
        except (NomadError, WakeFailed) as exc:
            metrics.wakeup(model, "failed")
            log.error("model %s: cannot wake it: %s", model, exc)
            raise WakeFailed(str(exc)) from None

    async def _desired(self, sleeper: Sleeper) -> int:
        """The count of the model's group now (`GET /v1/job/:id/scale`); WakeFailed when the job is stopped or
        has no such group."""
        status = await self.api.scale_status(self._http, sleeper.job_id)
        group = status.TaskGroups.get(sleeper.group)
        if status.JobStopped:
            raise WakeFailed(f"its job {sleeper.job_id} is stopped")
        if group is None:
            raise WakeFailed(f"its job {sleeper.job_id} has no group {sleeper.group}")
        return group.Desired

    async def _scale(self, sleeper: Sleeper, count: int, direction: str, index: int, reason: str, message: str) -> None:
        """One scale call, counted by its outcome."""
        metrics = self._metrics
        assert metrics is not None
        meta = {REASON: reason, "nomadgs_model": sleeper.model, "nomadgs_gateway": self._gateway_name}
        if reason == "idle":
            meta["nomadgs_idle_after"] = sleeper.idle_text
        try:
            await self.api.scale(
                self._http, sleeper.job_id, sleeper.group, count, message=message, meta=meta, job_modify_index=index
            )
        except IndexConflict:
            metrics.scale_call(sleeper.model, direction, "conflict")
            raise
        except (NomadDenied, NomadRejected):
            metrics.scale_call(sleeper.model, direction, "refused")
            raise
        except NomadError:
            metrics.scale_call(sleeper.model, direction, "failed")
            raise
        metrics.scale_call(sleeper.model, direction, "scaled")

    # --- idle -----------------------------------------------------------------------------------------------

    def _share(self, model: str, state: _Model) -> None:
        """Write the model's last activity to Consul now, unless it was written less than an interval ago (or is
        being written): at most one write per model and interval, whatever the traffic."""
        sleeper = self.sleepers.get(model)
        activity = self.activity
        if activity is None or sleeper is None or (state.sharing is not None and not state.sharing.done()):
            return
        now = self.wall()
        if now - state.shared < interval(sleeper.idle_after):
            return
        state.shared = now
        state.sharing = asyncio.create_task(activity.write(model, now))

    async def _watch_idle(self) -> None:
        """Every so often (a quarter of the shortest idle time, from 0.1 s to 15 s), refresh the shared activity of
        the models with requests in flight, and scale the idle models to 0."""
        while True:
            shortest = min((s.idle_after for s in self.sleepers.values()), default=20.0)
            await asyncio.sleep(min(15.0, max(0.1, shortest / 4)))
            for sleeper in list(self.sleepers.values()):
                try:
                    state = self._state(sleeper.model)
                    if state.active > 0 or state.held > 0:
                        self._share(sleeper.model, state)  # a long request: the others must see it goes on
                    await self._sleep_if_idle(sleeper)
                except Exception:  # one model's failure must not stop the others'
                    log.exception("model %s: the idle check failed", sleeper.model)
            self.idle_passes += 1

    async def _sleep_if_idle(self, sleeper: Sleeper) -> None:
        model = sleeper.model
        state = self._state(model)
        if state.busy() or self.clock() - state.last < sleeper.idle_after or self.clock() < state.not_before:
            return
        try:
            desired = await self._desired(sleeper)
        except (NomadError, WakeFailed):
            return  # the job list will tell when the job is gone or changed; Nomad unreachable: next time
        if desired == 0:
            state.last = self.clock()  # asleep: look again after another idle period
            return
        found = []
        if self.activity is not None:
            # The other gateways' last requests: none may be within idle_after (and the records' lag).
            try:
                found = await self.activity.survey(model, self.wall() - (self.clock() - state.last))
            except ActivityUnknown:
                return  # never guess idle: next time
            wait = others_idle_in(found, self.activity.id, self.wall(), sleeper.idle_after)
            if wait > 0:
                state.not_before = self.clock() + wait  # when the newest of them would be idle
                log.debug("model %s: idle here, but another gateway served it; looking again in %s", model,
                          seconds_text(round(wait, 1)))  # fmt: skip
                return
        if state.busy() or self.clock() - state.last < sleeper.idle_after:
            return  # a request arrived while the count was read
        message = f"nomadgs gateway: no request for model {model} in {sleeper.idle_text}; scaled to zero"
        try:
            await self._scale(sleeper, 0, "down", sleeper.job_modify_index, "idle", message)
        except IndexConflict:
            return  # the job changed: the job list brings its new index, and the next check tries again
        except NomadDenied:
            if not state.denied:
                state.denied = True
                log.error("model %s: %s", model, self.denied(f"scale job {sleeper.job_id} to zero"))
            return
        except NomadRejected as exc:
            if ACTIVE_DEPLOYMENT in str(exc):
                log.info("model %s: idle, but its job has a deployment in progress; scaled to zero after it", model)
            else:
                log.warning("model %s: idle, but Nomad refused to scale it to zero: %s", model, exc)
            return
        except NomadError as exc:
            log.warning("model %s: idle, but it could not be scaled to zero: %s", model, exc)
            return
        state.last = self.clock()
        state.wake = None
        log.info("model %s: no request for %s: scaled group %s of job %s to 0", model, sleeper.idle_text,
                 sleeper.group, sleeper.job_id)  # fmt: skip
        if self.activity is not None:
            await self.activity.forget(found)  # the records of gateways gone go too; any written since stay

    # --- following Nomad and the routing table --------------------------------------------------------------

    async def _follow_jobs(self, index: int) -> None:
        assert self._http is not None
        http = self._http
        async for stubs in blocking.follow(
            lambda i: self.api.job_list(http, index=i, filter_expr=MANAGED_FILTER),
            retry_on=NomadError,
            on_retry=self._retried,
            index=index,
        ):
            self._set(stubs)

    def _retried(self, exc: Exception, delay: float) -> None:
        what = self.denied("list the jobs") if isinstance(exc, NomadDenied) else str(exc)
        log.warning("following Nomad's jobs: %s; retried after %.1fs", what, delay)

    def _set(self, stubs: Iterable[JobStub]) -> None:
        stubs = list(stubs)
        self.deployed = frozenset(
            model for stub in stubs if not stub.Stop and is_managed(stub.Meta) and (model := model_name(stub.Meta))
        )
        found = sleepers(stubs)
        for model, sleeper in found.items():
            if model not in self.sleepers:
                log.info("model %s: scaled to zero after %s without a request (job %s, group %s)", model,
                         sleeper.idle_text, sleeper.job_id, sleeper.group)  # fmt: skip
        self.sleepers = found

    def _table_changed(self, table: RoutingTable) -> None:
        """A source's listener, maybe on another thread: the news goes to the waker's loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_table, table)

    def _on_table(self, table: RoutingTable) -> None:
        for model, state in self._models.items():
            if not table.routes.get(model):
                continue
            if state.wake is not None and state.wake.done():
                state.wake = None  # woken: the next time it is at zero, a new wake
                if state.wake_started is not None and self._metrics is not None:
                    took = self.clock() - state.wake_started
                    self._metrics.woke(model, took)
                    log.info("model %s: ready after %s", model, seconds_text(round(took, 1)))
                state.wake_started = None
            self._notify(model)

    def _notify(self, model: str) -> None:
        """Wake the requests held for `model` to look at the table again."""
        state = self._models.get(model)
        if state is None:
            return
        for waiter in list(state.waiting):
            if not waiter.done():
                waiter.set_result(None)

    def _routes(self, model: str) -> bool:
        return self._source is not None and bool(self._source.table.routes.get(model))

    def _state(self, model: str) -> _Model:
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = _Model(last=self.clock())
        return state

    def denied(self, what: str) -> str:
        """A 403 of Nomad in words: which token, which capabilities on which namespace."""
        namespace = self.settings.namespace or "default"
        token = (
            "the token of NOMAD_TOKEN (or --token-file)"
            if self.settings.token
            else "no token (set NOMAD_TOKEN or --token-file)"
        )
        return (
            f"Nomad refused to {what} (403 Permission denied): the gateway sent {token}, and scaling to zero needs "
            f"a token whose policy grants {', '.join(CAPABILITIES)} on namespace '{namespace}' (see {ACL_POLICY}); "
            "or turn it off with --no-scale-to-zero"
        )
