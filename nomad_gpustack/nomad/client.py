"""The Nomad client: python-nomad for one-shot calls, httpx for what python-nomad cannot do.

python-nomad serves validate, plan, register, stop and reads. It falls short for watching: its methods take
no `index`/`wait` and drop the `X-Nomad-Index` header (no blocking queries), its event stream thread dies
silently on a connect error, and its log call reads the whole body instead of streaming. Those go through
httpx. Both clients are built from the same `NomadSettings`, so address, token, namespace, region and TLS
are decided in one place.

Reads (and validate and plan, which change nothing) are retried here when they fail for a passing reason: a
5xx (Nomad answers 500 `No cluster leader` during a leader election) or a broken connection, with the backoff
of `blocking`, for at most `retry_for` seconds in all. Writes are not: `runner.register` resends with the same
check-and-set index, which cannot register twice. Blocking queries (an `index` given) are not either: their
caller follows them and retries (`blocking.follow`).
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel

from ..answers import foreign_answer, html_page
from ..errors import EXIT_BAD_INPUT, ServiceError, UnreachableError
from ..settings import NomadSettings
from .blocking import backoff_delay, header_index
from .jobspec import Job
from .responses import (
    Allocation,
    Deployment,
    Evaluation,
    JobStub,
    PlanResponse,
    RegisterResponse,
    ValidateResponse,
)

T = TypeVar("T", bound=BaseModel)
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

    exit_code = EXIT_BAD_INPUT


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


def _foreign(settings: NomadSettings, status: int, content_type: str, path: str, json_expected: bool) -> None:
    """NotNomad when the answer cannot come from Nomad's HTTP API."""
    reason = foreign_answer(status, content_type, path, json_expected=json_expected, never_missing=_never_missing)
    if reason is not None:
        raise NotNomad(f"{settings.address} is not a Nomad HTTP API ({reason}); check NOMAD_ADDR or --address")


def _error_for(status: int | None, text: str, settings: NomadSettings, content_type: str = "") -> NomadError:
    text = (text or "").strip()
    if html_page(content_type, text):
        text = "an HTML page (from a proxy in front of Nomad?)"  # never print a page as error lines
    if status == 403:
        hint = "set NOMAD_TOKEN to a token with submit-job and read-job in the namespace"
        if "not found" in text.lower():
            hint = "NOMAD_TOKEN is not a known ACL token on this cluster"
        return NomadDenied(f"Nomad refused the request ({text or 'Permission denied'}): {hint}", status)
    if status == 400:
        return NomadRejected(f"Nomad rejected the request: {text}", status)
    if status == 404:
        return NomadError(f"not found: {text or 'no such object'}", status)
    if status is not None and "Enforcing job modify index" in text:
        return IndexConflict(f"the job changed since it was planned ({text})", status)
    if status is not None and status >= 500:
        return TransientError(f"Nomad answered {status}: {text}", status)
    return NomadError(f"Nomad answered {status}: {text}", status)


_CAUSES = [
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed (set NOMAD_CACERT, or NOMAD_TLS_SERVER_NAME)"),
    ("Connection refused", "connection refused"),
    ("RemoteDisconnected", "the connection closed without an answer"),
    ("Connection aborted", "the connection closed without an answer"),
    ("Name or service not known", "unknown host name"),
    ("Temporary failure in name resolution", "the host name could not be resolved"),
    ("timed out", "timed out"),
]


_LASTING = ("CERTIFICATE_VERIFY_FAILED", "Connection refused", "Name or service not known", "name resolution")


def _unreachable(settings: NomadSettings, exc: BaseException) -> NomadUnavailable:
    text = str(exc)
    reason = next((words for marker, words in _CAUSES if marker in text), type(exc).__name__)
    return NomadUnavailable(
        f"cannot reach Nomad at {settings.address}: {reason} (set NOMAD_ADDR or --address)",
        lasting=any(marker in text for marker in _LASTING),
    )


def _transport_failure(exc: Exception) -> NomadUnavailable:
    """An httpx transport error: a failed connect is lasting, a connection broken later is not."""
    import httpx

    lasting = isinstance(exc, httpx.ConnectError) and "timed out" not in str(exc)
    return NomadUnavailable(f"connection to Nomad failed: {exc or type(exc).__name__}", lasting=lasting)


class NomadAPI:
    """One-shot calls (blocking, python-nomad) and watch calls (async, httpx) against one cluster."""

    def __init__(
        self,
        settings: NomadSettings,
        *,
        timeout: float = 30.0,
        retry_for: float = RETRY_FOR,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """`retry_for`: seconds a read may spend retrying passing failures; `on_retry` hears of each retry."""
        self.settings = settings
        self.timeout = timeout
        self.retry_for = retry_for
        self.on_retry = on_retry
        self._client: Any = None
        self._answered = False  # the server has answered at least once
        self.requests = 0  # HTTP requests sent through the async client (the benchmark reports it)

    # --- retrying passing failures -------------------------------------------------------------------

    def _worth_retrying(self, exc: TransientError) -> bool:
        return not (isinstance(exc, NomadUnavailable) and exc.lasting and not self._answered)

    def _next_pause(self, exc: TransientError, attempt: int, started: float) -> float:
        """The pause before the next attempt; the error itself, saying how long it tried, when that is over."""
        if not self._worth_retrying(exc):
            raise exc
        delay = backoff_delay(attempt)
        elapsed = time.monotonic() - started
        if elapsed + delay > self.retry_for:
            if attempt == 0:
                raise exc
            gave_up = copy.copy(exc)
            gave_up.args = (f"{exc} (tried {attempt + 1} times over {elapsed:.0f}s)",)
            raise gave_up from None
        if self.on_retry is not None:
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
                time.sleep(self._next_pause(exc, attempt, started))
                attempt += 1

    async def _retrying_async(self, call: Callable[[], Awaitable[R]]) -> R:
        """The same for a coroutine."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return await call()
            except TransientError as exc:
                await asyncio.sleep(self._next_pause(exc, attempt, started))
                attempt += 1

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

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import nomad.api.exceptions as nomad_exc
        import requests

        try:
            return fn(*args, **kwargs)
        except nomad_exc.BaseNomadException as exc:
            resp = exc.nomad_resp
            if isinstance(resp, requests.Response):
                content_type = resp.headers.get("Content-Type", "")
                raise _error_for(resp.status_code, resp.text, self.settings, content_type) from None
            raise _unreachable(self.settings, resp if isinstance(resp, BaseException) else exc) from None
        except requests.RequestException as exc:
            raise _unreachable(self.settings, exc) from None

    def _read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A call that changes nothing, retried while it fails for a passing reason."""
        return self._retrying(lambda: self._call(fn, *args, **kwargs))

    def validate(self, job: Job) -> ValidateResponse:
        """Server-side validation (`/v1/validate/job`), with the `{"Job": ...}` wrapper it needs."""
        resp = self._read(self.client.validate.validate_job, {"Job": job})
        return ValidateResponse.model_validate(resp.json())

    def plan(self, job: Job) -> PlanResponse:
        data = self._read(self.client.job.plan_job, job["ID"], {"Job": job}, diff=True)
        return PlanResponse.model_validate(data)

    def register(self, job: Job, *, modify_index: int) -> RegisterResponse:
        """Register with check-and-set: fails with IndexConflict if the job is not at `modify_index`."""
        body = {"Job": job, "EnforceIndex": True, "JobModifyIndex": modify_index}
        return RegisterResponse.model_validate(self._call(self.client.job.register_job, job["ID"], body))

    def job(self, job_id: str) -> JobStub | None:
        try:
            return JobStub.model_validate(self._read(self.client.job.get_job, job_id))
        except NomadError as exc:
            if exc.status == 404:
                return None
            raise

    def latest_evaluation(self, job_id: str) -> str:
        """The ID of the job's newest evaluation ("" when it has none)."""
        evals = self._read(self.client.job.get_evaluations, job_id) or []
        newest = max(evals, key=lambda e: e.get("CreateIndex", 0), default=None)
        return str(newest["ID"]) if newest else ""

    def jobs(self) -> list[JobStub]:
        """Jobs of the namespace with their meta (`?meta=true`)."""
        data = self._read(self.client.jobs.request, method="get", params={"meta": "true"})
        return [JobStub.model_validate(j) for j in data.json()]

    def stop(self, job_id: str, *, purge: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._call(self.client.job.deregister_job, job_id, purge=purge or None)
        return result

    # --- watch calls through httpx -------------------------------------------------------------------

    def async_client(self) -> Any:
        return self.settings.httpx_client(timeout=self.timeout + 330, asynchronous=True)

    async def get(
        self,
        http: Any,
        path: str,
        *,
        index: int | None = None,
        wait: str = DEFAULT_WAIT,
        params: dict[str, str] | None = None,
    ) -> tuple[Any, int]:
        """GET a JSON resource; with `index`, as a blocking query. Returns (data, X-Nomad-Index).

        A plain read is retried while it fails for a passing reason; a blocking query is not (its caller
        follows it and retries from the last index)."""
        query = dict(params or {})
        if index is not None:
            query.update(index=str(index), wait=wait)
            response = await self._get(http, path, query)
        else:
            response = await self._retrying_async(lambda: self._get(http, path, query))
        return response.json(), header_index(response.headers, "X-Nomad-Index")

    async def _get(self, http: Any, path: str, params: dict[str, str], *, json_expected: bool = True) -> Any:
        """One GET with the namespace/region parameters, errors mapped to NomadError."""
        import httpx

        self.requests += 1
        try:
            response = await http.get(path, params={**self.settings.params(), **params})
        except httpx.TransportError as exc:
            raise _transport_failure(exc) from None
        self._answered = True
        content_type = response.headers.get("Content-Type", "")
        _foreign(self.settings, response.status_code, content_type, path, json_expected)
        if response.status_code >= 400:
            raise _error_for(response.status_code, response.text, self.settings, content_type)
        return response

    async def evaluation(self, http: Any, eval_id: str, index: int | None = None) -> tuple[Evaluation, int]:
        data, idx = await self.get(http, f"/v1/evaluation/{eval_id}", index=index)
        return Evaluation.model_validate(data), idx

    async def allocations(self, http: Any, job_id: str, index: int | None = None) -> tuple[list[Allocation], int]:
        data, idx = await self.get(http, f"/v1/job/{job_id}/allocations", index=index)
        return [Allocation.model_validate(a) for a in data or []], idx

    async def latest_deployment(
        self, http: Any, job_id: str, index: int | None = None
    ) -> tuple[Deployment | None, int]:
        data, idx = await self.get(http, f"/v1/job/{job_id}/deployment", index=index)
        return (Deployment.model_validate(data) if data else None), idx

    async def allocation(self, http: Any, alloc_id: str) -> Allocation:
        data, _ = await self.get(http, f"/v1/allocation/{alloc_id}")
        return Allocation.model_validate(data)

    async def nodes(self, http: Any) -> list[dict[str, Any]]:
        data, _ = await self.get(http, "/v1/nodes", params={"resources": "true"})
        return list(data or [])

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
        import httpx

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
                failure: TransientError = _transport_failure(exc)
                failure.args = (f"the log stream from Nomad broke: {exc or type(exc).__name__}",)
            except TransientError as exc:
                failure = exc
            if delivered:
                raise failure
            await asyncio.sleep(self._next_pause(failure, attempt, started))
            attempt += 1
