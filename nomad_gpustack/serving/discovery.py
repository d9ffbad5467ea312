"""Where the models run: instances of our services read back from Consul or from Nomad's service API.

Pure parsing functions turn API answers into `Endpoint`s and a `RoutingTable`; the I/O functions around them
fetch those answers once (`discover`, for the CLI) or follow Consul with blocking queries (`ConsulWatcher`,
for the gateway). Our services are the ones tagged `nomadgs`; model, backend and version come from the meta
keys the compiler writes, or from the `model=`/`backend=`/`version=` tags where there is no meta (Nomad's
native services have none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..compile.metadata import is_ours, model_labels, service_job
from ..errors import EXIT_CONNECTION, NomadgsError

if TYPE_CHECKING:
    import httpx

    from ..nomad.client import NomadAPI
    from ..settings import ConsulSettings, NomadSettings

log = logging.getLogger("nomadgs.discovery")

Health = Literal["passing", "warning", "critical"]
Provider = Literal["consul", "nomad"]

HEALTHS: tuple[Health, ...] = ("passing", "warning", "critical")  # from best to worst
HEALTH_ORDER: dict[str, int] = {name: rank for rank, name in enumerate(HEALTHS)}
# Nomad's check results (`GET /v1/client/allocation/:id/checks`) in Consul's words. A pending check has not
# run yet: like Consul, which starts every check critical, we send no traffic until it has passed once.
NOMAD_CHECK_HEALTH: dict[str, Health] = {"success": "passing", "failure": "critical", "pending": "critical"}
# Nomad registers its services in Consul as `_nomad-task-<alloc id>-<task>-<service>-<port label>`.
NOMAD_SERVICE_ID = re.compile(r"_nomad-(?:task|group)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-")


class DiscoveryError(NomadgsError):
    """Consul could not be reached, refused the request or answered something unusable."""

    exit_code = EXIT_CONNECTION


class NoInstanceError(NomadgsError):
    """The model asked for has no (healthy) instance."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One running instance of a model, as a service registration says."""

    model: str
    service: str
    service_id: str
    address: str
    port: int
    health: Health
    backend: str | None = None
    version: str | None = None
    node: str | None = None
    alloc_id: str | None = None
    job_id: str | None = None
    provider: Provider = "consul"

    @property
    def origin(self) -> str:
        """`http://address:port`, with an IPv6 address in brackets."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of this instance."""
        return f"{self.origin}/v1"

    @property
    def passing(self) -> bool:
        return self.health == "passing"

    def to_json(self) -> dict[str, Any]:
        """The fields `nomadgs endpoints --output json` shows, base URL included."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "health": self.health,
            "backend": self.backend,
            "version": self.version,
            "service": self.service,
            "service_id": self.service_id,
            "address": self.address,
            "port": self.port,
            "node": self.node,
            "alloc_id": self.alloc_id,
            "job_id": self.job_id,
            "provider": self.provider,
        }


@dataclass(frozen=True)
class RoutingTable:
    """A consistent view of every instance; `routes` keeps only the passing ones, per model."""

    endpoints: tuple[Endpoint, ...] = ()
    routes: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Every model with at least one registered instance, healthy or not, sorted."""
        return sorted({e.model for e in self.endpoints})

    def knows(self, model: str) -> bool:
        return any(e.model == model for e in self.endpoints)

    def instances(self, model: str) -> list[Endpoint]:
        """Every instance of `model`, healthy or not."""
        return [e for e in self.endpoints if e.model == model]


def build_table(endpoints: Iterable[Endpoint]) -> RoutingTable:
    """Index endpoints by model; sorted so that equal inputs give equal tables whatever the answer order."""
    ordered = tuple(sorted(endpoints, key=lambda e: (e.model, e.service, e.service_id, e.address, e.port)))
    routes: dict[str, list[Endpoint]] = {}
    for endpoint in ordered:
        if endpoint.passing:
            routes.setdefault(endpoint.model, []).append(endpoint)
    return RoutingTable(ordered, {model: tuple(items) for model, items in routes.items()})


# ----------------------------------------------------------------------------------------------------
# Parsing: API answers to endpoints, no I/O.


def worst_health(statuses: Iterable[str]) -> Health:
    """Consul's rule: an instance is as healthy as its worst check; no checks at all means passing."""
    worst = 0
    for status in statuses:
        # An unknown status is not evidence of health: count it as critical.
        worst = max(worst, HEALTH_ORDER.get(status, len(HEALTHS) - 1))
    return HEALTHS[worst]


def alloc_id_from_service_id(service_id: str) -> str | None:
    """The allocation ID inside the ID that Nomad gives the Consul services it registers."""
    match = NOMAD_SERVICE_ID.match(service_id)
    return match.group(1) if match else None


def parse_consul_health(entries: Any) -> list[Endpoint]:
    """Endpoints from a `GET /v1/health/service/:name` answer; services not tagged `nomadgs` are left out.

    Health counts every check of the entry, the node's own (serfHealth, maintenance) included, as Consul does.
    """
    if not isinstance(entries, list):
        raise DiscoveryError("Consul answered a health query with something that is not a list")
    endpoints = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        service = entry.get("Service") or {}
        node = entry.get("Node") or {}
        tags = service.get("Tags") or []
        if not is_ours(tags):
            continue
        port = service.get("Port")
        # An empty service address means "the node's address" in Consul.
        address = service.get("Address") or node.get("Address")
        if not isinstance(port, int) or port <= 0 or not address:
            continue
        name = str(service.get("Service") or "")
        service_id = str(service.get("ID") or name)
        meta = service.get("Meta") or {}
        model, backend, version = model_labels(name, tags, meta)
        checks = entry.get("Checks") or []
        endpoints.append(
            Endpoint(
                model=model,
                service=name,
                service_id=service_id,
                address=str(address),
                port=port,
                health=worst_health(str(c.get("Status", "")) for c in checks if isinstance(c, dict)),
                backend=backend,
                version=version,
                node=node.get("Node") or None,
                alloc_id=alloc_id_from_service_id(service_id),
                job_id=service_job(meta),
                provider="consul",
            )
        )
    return endpoints


def parse_consul_services(answer: Any) -> list[str]:
    """Names of our services in a `GET /v1/catalog/services` answer (`{name: [tags]}`)."""
    if not isinstance(answer, dict):
        raise DiscoveryError("Consul answered the catalog query with something that is not an object")
    return sorted(name for name, tags in answer.items() if isinstance(tags, list) and is_ours(tags))


def parse_nomad_services(answer: Any) -> list[tuple[str, str]]:
    """(namespace, name) of our services in a `GET /v1/services` answer."""
    if not isinstance(answer, list):
        raise DiscoveryError("Nomad answered the service list with something that is not a list")
    found = []
    for group in answer:
        if not isinstance(group, dict):
            continue
        namespace = str(group.get("Namespace") or "default")
        for service in group.get("Services") or []:
            if isinstance(service, dict) and is_ours(service.get("Tags")):
                found.append((namespace, str(service.get("ServiceName"))))
    return sorted(found)


def nomad_check_health(checks: Any, service: str) -> Health:
    """Health of one service of an allocation from its `GET /v1/client/allocation/:id/checks` answer.

    Only healthiness checks count: readiness checks say whether to send traffic during a deployment, and Nomad
    itself leaves them out of the allocation's health.
    """
    if not isinstance(checks, dict):
        return "critical"
    statuses = [
        NOMAD_CHECK_HEALTH.get(str(c.get("Status")), "critical")
        for c in checks.values()
        if isinstance(c, dict) and c.get("Service") == service and c.get("Mode", "healthiness") == "healthiness"
    ]
    return worst_health(statuses)


def parse_nomad_registrations(registrations: Any, checks_by_alloc: Mapping[str, Any]) -> list[Endpoint]:
    """Endpoints from a `GET /v1/service/:name` answer and the checks of the allocations it names."""
    if not isinstance(registrations, list):
        raise DiscoveryError("Nomad answered a service query with something that is not a list")
    endpoints = []
    for reg in registrations:
        if not isinstance(reg, dict):
            continue
        tags = reg.get("Tags") or []
        port = reg.get("Port")
        address = reg.get("Address")
        if not is_ours(tags) or not isinstance(port, int) or port <= 0 or not address:
            continue
        name = str(reg.get("ServiceName") or "")
        alloc_id = str(reg.get("AllocID") or "") or None
        model, backend, version = model_labels(name, tags, {})
        endpoints.append(
            Endpoint(
                model=model,
                service=name,
                service_id=str(reg.get("ID") or name),
                address=str(address),
                port=port,
                health=nomad_check_health(checks_by_alloc.get(alloc_id or ""), name),
                backend=backend,
                version=version,
                node=reg.get("NodeID") or None,
                alloc_id=alloc_id,
                job_id=reg.get("JobID") or None,
                provider="nomad",
            )
        )
    return endpoints


def next_index(previous: int, returned: int) -> int:
    """The index for the next blocking query, with Consul's sanity rules.

    An index that goes backwards (a snapshot restore, a new leader) resets to 0, which reads the current state
    at once; an index below 1 would return immediately for ever, so it is raised to 1.
    """
    if returned < previous:
        return 0
    return max(returned, 1)


def header_index(headers: Mapping[str, str], name: str) -> int:
    """A blocking-query index header (`X-Consul-Index`, `X-Nomad-Index`); 0 when absent or malformed."""
    try:
        return int(headers.get(name, "0"))
    except ValueError:
        return 0


# ----------------------------------------------------------------------------------------------------
# I/O: one-shot reads.


async def _get_json(client: httpx.AsyncClient, path: str, what: str, params: Mapping[str, str]) -> httpx.Response:
    """GET a JSON answer; every transport or HTTP failure becomes a DiscoveryError with a plain message."""
    import httpx

    try:
        response = await client.get(path, params=params)
    except httpx.TimeoutException:
        raise DiscoveryError(f"{what} at {client.base_url} did not answer in time") from None
    except httpx.TransportError as exc:
        raise DiscoveryError(f"cannot reach {what} at {client.base_url}: {exc or type(exc).__name__}") from None
    status = response.status_code
    if status in (401, 403):
        raise DiscoveryError(
            f"{what} refused the request ({status}: {_first_line(response.text)}); check the ACL token"
        )
    if status >= 400:
        raise DiscoveryError(f"{what} answered {status} to GET {path}: {_first_line(response.text)}")
    try:
        response.json()
    except ValueError:
        raise DiscoveryError(f"{what} answered GET {path} with something that is not JSON") from None
    return response


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or ["(empty answer)"])[0][:200]


def _consul_params(settings: ConsulSettings, index: int | None = None, wait: float | None = None) -> dict[str, str]:
    params: dict[str, str] = {}
    if settings.datacenter:
        params["dc"] = settings.datacenter
    if index is not None:
        params["index"] = str(index)
    if wait is not None:
        params["wait"] = f"{math.ceil(wait)}s"
    return params


async def consul_services(
    client: httpx.AsyncClient,
    settings: ConsulSettings,
    *,
    index: int | None = None,
    wait: float | None = None,
) -> tuple[int, list[str]]:
    """(X-Consul-Index, names of our services) from the catalog; blocking when `index` is given."""
    response = await _get_json(client, "/v1/catalog/services", "Consul", _consul_params(settings, index, wait))
    return header_index(response.headers, "X-Consul-Index"), parse_consul_services(response.json())


async def consul_service_health(
    client: httpx.AsyncClient,
    settings: ConsulSettings,
    name: str,
    *,
    index: int | None = None,
    wait: float | None = None,
) -> tuple[int, list[Endpoint]]:
    """(X-Consul-Index, every instance of one service with its health); blocking when `index` is given."""
    from urllib.parse import quote

    response = await _get_json(
        client, f"/v1/health/service/{quote(name, safe='')}", "Consul", _consul_params(settings, index, wait)
    )
    return header_index(response.headers, "X-Consul-Index"), parse_consul_health(response.json())


async def consul_endpoints(settings: ConsulSettings) -> list[Endpoint]:
    """Every instance of our services registered in Consul, healthy or not."""
    async with settings.httpx_client(asynchronous=True) as client:
        _, names = await consul_services(client, settings)
        answers = await asyncio.gather(*(consul_service_health(client, settings, n) for n in names))
    return [endpoint for _, endpoints in answers for endpoint in endpoints]


async def nomad_endpoints(settings: NomadSettings) -> list[Endpoint]:
    """Every instance of our services registered with Nomad's own service provider, healthy or not.

    Nomad's errors are the shared client's (`nomadapi`): unreachable or refused is exit code 5.
    """
    from urllib.parse import quote

    from ..nomad.client import NomadAPI

    api = NomadAPI(settings)
    async with api.async_client() as http:
        listing, _ = await api.get(http, "/v1/services")
        services = parse_nomad_services(listing)
        answers = await asyncio.gather(
            *(api.get(http, f"/v1/service/{quote(name, safe='')}", params={"namespace": ns}) for ns, name in services)
        )
        registrations = [regs for regs, _ in answers]
        alloc_ids = sorted(
            {str(reg["AllocID"]) for regs in registrations if isinstance(regs, list)
             for reg in regs if isinstance(reg, dict) and reg.get("AllocID")}
        )  # fmt: skip
        checks = await asyncio.gather(*(_alloc_checks(api, http, alloc) for alloc in alloc_ids))
    by_alloc = dict(zip(alloc_ids, checks, strict=True))
    return [e for regs in registrations for e in parse_nomad_registrations(regs, by_alloc)]


async def _alloc_checks(api: NomadAPI, http: httpx.AsyncClient, alloc_id: str) -> Any:
    """The checks of one allocation, or None (so: unhealthy) when its Nomad client cannot tell."""
    from ..nomad.client import NomadDenied, NomadError, NomadUnavailable

    try:
        checks, _ = await api.get(http, f"/v1/client/allocation/{alloc_id}/checks")
    except (NomadUnavailable, NomadDenied):
        raise  # Nomad itself is out of reach or refuses us: not a matter of one allocation
    except NomadError as exc:
        log.debug("no checks for allocation %s: %s", alloc_id, exc)
        return None
    return checks


def discover(*, consul: ConsulSettings | None = None, nomad: NomadSettings | None = None) -> list[Endpoint]:
    """Every instance of our services from the providers given, in table order (model, service, id)."""

    async def gather() -> list[Endpoint]:
        found: list[Endpoint] = []
        if consul is not None:
            found += await consul_endpoints(consul)
        if nomad is not None:
            found += await nomad_endpoints(nomad)
        return found

    return list(build_table(asyncio.run(gather())).endpoints)


# ----------------------------------------------------------------------------------------------------
# I/O: following Consul.

T = TypeVar("T")


class ConsulWatcher:
    """Keeps `table` up to date with Consul, using blocking queries only (no polling at a fixed interval).

    One query follows the catalog (which of our services exist); one query per service follows its instances
    and their checks. Each answer replaces the service's part of the table at once, so a check that turns
    critical is out of `routes` as soon as Consul knows. While Consul is unreachable the last table stays in
    use and the queries are retried with a growing pause.
    """

    def __init__(
        self,
        settings: ConsulSettings,
        *,
        wait: float = 55.0,
        on_change: Callable[[RoutingTable], None] | None = None,
    ) -> None:
        self.settings = settings
        self.wait = wait
        self.table = RoutingTable()
        self._on_change = on_change
        self._client: httpx.AsyncClient | None = None
        self._services: dict[str, list[Endpoint]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._catalog_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the whole state once (raising DiscoveryError when Consul cannot be read), then follow it."""
        if self._client is not None:
            return
        # Consul may hold a blocking query for wait + wait/16: the read timeout must be longer than that.
        self._client = self.settings.httpx_client(timeout=self.wait * 1.1 + 10, asynchronous=True)
        try:
            catalog_index, names = await consul_services(self._client, self.settings)
            answers = await asyncio.gather(*(consul_service_health(self._client, self.settings, n) for n in names))
        except BaseException:
            await self.stop()
            raise
        for name, (index, endpoints) in zip(names, answers, strict=True):
            self._services[name] = endpoints
            self._tasks[name] = asyncio.create_task(self._follow_service(name, next_index(0, index)))
        self._publish()
        self._catalog_task = asyncio.create_task(self._follow_catalog(next_index(0, catalog_index)))

    async def stop(self) -> None:
        """Stop following Consul; the last table stays readable."""
        tasks = [t for t in (self._catalog_task, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._catalog_task = None
        self._tasks.clear()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def _consul(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the watcher is not started")
        return self._client

    async def _follow_catalog(self, index: int) -> None:
        async for names in self._blocking(
            index, lambda i: consul_services(self._consul, self.settings, index=i, wait=self.wait)
        ):
            current = set(names)
            for gone in set(self._tasks) - current:
                self._tasks.pop(gone).cancel()
                self._services.pop(gone, None)
            for new in current - set(self._tasks):
                # Index 0 reads the new service at once; its loop then blocks on the index it got.
                self._tasks[new] = asyncio.create_task(self._follow_service(new, 0))
            self._publish()

    async def _follow_service(self, name: str, index: int) -> None:
        async for endpoints in self._blocking(
            index, lambda i: consul_service_health(self._consul, self.settings, name, index=i, wait=self.wait)
        ):
            if endpoints != self._services.get(name):
                self._services[name] = endpoints
                self._publish()

    async def _blocking(self, index: int, query: Callable[[int], Awaitable[tuple[int, T]]]) -> AsyncIterator[T]:
        """Run a blocking query for ever; yield its result each time the index moves."""
        from ..nomad.client import sleep_backoff

        attempt = 0
        while True:
            started = time.monotonic()
            try:
                returned, result = await query(index)
            except DiscoveryError as exc:
                delay = await sleep_backoff(attempt)
                attempt += 1
                log.warning("%s; retried after %.1fs", exc, delay)
                continue
            attempt = 0
            if returned == index and index > 0:
                # The wait ran out without a change. An unchanged index that comes back at once would spin:
                # Consul's documentation asks clients to rate-limit that case.
                if time.monotonic() - started < 0.05:
                    await asyncio.sleep(0.1)
                continue
            index = next_index(index, returned)
            yield result

    def _publish(self) -> None:
        table = build_table(e for endpoints in self._services.values() for e in endpoints)
        if table == self.table:
            return
        self.table = table  # one assignment: readers see either the old or the new table, never a mix
        if self._on_change is not None:
            self._on_change(table)
