"""The choice of an instance for a request: least outstanding requests, round robin, failing ones last or out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .outliers import OutlierDetector

if TYPE_CHECKING:
    from ..discovery import Endpoint


class Balancer:
    """Orders the healthy instances of a model for one request: least outstanding requests first, equal loads
    in round-robin order, instances that failed lately last (they are still tried: Consul may be slower to
    notice a recovery than a failure), and without the instances that `outliers` ejected.
    """

    def __init__(self, outliers: OutlierDetector | None = None) -> None:
        self.outliers = outliers or OutlierDetector()
        self.inflight: dict[tuple[str, int], int] = {}
        self._turns: dict[str, int] = {}

    def order(self, model: str, instances: tuple[Endpoint, ...]) -> Sequence[Endpoint]:
        """`instances` in the order to try them for one request, without those ejected."""
        outliers = self.outliers
        active = outliers.active
        if active:
            instances = outliers.in_rotation(instances)
        count = len(instances)
        if count <= 1:
            return instances
        turn = self._turns.get(model, 0)
        self._turns[model] = turn + 1
        start = turn % count
        rotated = instances[start:] + instances[:start]
        now = outliers.clock() if active else 0.0
        inflight = self.inflight
        # sorted() is stable: equal keys keep the rotated order, which is what makes ties round robin.
        return sorted(
            rotated,
            key=lambda e: (active and outliers.tried_last(e, now), inflight.get((e.address, e.port), 0)),
        )

    def acquire(self, endpoint: Endpoint) -> float:
        """Count a request sent to `endpoint`; returns the time it is sent, on the outlier detector's clock."""
        key = (endpoint.address, endpoint.port)
        self.inflight[key] = self.inflight.get(key, 0) + 1
        return self.outliers.clock()

    def busy(self, address: str, port: int) -> bool:
        """Whether a request sent to the instance at `address`:`port` is still running."""
        return (address, port) in self.inflight

    def release(self, endpoint: Endpoint) -> None:
        """Count a request of `endpoint` as finished."""
        key = (endpoint.address, endpoint.port)
        left = self.inflight.get(key, 1) - 1
        if left > 0:
            self.inflight[key] = left
        else:
            self.inflight.pop(key, None)  # no entry per instance that ever existed: the table changes
