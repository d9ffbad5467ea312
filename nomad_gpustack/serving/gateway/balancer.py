"""The choice of an instance for a request: least outstanding requests, round robin, failed ones last or out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..discovery import Endpoint, RoutingTable

EJECT_SECONDS = 5.0  # how long an instance that refused a connection is tried last, until Consul catches up
EJECT_AFTER = 3  # timeouts or failed connections in a row that take an instance out of rotation


class Balancer:
    """Orders the healthy instances of a model for one request: least outstanding requests first, equal loads
    in round-robin order, instances that recently refused a connection last (they are still tried: Consul may
    be slower to notice a recovery than a failure).

    An instance that timed out or refused the connection `eject_after` times in a row is out of rotation until
    the routing table shows it afresh: it left the passing instances (its check failed, or it was deregistered)
    and came back. A GPU server can hang while its health check still passes; this keeps requests off it.
    """

    def __init__(self, eject_seconds: float = EJECT_SECONDS, eject_after: int = EJECT_AFTER) -> None:
        self.eject_seconds = eject_seconds
        self.eject_after = eject_after
        self.inflight: dict[tuple[str, int], int] = {}
        self._ejected: dict[tuple[str, int], float] = {}
        self._turns: dict[str, int] = {}
        self._failures: dict[tuple[str, int], int] = {}
        self._out: dict[tuple[str, int], Endpoint] = {}

    @property
    def out(self) -> list[Endpoint]:
        """The instances out of rotation."""
        return list(self._out.values())

    def order(self, model: str, instances: tuple[Endpoint, ...]) -> Sequence[Endpoint]:
        """`instances` in the order to try them for one request, without those out of rotation."""
        if self._out:
            instances = tuple(e for e in instances if self._out.get((e.address, e.port)) != e)
        count = len(instances)
        if count <= 1:
            return instances
        turn = self._turns.get(model, 0)
        self._turns[model] = turn + 1
        start = turn % count
        rotated = instances[start:] + instances[:start]
        now = time.monotonic() if self._ejected else 0.0
        # sorted() is stable: equal keys keep the rotated order, which is what makes ties round robin.
        return sorted(rotated, key=lambda e: (self._is_ejected(e, now), self.inflight.get((e.address, e.port), 0)))

    def acquire(self, endpoint: Endpoint) -> None:
        """Count a request sent to `endpoint`."""
        key = (endpoint.address, endpoint.port)
        self.inflight[key] = self.inflight.get(key, 0) + 1

    def release(self, endpoint: Endpoint) -> None:
        """Count a request of `endpoint` as finished."""
        key = (endpoint.address, endpoint.port)
        left = self.inflight.get(key, 1) - 1
        if left > 0:
            self.inflight[key] = left
        else:
            self.inflight.pop(key, None)  # no entry per instance that ever existed: the table changes

    def eject(self, endpoint: Endpoint) -> None:
        """Try `endpoint` last for a while: it just refused a connection."""
        self._ejected[(endpoint.address, endpoint.port)] = time.monotonic() + self.eject_seconds

    def failed(self, endpoint: Endpoint) -> bool:
        """Count a timeout or a failed connection of `endpoint`; True when this one takes it out of rotation."""
        key = (endpoint.address, endpoint.port)
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        self.eject(endpoint)
        if failures >= self.eject_after and key not in self._out:
            self._out[key] = endpoint
            return True
        return False

    def succeeded(self, endpoint: Endpoint) -> None:
        """`endpoint` answered in full: its failures are no longer in a row."""
        if self._failures:
            self._failures.pop((endpoint.address, endpoint.port), None)

    def observe(self, table: RoutingTable) -> list[Endpoint]:
        """Forget what failed of the instances that `table` does not show passing as they were; returns those
        that were out of rotation. They come back when a later table shows them passing."""
        passing = {e for instances in table.routes.values() for e in instances}
        back = [e for e in self._out.values() if e not in passing]
        for endpoint in back:
            del self._out[(endpoint.address, endpoint.port)]
        keys = {(e.address, e.port) for e in passing}
        for key in [k for k in self._failures if k not in keys]:
            del self._failures[key]
        return back

    def _is_ejected(self, endpoint: Endpoint, now: float) -> bool:
        key = (endpoint.address, endpoint.port)
        until = self._ejected.get(key)
        if until is None:
            return False
        if until <= now:
            del self._ejected[key]
            return False
        return True
