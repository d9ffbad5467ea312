"""The choice of an instance for a request: least outstanding requests, round robin, failed ones last."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..discovery import Endpoint

EJECT_SECONDS = 5.0  # how long an instance that refused a connection is tried last, until Consul catches up


class Balancer:
    """Orders the healthy instances of a model for one request: least outstanding requests first, equal loads
    in round-robin order, instances that recently refused a connection last (they are still tried: Consul may
    be slower to notice a recovery than a failure)."""

    def __init__(self, eject_seconds: float = EJECT_SECONDS) -> None:
        self.eject_seconds = eject_seconds
        self.inflight: dict[tuple[str, int], int] = {}
        self._ejected: dict[tuple[str, int], float] = {}
        self._turns: dict[str, int] = {}

    def order(self, model: str, instances: tuple[Endpoint, ...]) -> Sequence[Endpoint]:
        """`instances` in the order to try them for one request."""
        count = len(instances)
        if count == 1:
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

    def _is_ejected(self, endpoint: Endpoint, now: float) -> bool:
        key = (endpoint.address, endpoint.port)
        until = self._ejected.get(key)
        if until is None:
            return False
        if until <= now:
            del self._ejected[key]
            return False
        return True
