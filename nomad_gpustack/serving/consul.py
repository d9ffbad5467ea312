"""Consul's side of discovery: one-shot reads of our services, and `ConsulWatcher`, which follows them.

Every read goes through the one blocking-query loop (`nomad.blocking.follow`); answers are parsed by the pure
functions of `serving.discovery`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx

from .. import unreachable
from ..answers import WrongShape, foreign_answer, html_page, shaped
from ..contract.metadata import TAG_MARKER
from ..nomad import blocking
from .discovery import (
    CheckMark,
    DiscoveryError,
    Endpoint,
    RoutingTable,
    build_table,
    check_marks,
    has_unchecked_instance,
    parse_consul_catalog,
    parse_consul_health,
    parse_consul_services,
)
from .scrape import ScrapeTarget, consul_targets

if TYPE_CHECKING:
    from ..settings import ConsulSettings

log = logging.getLogger("nomadgs.discovery")
T = TypeVar("T")


@dataclass(frozen=True)
class KVEntry:
    """One key of Consul's key/value store: its name, value and ModifyIndex (for a check-and-set)."""

    key: str
    value: bytes
    modify_index: int


# ----------------------------------------------------------------------------------------------------
# One-shot reads.


# The shapes of Consul's answers (`answers.shaped`); `serving.discovery` reads the values. An answer of another
# shape comes from something else at the address.
_CATALOG = dict[str, list[str] | None]  # GET /v1/catalog/services: service name -> its tags
_HEALTH = list[dict[str, Any]]  # GET /v1/health/service/:name: one {Node, Service, Checks} per instance


class ConsulDenied(DiscoveryError):
    """Consul refused the request (401 or 403): the token lacks a permission."""


async def _send(
    client: httpx.AsyncClient,
    settings: ConsulSettings,
    method: str,
    path: str,
    params: Mapping[str, str],
    *,
    content: bytes | None = None,
    never_missing: bool = True,
) -> httpx.Response:
    """Send one request; every transport failure, a refusal (ConsulDenied), an error status and an answer that is
    not Consul's become a DiscoveryError with a plain message. `never_missing`: a 404 means another server."""
    try:
        response = await client.request(method, path, params=params, content=content)
    except httpx.TimeoutException:
        raise DiscoveryError(f"Consul at {settings.address} did not answer in time") from None
    except httpx.TransportError as exc:
        reason = unreachable.cause(exc, tls_hint=_TLS_HINT, otherwise=str(exc) or type(exc).__name__)
        raise DiscoveryError(
            f"cannot reach Consul at {settings.address}: {reason} (set CONSUL_HTTP_ADDR or --consul-address)"
        ) from None
    status = response.status_code
    content_type = response.headers.get("Content-Type", "")
    foreign = foreign_answer(status, content_type, path, never_missing=lambda _: never_missing)
    if foreign is not None:
        raise _not_consul(settings, foreign)
    text = "an HTML page" if html_page(content_type, response.text) else _first_line(response.text)
    if status in (401, 403):
        raise ConsulDenied(f"Consul refused the request ({status}: {text}); check the ACL token")
    if status >= 400 and not (status == 404 and not never_missing):
        raise DiscoveryError(f"Consul answered {status} to {method} {path}: {text}")
    return response


async def _get_json(
    client: httpx.AsyncClient, settings: ConsulSettings, path: str, params: Mapping[str, str], shape: type[T]
) -> tuple[T, int]:
    """GET a JSON answer as `shape`, with its X-Consul-Index (errors as `_send`'s)."""
    # Consul answers every path read here (an unknown service is an empty list): a 404 means another server.
    response = await _send(client, settings, "GET", path, params)
    return _json_as(settings, response, path, shape), blocking.header_index(response.headers, "X-Consul-Index")


def _json_as(settings: ConsulSettings, response: httpx.Response, path: str, shape: type[T]) -> T:
    """An answer's JSON as `shape`; JSON of another shape, or none, means another server than Consul."""
    try:
        return shaped(shape, response.json(), path)
    except WrongShape as exc:
        raise _not_consul(settings, str(exc)) from None
    except ValueError:
        raise _not_consul(settings, f"the answer to {path} is not JSON") from None


_TLS_HINT = "set CONSUL_CACERT, or CONSUL_TLS_SERVER_NAME"


def _not_consul(settings: ConsulSettings, reason: str) -> DiscoveryError:
    return DiscoveryError(
        f"{settings.address} is not a Consul HTTP API ({reason}); check CONSUL_HTTP_ADDR or --consul-address"
    )


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
) -> tuple[list[str], int]:
    """(names of our services, X-Consul-Index) from the catalog; blocking when `index` is given."""
    catalog, new_index = await _get_json(
        client, settings, "/v1/catalog/services", _consul_params(settings, index, wait), _CATALOG
    )
    return parse_consul_services(catalog), new_index


async def consul_service_entries(
    client: httpx.AsyncClient,
    settings: ConsulSettings,
    name: str,
    *,
    index: int | None = None,
    wait: float | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """(Consul's answer about every instance of one service: node, service, checks; X-Consul-Index); blocking
    when `index` is given."""
    return await _get_json(
        client, settings, f"/v1/health/service/{quote(name, safe='')}", _consul_params(settings, index, wait), _HEALTH
    )


async def consul_service_health(
    client: httpx.AsyncClient,
    settings: ConsulSettings,
    name: str,
    *,
    index: int | None = None,
    wait: float | None = None,
) -> tuple[list[Endpoint], int]:
    """(every instance of one service with its health, X-Consul-Index); blocking when `index` is given."""
    entries, new_index = await consul_service_entries(client, settings, name, index=index, wait=wait)
    return parse_consul_health(entries), new_index


async def consul_endpoints(settings: ConsulSettings) -> list[Endpoint]:
    """Every instance of our services registered in Consul, healthy or not."""
    async with settings.httpx_client(asynchronous=True) as client:
        names, _ = await consul_services(client, settings)
        reads = asyncio.Semaphore(READS_AT_ONCE)

        async def one(name: str) -> tuple[list[Endpoint], int]:
            async with reads:
                return await consul_service_health(client, settings, name)

        answers = await asyncio.gather(*(one(n) for n in names))
    return [endpoint for endpoints, _ in answers for endpoint in endpoints]


# ----------------------------------------------------------------------------------------------------
# The key/value store (the gateways' shared last activity, `serving.gateway.activity`).

_KV = list[dict[str, Any]]  # GET /v1/kv/:prefix?recurse: one {Key, Value (base64 or null), ModifyIndex, ...} per key


def _kv_path(key: str) -> str:
    # Slashes separate the key's parts; anything else a path cannot carry as is is escaped.
    return "/v1/kv/" + quote(key, safe="/")


async def consul_kv_list(client: httpx.AsyncClient, settings: ConsulSettings, prefix: str) -> list[KVEntry]:
    """Every key under `prefix`, with its value and ModifyIndex (`GET /v1/kv/:prefix?recurse`); none: []."""
    path = _kv_path(prefix)
    params = {**_consul_params(settings), "recurse": "true"}
    # No key under the prefix is a 404 (agent/kvs_endpoint.go KVSGet): an empty list, not another server.
    response = await _send(client, settings, "GET", path, params, never_missing=False)
    if response.status_code == 404:
        return []
    entries = _json_as(settings, response, path, _KV)
    found = []
    for entry in entries:
        key, value, index = entry.get("Key"), entry.get("Value"), entry.get("ModifyIndex")
        if not isinstance(key, str) or not isinstance(index, int):
            raise _not_consul(settings, f"an entry of the answer to {path} has no Key or ModifyIndex")
        try:
            raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        except ValueError:
            raw = b""  # not base64: no value to read, as an empty one
        found.append(KVEntry(key, raw, index))
    return found


async def consul_kv_put(client: httpx.AsyncClient, settings: ConsulSettings, key: str, value: bytes) -> None:
    """Set `key` to `value` (`PUT /v1/kv/:key`)."""
    await _send(client, settings, "PUT", _kv_path(key), _consul_params(settings), content=value)


async def consul_kv_delete(
    client: httpx.AsyncClient, settings: ConsulSettings, key: str, *, cas: int | None = None
) -> None:
    """Delete `key` (`DELETE /v1/kv/:key`); with `cas`, only while its ModifyIndex is still that (a key written
    meanwhile stays)."""
    params = _consul_params(settings)
    if cas is not None:
        params["cas"] = str(cas)
    await _send(client, settings, "DELETE", _kv_path(key), params)


# ----------------------------------------------------------------------------------------------------
# Following Consul.

READS_AT_ONCE = 8  # services read at once after a change: the watcher's connections stay bounded
# The checks of our services and every node's own checks (serfHealth, maintenance), which count in an
# instance's health. Filtered again on our side: a Consul without `filter` (before 1.5) answers every check.
_CHECKS_FILTER = f'"{TAG_MARKER}" in ServiceTags or ServiceID == ""'


async def consul_catalog(
    client: httpx.AsyncClient, settings: ConsulSettings, *, index: int | None = None, wait: float | None = None
) -> tuple[dict[str, tuple[str, ...]], int]:
    """(our services and their tags, X-Consul-Index) from the catalog; blocking when `index` is given."""
    catalog, new_index = await _get_json(
        client, settings, "/v1/catalog/services", _consul_params(settings, index, wait), _CATALOG
    )
    return parse_consul_catalog(catalog), new_index


async def consul_check_marks(
    client: httpx.AsyncClient, settings: ConsulSettings, *, index: int | None = None, wait: float | None = None
) -> tuple[dict[str, frozenset[CheckMark]], int]:
    """(what the check list says of each of our services, X-Consul-Index); blocking when `index` is given."""
    params = {**_consul_params(settings, index, wait), "filter": _CHECKS_FILTER}
    checks, new_index = await _get_json(client, settings, "/v1/health/state/any", params, _HEALTH)
    return check_marks(checks), new_index


class ConsulWatcher:
    """Keeps `table` up to date with Consul, using blocking queries only (no polling at a fixed interval).

    Two blocking queries follow the whole fleet, whatever its size (as Fabio does): the catalog (which of our
    services exist, and their tags) and the check list (`/v1/health/state/any`: every check of our services and
    of the nodes they run on). When either moves, only the services it shows changed are read again
    (`/v1/health/service/:name`, at most READS_AT_ONCE at a time), and each read replaces the service's part of
    the table at once: a check that turns critical is out of `routes` as soon as Consul knows. One query per
    service would not scale: past the client's pool of connections the long polls queue behind each other, and
    a change waits for a poll's wait to run out. A service with an instance that has no check of its own is
    read again whenever the catalog moves, since the check list cannot show it. While Consul is unreachable the
    last table stays in use and the queries are retried with a growing pause.
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
        self._listeners: list[Callable[[RoutingTable], None]] = [on_change] if on_change is not None else []
        self._client: httpx.AsyncClient | None = None
        self._catalog: dict[str, tuple[str, ...]] = {}  # our services and their tags
        self._marks: dict[str, frozenset[CheckMark]] = {}
        self._services: dict[str, list[Endpoint]] = {}
        self._entries: dict[str, list[dict[str, Any]]] = {}  # Consul's last answer per service, for scrape_targets
        self._unchecked: set[str] = set()  # services the check list cannot follow alone
        self._tasks: list[asyncio.Task[None]] = []
        self._reads = asyncio.Semaphore(READS_AT_ONCE)
        # Both queries may read one service at once: a read started later is newer, and an older one that
        # ends after it must not put its answer back.
        self._started = itertools.count()
        self._applied: dict[str, int] = {}

    async def start(self) -> None:
        """Read the whole state once (raising DiscoveryError when Consul cannot be read), then follow it."""
        if self._client is not None:
            return
        # Consul may hold a blocking query for wait + wait/16: the read timeout must be longer than that. Two
        # long polls and the reads after a change: the pool never needs more.
        self._client = self.settings.httpx_client(timeout=self.wait * 1.1 + 10, asynchronous=True)
        try:
            # The indexes first, the services after: a change in between moves an index, and is read again.
            self._catalog, catalog_index = await consul_catalog(self._client, self.settings)
            self._marks, marks_index = await consul_check_marks(self._client, self.settings)
            await self._read(set(self._catalog))
        except BaseException:
            await self.stop()
            raise
        self._publish()
        self._tasks = [
            asyncio.create_task(self._follow_catalog(blocking.next_index(0, catalog_index))),
            asyncio.create_task(self._follow_checks(blocking.next_index(0, marks_index))),
        ]

    async def stop(self) -> None:
        """Stop following Consul; the last table stays readable."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def _consul(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the watcher is not started")
        return self._client

    def _retried(self, exc: Exception, delay: float) -> None:
        log.warning("%s; retried after %.1fs", exc, delay)

    async def _read(self, names: set[str]) -> None:
        """Read these services again (at most READS_AT_ONCE at a time) and put what Consul says in their place."""

        async def one(name: str) -> tuple[str, int, list[dict[str, Any]]]:
            async with self._reads:
                started = next(self._started)
                entries, _ = await consul_service_entries(self._consul, self.settings, name)
            return name, started, entries

        for name, started, entries in await asyncio.gather(*(one(n) for n in sorted(names))):
            if name not in self._catalog or started < self._applied.get(name, -1):
                continue  # gone from the catalog while it was read, or a newer read has answered
            self._applied[name] = started
            self._entries[name] = entries
            self._services[name] = parse_consul_health(entries)
            if has_unchecked_instance(entries):
                self._unchecked.add(name)
            else:
                self._unchecked.discard(name)

    async def _reread(self, names: set[str]) -> None:
        """Read `names` again, retrying with backoff while Consul cannot be read, then publish the table."""
        attempt = 0
        while names:
            try:
                await self._read(names)
                break
            except DiscoveryError as exc:
                self._retried(exc, await blocking.sleep_backoff(attempt))
                attempt += 1
        self._publish()

    async def _follow_catalog(self, index: int) -> None:
        async for catalog in blocking.follow(
            lambda i: consul_catalog(self._consul, self.settings, index=i, wait=self.wait),
            retry_on=DiscoveryError,
            on_retry=self._retried,
            index=index,
        ):
            previous, self._catalog = self._catalog, catalog
            for gone in set(previous) - set(catalog):
                self._services.pop(gone, None)
                self._entries.pop(gone, None)
                self._applied.pop(gone, None)
                self._unchecked.discard(gone)
            moved = {name for name, tags in catalog.items() if previous.get(name) != tags}
            await self._reread(moved | (self._unchecked & set(catalog)))

    async def _follow_checks(self, index: int) -> None:
        async for marks in blocking.follow(
            lambda i: consul_check_marks(self._consul, self.settings, index=i, wait=self.wait),
            retry_on=DiscoveryError,
            on_retry=self._retried,
            index=index,
        ):
            previous, self._marks = self._marks, marks
            moved = {name for name in set(previous) | set(marks) if previous.get(name) != marks.get(name)}
            await self._reread(moved & set(self._catalog))

    def scrape_targets(self) -> list[ScrapeTarget]:
        """The instances that serve Prometheus metrics, labelled as Prometheus' Consul discovery labels them."""
        targets = []
        for name, entries in sorted(self._entries.items()):
            targets += consul_targets(name, entries, self.datacenter)
        return targets

    @property
    def datacenter(self) -> str:
        """The datacenter followed: the one set, else the one Consul's answers name (its agent's)."""
        if self.settings.datacenter:
            return self.settings.datacenter
        for entries in self._entries.values():
            for entry in entries:
                found = (entry.get("Node") or {}).get("Datacenter") if isinstance(entry, dict) else None
                if isinstance(found, str) and found:
                    return found
        return ""

    def _publish(self) -> None:
        table = build_table(e for endpoints in self._services.values() for e in endpoints)
        if table == self.table:
            return
        self.table = table  # one assignment: readers see either the old or the new table, never a mix
        for listener in self._listeners:
            listener(table)

    def subscribe(self, listener: Callable[[RoutingTable], None]) -> None:
        """Call `listener(table)` after each change of the table, as `on_change`."""
        self._listeners.append(listener)
