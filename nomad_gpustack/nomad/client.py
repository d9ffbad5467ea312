"""The Nomad client: python-nomad for one-shot calls, httpx for what python-nomad cannot do.

python-nomad serves validate, plan, register, stop and reads. It falls short for watching: its methods take
no `index`/`wait` and drop the `X-Nomad-Index` header (no blocking queries), its event stream thread dies
silently on a connect error, and its log call reads the whole body instead of streaming. Those go through
httpx. Both clients are built from the same `NomadSettings`, so address, token, namespace, region and TLS
are decided in one place.

Reads (and validate and plan, which change nothing) are retried here when they fail for a passing reason: a
5xx (Nomad answers 500 `No cluster leader` during a leader election) or a broken connection, with the backoff
of `blocking`, for at most `retry_for` seconds in all and never past the `deadline` (a command's --timeout).
A 5xx that persists is NomadUnavailable (exit 5). Writes are not retried here: `runner.register` resends with
the same check-and-set index, which cannot register twice. Blocking queries (an `index` given) are not either:
their caller follows them and retries (`blocking.follow`).

Some 500s are final, not passing: Nomad refuses an invalid job with a 500 that lists its validation errors
(JobRefused, exit 2). Every answer becomes typed data in one place (`NomadAPI.shaped`): JSON of another shape
means the address is not Nomad's HTTP API (NotNomad, exit 5), as an HTML page does.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .. import unreachable
from ..answers import WrongShape, foreign_answer, html_page, shaped
from ..contract.jobspec import Job
from ..errors import ServiceError, UnreachableError
from ..settings import NomadSettings
from .blocking import backoff_delay, header_index
from .responses import (
    Allocation,
    Deployment,
    DeploymentUpdateResponse,
    DeregisterResponse,
    Evaluation,
    JobScaleStatus,
    JobStub,
    JobVersions,
    NodeStub,
    PlanResponse,
    RegisterResponse,
    ValidateResponse,
)

# The HTTP libraries are imported inside the functions that use them, as in settings.py: `status` and `stop`
# make python-nomad calls only, `logs` and a Nomad endpoints lookup httpx calls only, and each library costs
# the other 30-80 ms of start-up (measured; ARCHITECTURE.md, "Imports inside functions").

T = TypeVar("T")
R = TypeVar("R")
DEFAULT_WAIT = "5m"  # blocking-query wait; Nomad caps it at 5m (plus jitter)
RETRY_FOR = 60.0  # seconds a read keeps retrying passing failures; a leader election takes a few


class NomadError(ServiceError):
    """Nomad answered, with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NomadDenied(UnreachableError, NomadError):
    """403: no token, an unknown token, or a token without the capability."""


class NomadRejected(NomadError):
    """400: Nomad refused the request as malformed."""


class JobRefused(NomadRejected):
    """Nomad refused the job as invalid (a 500 listing its validation errors): final, never retried.
    `problems` holds Nomad's errors, one problem each."""

    def __init__(self, problems: list[str], status: int | None = None) -> None:
        super().__init__("\n".join(f"Nomad refused the job: {p}" for p in problems), status)
        self.problems = tuple(problems)


class IndexConflict(NomadError):
    """Registration with EnforceIndex lost a race: someone changed the job since we planned."""


class TransientError(NomadError):
    """A failure worth retrying: connection trouble or a 5xx."""


class NomadUnavailable(UnreachableError, TransientError):
    """Nomad could not be reached, or the connection broke.

    `lasting` marks causes that waiting rarely cures (connection refused, an unknown host name, a certificate
    that does not verify): a read retries them only when the server has answered before (a restart), so a
    wrong address fails at once.
    """

    def __init__(self, message: str, status: int | None = None, *, lasting: bool = False) -> None:
        super().__init__(message, status)
        self.lasting = lasting


class NotNomad(UnreachableError, NomadError):
    """Something answers at the address, but it is not Nomad's HTTP API (a web page, another service)."""


# Paths that exist on every Nomad server: a 404 there means the address is not Nomad's HTTP API.
_ALWAYS_THERE = re.compile(r"/v1/(jobs|nodes|validate/job|status/leader|job/[^/]+/plan)")


def _never_missing(path: str) -> bool:
    return _ALWAYS_THERE.fullmatch(path) is not None


def _not_nomad(settings: NomadSettings, reason: str) -> NotNomad:
    return NotNomad(f"{settings.address} is not a Nomad HTTP API ({reason}); check NOMAD_ADDR or --address")


def _foreign(settings: NomadSettings, status: int, content_type: str, path: str, json_expected: bool) -> None:
    """NotNomad when the answer cannot come from Nomad's HTTP API."""
    reason = foreign_answer(status, content_type, path, json_expected=json_expected, never_missing=_never_missing)
    if reason is not None:
        raise _not_nomad(settings, reason)


# go-multierror's list, which Nomad's job validation returns (`2 errors occurred:\n\t* ...\n\t* ...\n\n`); a
# problem that has problems of its own ends in such a head, its items following at the same indentation.
_MULTI_HEAD = re.compile(r"(.*?)(\d+) errors? occurred:")

# The errors of Nomad's job registration that no retry cures, besides the validation list: `validateJobUpdate`
# in nomad/job_endpoint.go (a job's type, periodic or parameterized nature cannot change).
_FINAL_REFUSALS = ("cannot update ", "field 'Dispatched' is read-only", "job can't be submitted with")


def multierror_lines(text: str) -> list[str] | None:
    """The problems of a go-multierror list, one a line, each nested problem after its parents' words
    (`Task group server validation failed: minimum CPU value is 20; got 1`); None when `text` is not such a list.

    Nomad sends it as it is: `Job.Plan` and `Job.Register` (nomad/job_endpoint.go) run the admission
    validators before any write and return their multierror; the HTTP layer (`wrap` in command/agent/http.go)
    answers an RPC error without a code as a 500 whose body is the error's text.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = _MULTI_HEAD.fullmatch(lines[0]) if lines else None
    if head is None:
        return None
    items = iter(lines[1:])
    problems: list[str] = []

    def take(count: int, prefix: str) -> None:
        for _ in range(count):
            line = next(items, None)
            if line is None:
                return
            item = line.removeprefix("* ")
            nested = _MULTI_HEAD.fullmatch(item)
            if nested is not None:
                take(int(nested.group(2)), prefix + nested.group(1))
            else:
                problems.append(prefix + item)

    take(int(head.group(2)), head.group(1))
    problems += [line.removeprefix("* ") for line in items]  # an error's text of several lines: kept as it is
    return problems


def _error_for(status: int | None, text: str, settings: NomadSettings, content_type: str = "") -> NomadError:
    text = (text or "").strip()
    if html_page(content_type, text):
        text = "an HTML page (from a proxy in front of Nomad?)"  # never print a page as error lines
    refused = multierror_lines(text) if status is not None and status >= 500 else None
    if refused is None and status is not None and status >= 500 and text.startswith(_FINAL_REFUSALS):
        refused = [text]
    if refused:
        return JobRefused(refused, status)
    if status == 403:
        # Nomad answers an unknown, malformed or expired token as it answers a missing capability: 403
        # "Permission denied" (nomad/auth/auth.go Authenticate); only a token sent can be the wrong one.
        if "not found" in text.lower():
            hint = "NOMAD_TOKEN is not a known ACL token on this cluster"
        elif settings.token:
            hint = (
                "the token is unknown to this cluster, expired, or lacks the capability this needs "
                "(Nomad does not say which): check NOMAD_TOKEN"
            )
        else:
            hint = "no token was sent: set NOMAD_TOKEN to a token with submit-job and read-job in the namespace"
        return NomadDenied(f"Nomad refused the request ({text or 'Permission denied'}): {hint}", status)
    if status == 400:
        return NomadRejected(f"Nomad rejected the request: {text}", status)
    if status == 404:
        return NomadError(f"not found: {text or 'no such object'}", status)
    if status is not None and "Enforcing job modify index" in text:
        return IndexConflict(f"the job changed since it was planned ({text})", status)
    if status is not None and status >= 500:
        # A leader election, an overloaded server, a proxy whose Nomad restarts: retried while time is left.
        return NomadUnavailable(f"Nomad at {settings.address} is unavailable: it answered {status}: {text}", status)
    return NomadError(f"Nomad answered {status}: {text}", status)


_TLS_HINT = "set NOMAD_CACERT, or NOMAD_TLS_SERVER_NAME"


def _unreachable(settings: NomadSettings, exc: BaseException) -> NomadUnavailable:
    """A request python-nomad could not make; the cause in plain words, never the exception's text (a
    urllib3 message that may quote a header)."""
    reason = unreachable.cause(exc, tls_hint=_TLS_HINT, otherwise=type(exc).__name__)
    return NomadUnavailable(
        f"cannot reach Nomad at {settings.address}: {reason} (set NOMAD_ADDR or --address)",
        lasting=unreachable.lasting(exc),
    )


def _transport_failure(settings: NomadSettings, exc: Exception) -> NomadUnavailable:
    """An httpx transport error: a failed connect is lasting, a connection broken later is not."""
    import httpx  # an HTTP library: see the note at the top

    reason = unreachable.cause(exc, tls_hint=_TLS_HINT, otherwise=str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        return NomadUnavailable(
            f"cannot reach Nomad at {settings.address}: {reason} (set NOMAD_ADDR or --address)",
            lasting=reason != "timed out",
        )
    return NomadUnavailable(f"the connection to Nomad at {settings.address} broke: {reason}")


class NomadAPI:
    """One-shot calls (blocking, python-nomad) and watch calls (async, httpx) against one cluster."""

    def __init__(
        self,
        settings: NomadSettings,
        *,
        timeout: float = 30.0,
        retry_for: float = RETRY_FOR,
        deadline: float | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """`retry_for`: seconds one call may spend retrying passing failures; `deadline` (a `time.monotonic()`
        value, from a command's --timeout): no retry waits past it; `on_retry` hears of each retry."""
        self.settings = settings
        self.timeout = timeout
        self.retry_for = retry_for
        self.deadline = deadline
        self.on_retry = on_retry
        self._client: Any = None
        self._answered = False  # the server has answered at least once
        self.requests = 0  # HTTP requests sent through the async client (the benchmark reports it)

    # --- retrying passing failures -------------------------------------------------------------------

    def _worth_retrying(self, exc: TransientError) -> bool:
        return not (isinstance(exc, NomadUnavailable) and exc.lasting and not self._answered)

    def pause_before_retry(self, exc: TransientError, attempt: int, started: float, *, announce: bool = True) -> float:
        """The pause before attempt `attempt + 1` of a call that began at `started` (`time.monotonic()`); the
        error itself, saying how often it tried, when the call's time (`retry_for`, the deadline) is over.
        Every retry loop of Nomad calls asks here, so all of them keep to the same limits; `announce` tells
        `on_retry` (a caller that says it in its own words passes False)."""
        if not self._worth_retrying(exc):
            raise exc
        delay = backoff_delay(attempt)
        now = time.monotonic()
        elapsed = now - started
        if elapsed + delay > self.retry_for or (self.deadline is not None and now + delay > self.deadline):
            if attempt == 0:
                raise exc
            gave_up = copy.copy(exc)
            gave_up.args = (f"{exc} (tried {attempt + 1} times over {elapsed:.0f}s)",)
            raise gave_up from None
        if announce and self.on_retry is not None:
            self.on_retry(f"{exc}; trying again in {delay:.1f}s")
        return delay

    def _retrying(self, call: Callable[[], R]) -> R:
        """`call()`, retried with backoff while it fails for a passing reason and time is left."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return call()
            except TransientError as exc:
                time.sleep(self.pause_before_retry(exc, attempt, started))
                attempt += 1

    async def _retrying_async(self, call: Callable[[], Awaitable[R]]) -> R:
        """The same for a coroutine."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return await call()
            except TransientError as exc:
                await asyncio.sleep(self.pause_before_retry(exc, attempt, started))
                attempt += 1

    def shaped(self, shape: type[T], data: Any, path: str) -> T:
        """The one place an answer of Nomad becomes typed data (`data` decoded, or the answer's raw bytes): JSON of
        another shape, or no JSON, is NotNomad."""
        try:
            return shaped(shape, data, path)
        except WrongShape as exc:
            raise _not_nomad(self.settings, str(exc)) from None

    # --- one-shot calls through python-nomad -----------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.settings.python_nomad(timeout=self.timeout, on_response=self._check_answer)
        return self._client

    def _check_answer(self, response: Any, *args: Any, **kwargs: Any) -> None:
        """A requests hook on every python-nomad answer: NotNomad when it cannot come from Nomad."""
        self._answered = True
        content_type = response.headers.get("Content-Type", "")
        _foreign(self.settings, response.status_code, content_type, urlsplit(response.url).path, json_expected=True)

    def _call(self, path: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, a python-nomad call to `path`, with its failures as NomadErrors."""
        import nomad.api.exceptions as nomad_exc  # an HTTP library: see the note at the top
        import requests

        try:
            return fn(*args, **kwargs)
        except nomad_exc.BaseNomadException as exc:
            resp = exc.nomad_resp
            if isinstance(resp, requests.Response):
                content_type = resp.headers.get("Content-Type", "")
                raise _error_for(resp.status_code, resp.text, self.settings, content_type) from None
            raise _unreachable(self.settings, resp if isinstance(resp, BaseException) else exc) from None
        except requests.JSONDecodeError:
            raise _not_nomad(self.settings, f"the answer to {path} is not JSON") from None
        except requests.RequestException as exc:
            raise _unreachable(self.settings, exc) from None

    def _read(self, path: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A call that changes nothing, retried while it fails for a passing reason."""
        return self._retrying(lambda: self._call(path, fn, *args, **kwargs))

    def validate(self, job: Job) -> ValidateResponse:
        """Server-side validation (`/v1/validate/job`), with the `{"Job": ...}` wrapper it needs."""
        path = "/v1/validate/job"
        resp = self._read(path, self.client.validate.validate_job, {"Job": job})
        return self.shaped(ValidateResponse, self._call(path, resp.json), path)

    def plan(self, job: Job) -> PlanResponse:
        path = f"/v1/job/{job['ID']}/plan"
        answer = self._read(path, self.client.job.plan_job, job["ID"], {"Job": job}, diff=True)
        return self.shaped(PlanResponse, answer, path)

    def register(self, job: Job, *, modify_index: int, preserve_counts: bool = False) -> RegisterResponse:
        """Register with check-and-set: fails with IndexConflict if the job is not at `modify_index`.
        `preserve_counts`: the groups keep the counts Nomad has (nomad/state/state_store.go
        updatePreservedValues), for jobs whose counts something else sets."""
        path = f"/v1/job/{job['ID']}"
        body = {"Job": job, "EnforceIndex": True, "JobModifyIndex": modify_index}
        if preserve_counts:
            body["PreserveCounts"] = True
        return self.shaped(RegisterResponse, self._call(path, self.client.job.register_job, job["ID"], body), path)

    def job(self, job_id: str) -> JobStub | None:
        path = f"/v1/job/{job_id}"
        try:
            return self.shaped(JobStub, self._read(path, self.client.job.get_job, job_id), path)
        except NomadError as exc:
            if exc.status == 404:
                return None
            raise

    def latest_evaluation(self, job_id: str) -> str:
        """The ID of the job's newest evaluation ("" when it has none)."""
        path = f"/v1/job/{job_id}/evaluations"
        evals = self.shaped(list[Evaluation], self._read(path, self.client.job.get_evaluations, job_id) or [], path)
        newest = max(evals, key=lambda e: e.CreateIndex, default=None)
        return newest.ID if newest else ""

    def jobs(self, prefix: str = "") -> list[JobStub]:
        """Jobs of the namespace with their meta (`?meta=true`), those whose ID starts with `prefix` when given."""
        path = "/v1/jobs"
        params = {"meta": "true", **({"prefix": prefix} if prefix else {})}
        response = self._read(path, self.client.jobs.request, method="get", params=params)
        return self.shaped(list[JobStub], self._call(path, response.json), path)

    def stop(self, job_id: str, *, purge: bool = False) -> DeregisterResponse:
        path = f"/v1/job/{job_id}"
        answer = self._call(path, self.client.job.deregister_job, job_id, purge=purge or None)
        return self.shaped(DeregisterResponse, answer, path)

    def versions(self, job_id: str, *, diff_version: int | None = None) -> JobVersions:
        """The job's kept versions, newest first, each with the diff from the one before (`?diffs=true`), or
        with `diff_version`, the diff of each from that version."""
        path = f"/v1/job/{job_id}/versions"
        params = {"diffs": "true"} if diff_version is None else {"diffs": "true", "diff_version": str(diff_version)}
        response = self._read(path, self.client.job.request, job_id, "versions", method="get", params=params)
        return self.shaped(JobVersions, self._call(path, response.json), path)

    def deployment(self, job_id: str) -> Deployment | None:
        """The job's latest deployment (`/v1/job/:id/deployment`); None when it has had none."""
        path = f"/v1/job/{job_id}/deployment"
        answer = self._read(path, self.client.job.get_deployment, job_id)
        return self.shaped(Deployment | None, answer, path)  # type: ignore[arg-type]

    def promote(self, deployment_id: str) -> DeploymentUpdateResponse:
        """Promote every canary group of the deployment (`PUT /v1/deployment/promote/:id`, All)."""
        path = f"/v1/deployment/promote/{deployment_id}"
        answer = self._call(path, self.client.deployment.promote_deployment_all, deployment_id, _all=True)
        return self.shaped(DeploymentUpdateResponse, answer, path)

    def revert(self, job_id: str, version: int, *, prior_version: int) -> RegisterResponse:
        """Register `version` of the job again as a new version (`POST /v1/job/:id/revert`), only while the job
        is still at `prior_version` (EnforcePriorVersion: a check-and-set, as `register`'s EnforceIndex)."""
        path = f"/v1/job/{job_id}/revert"
        answer = self._call(path, self.client.job.revert_job, job_id, version, enforce_prior_version=prior_version)
        return self.shaped(RegisterResponse, answer, path)

    # --- watch calls through httpx -------------------------------------------------------------------

    def async_client(self) -> Any:
        return self.settings.httpx_client(timeout=self.timeout + 330, asynchronous=True)

    async def get(
        self,
        http: Any,
        path: str,
        shape: type[T],
        *,
        index: int | None = None,
        wait: str = DEFAULT_WAIT,
        params: dict[str, str] | None = None,
    ) -> tuple[T, int]:
        """GET a JSON resource as `shape` (a response model, `list[...]`); with `index`, as a blocking query.
        Returns (data, X-Nomad-Index); JSON of another shape is NotNomad.

        A plain read is retried while it fails for a passing reason; a blocking query is not (its caller
        follows it and retries from the last index)."""
        query = dict(params or {})
        if index is not None:
            query.update(index=str(index), wait=wait)
            response = await self._get(http, path, query)
        else:
            response = await self._retrying_async(lambda: self._get(http, path, query))
        # The raw bytes, parsed and validated at once (answers.shaped): not JSON is NotNomad as another shape is.
        return self.shaped(shape, response.content, path), header_index(response.headers, "X-Nomad-Index")

    async def _get(self, http: Any, path: str, params: dict[str, str], *, json_expected: bool = True) -> Any:
        """One GET with the namespace/region parameters, errors mapped to NomadError."""
        return await self._send(http, "GET", path, {**self.settings.params(), **params}, json_expected=json_expected)

    async def _send(
        self, http: Any, method: str, path: str, params: dict[str, str], body: Any = None, *, json_expected: bool = True
    ) -> Any:
        """One request; a transport failure, an answer from something else than Nomad and an error status are
        mapped to NomadError."""
        import httpx  # an HTTP library: see the note at the top

        self.requests += 1
        try:
            response = await http.request(method, path, params=params, json=body)
        except httpx.TransportError as exc:
            raise _transport_failure(self.settings, exc) from None
        self._answered = True
        content_type = response.headers.get("Content-Type", "")
        _foreign(self.settings, response.status_code, content_type, path, json_expected)
        if response.status_code >= 400:
            raise _error_for(response.status_code, response.text, self.settings, content_type)
        return response

    async def evaluation(self, http: Any, eval_id: str, index: int | None = None) -> tuple[Evaluation, int]:
        return await self.get(http, f"/v1/evaluation/{eval_id}", Evaluation, index=index)

    async def allocations(self, http: Any, job_id: str, index: int | None = None) -> tuple[list[Allocation], int]:
        return await self.get(http, f"/v1/job/{job_id}/allocations", list[Allocation], index=index)

    async def latest_deployment(
        self, http: Any, job_id: str, index: int | None = None
    ) -> tuple[Deployment | None, int]:
        # `null` when the job has had no deployment yet
        return await self.get(http, f"/v1/job/{job_id}/deployment", Deployment | None, index=index)  # type: ignore[arg-type]

    async def deployments(self, http: Any, job_id: str, index: int | None = None) -> tuple[list[Deployment], int]:
        """The job's deployments, in no particular order (Nomad lists them in its state store's order)."""
        return await self.get(http, f"/v1/job/{job_id}/deployments", list[Deployment], index=index)

    async def job_list(
        self, http: Any, index: int | None = None, *, filter_expr: str | None = None
    ) -> tuple[list[JobStub], int]:
        """The jobs of the namespace with their meta (`/v1/jobs?meta=true`), those `filter_expr` keeps (Nomad's
        `filter`); with `index`, a blocking query: one query follows all the jobs (the gateway's models that may
        be at zero instances), not one per job."""
        params = {"meta": "true", **({"filter": filter_expr} if filter_expr else {})}
        return await self.get(http, "/v1/jobs", list[JobStub], index=index, params=params)

    async def scale_status(self, http: Any, job_id: str) -> JobScaleStatus:
        """Each group's count and allocations (`GET /v1/job/:id/scale`)."""
        status, _ = await self.get(http, f"/v1/job/{job_id}/scale", JobScaleStatus)
        return status

    async def scale(
        self,
        http: Any,
        job_id: str,
        group: str,
        count: int,
        *,
        message: str,
        meta: dict[str, str],
        job_modify_index: int = 0,
    ) -> RegisterResponse:
        """Set a group's count (`POST /v1/job/:id/scale`, Nomad's api.ScalingRequest), with a message and meta
        saying why, recorded as the group's scaling event. `job_modify_index` (> 0) is a check-and-set: Nomad
        refuses the change (IndexConflict) when the job is no longer at that JobModifyIndex (nomad/job_endpoint.go
        Scale). A write: not retried here."""

        path = f"/v1/job/{job_id}/scale"
        body: dict[str, Any] = {
            "Count": count,
            "Target": {"Job": job_id, "Group": group},
            "Message": message,
            "Meta": meta,
        }
        if job_modify_index > 0:
            body["JobModifyIndex"] = job_modify_index
        response = await self._send(http, "POST", path, self.settings.params(), body)
        return self.shaped(RegisterResponse, response.content, path)

    async def allocation(self, http: Any, alloc_id: str) -> Allocation:
        allocation, _ = await self.get(http, f"/v1/allocation/{alloc_id}", Allocation)
        return allocation

    async def nodes(self, http: Any) -> list[dict[str, Any]]:
        """Client nodes as Nomad lists them (`?resources=true`), each a node stub as it answered it."""
        stubs, _ = await self.get(http, "/v1/nodes", list[NodeStub], params={"resources": "true"})
        return [stub.model_dump() for stub in stubs]

    async def node(self, http: Any, node_id: str) -> dict[str, Any]:
        """One client node in full, as Nomad answered it."""
        node, _ = await self.get(http, f"/v1/node/{node_id}", NodeStub)
        return node.model_dump()

    async def log_tail(
        self, http: Any, alloc_id: str, task: str, *, stream: str = "stderr", tail_bytes: int = 8192
    ) -> str:
        """The last bytes a task wrote to stderr/stdout, as text (`/v1/client/fs/logs`)."""
        params = {"task": task, "type": stream, "origin": "end", "offset": str(tail_bytes), "plain": "true"}
        path = f"/v1/client/fs/logs/{alloc_id}"
        response = await self._retrying_async(lambda: self._get(http, path, params, json_expected=False))
        return str(response.text)

    async def follow_logs(
        self,
        http: Any,
        alloc_id: str,
        task: str,
        *,
        stream: str = "stdout",
        origin: str = "start",
        offset: int = 0,
        follow: bool = True,
    ) -> AsyncIterator[str]:
        """Stream a task's log as it is written (`follow=true`), chunk by chunk.

        Opening the stream is retried like a read; a stream that breaks after it delivered text is not
        (reading it again would repeat lines)."""
        import httpx  # an HTTP library: see the note at the top

        params = {
            "task": task,
            "type": stream,
            "origin": origin,
            "offset": str(offset),
            "plain": "true",
            "follow": "true" if follow else "false",
        }
        started = time.monotonic()
        attempt = 0
        while True:
            delivered = False
            self.requests += 1
            try:
                async with http.stream(
                    "GET",
                    f"/v1/client/fs/logs/{alloc_id}",
                    params={**self.settings.params(), **params},
                    timeout=httpx.Timeout(None, connect=10.0),
                ) as response:
                    self._answered = True
                    content_type = response.headers.get("Content-Type", "")
                    _foreign(self.settings, response.status_code, content_type, response.url.path, False)
                    if response.status_code >= 400:
                        body = (await response.aread()).decode(errors="replace")
                        raise _error_for(response.status_code, body, self.settings, content_type)
                    async for chunk in response.aiter_text():
                        delivered = True
                        yield chunk
                return
            except httpx.TransportError as exc:
                failure: TransientError = _transport_failure(self.settings, exc)
            except TransientError as exc:
                failure = exc
            if delivered:
                raise failure
            await asyncio.sleep(self.pause_before_retry(failure, attempt, started))
            attempt += 1
