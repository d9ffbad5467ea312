"""Where the gateway reads its routing table: `ConsulWatcher` in production, `StaticSource` otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from ..discovery import Endpoint, RoutingTable, build_table
from ..scrape import ScrapeTarget


class RouteSource(Protocol):
    """Where the gateway reads its routing table; `table` must be cheap to read on every request."""

    @property
    def table(self) -> RoutingTable: ...

    @property
    def datacenter(self) -> str: ...

    def scrape_targets(self) -> list[ScrapeTarget]:
        """The instances that serve Prometheus metrics, for the gateway's HTTP service discovery."""
        ...

    def subscribe(self, listener: Callable[[RoutingTable], None]) -> None:
        """Call `listener(table)` after each change of the table (from any thread: listeners hand the news to
        their own event loop themselves)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class StaticSource:
    """A routing table set by hand: for tests, benchmarks, and gateways in front of fixed instances."""

    datacenter = ""

    def __init__(self, endpoints: Iterable[Endpoint] = (), targets: Iterable[ScrapeTarget] = ()) -> None:
        self.table = build_table(endpoints)
        self.targets = list(targets)
        self._listeners: list[Callable[[RoutingTable], None]] = []

    def scrape_targets(self) -> list[ScrapeTarget]:
        return self.targets

    def set(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the table."""
        self.table = table = build_table(endpoints)
        for listener in self._listeners:
            listener(table)

    def subscribe(self, listener: Callable[[RoutingTable], None]) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
