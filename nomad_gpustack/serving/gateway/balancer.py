"""The choice of an instance for a request: least outstanding requests, round robin, failing ones last or out,
and the share of an unpromoted canary."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .outliers import OutlierDetector

if TYPE_CHECKING:
    from ..discovery import Endpoint


class Balancer:
    """Orders the healthy instances of a model for one request: least outstanding requests first, equal loads
    in round-robin order, instances that failed lately last (they are still tried: Consul may be slower to
    notice a recovery than a failure), and without the instances that `outliers` ejected.

    Canaries (instances of an unpromoted canary deployment, `Endpoint.canary`) are by default instances like
    the others: they get their share of instances. With `canary_weight` (0..1), each request goes first to the
    canaries with that probability (`rng`, seeded in tests), else to the other instances; the other side stays
    behind as the fallback, so a failing canary costs no request. An unhealthy canary (failing its check, so
    not routed, or ejected) gets nothing, as any instance.
    """

    def __init__(
        self,
        outliers: OutlierDetector | None = None,
        *,
        canary_weight: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if canary_weight is not None and not 0.0 <= canary_weight <= 1.0:
            raise ValueError(f"the canary weight is a fraction from 0 to 1, not {canary_weight}")
        self.outliers = outliers or OutlierDetector()
        self.inflight: dict[tuple[str, int], int] = {}
        self._turns: dict[str, int] = {}
        self.canary_weight = canary_weight
        self._random = (rng or random.Random()).random

    def order(self, model: str, instances: tuple[Endpoint, ...]) -> Sequence[Endpoint]:
        """`instances` in the order to try them for one request, without those ejected."""
        outliers = self.outliers
        if outliers.active:
            instances = outliers.in_rotation(instances)
        if len(instances) <= 1:
            return instances
        if self.canary_weight is not None:  # the only cost of canary weights when none is set: this test
            canaries = tuple(e for e in instances if e.canary)
            if canaries and len(canaries) < len(instances):
                others = tuple(e for e in instances if not e.canary)
                # The side drawn takes its turn; the other follows as the fallback, its round robin untouched.
                if self._random() < self.canary_weight:
                    return [*self._ranked(model + "\0canary", canaries), *self._ranked(model, others, turn=False)]
                return [*self._ranked(model, others), *self._ranked(model + "\0canary", canaries, turn=False)]
        return self._ranked(model, instances)

    def _ranked(self, turns: str, instances: tuple[Endpoint, ...], *, turn: bool = True) -> Sequence[Endpoint]:
        """Least outstanding first, ties in round-robin order (the turn kept under `turns`, taken with `turn`),
        failing lately last."""
        count = len(instances)
        if count <= 1:
            return instances
        outliers = self.outliers
        active = outliers.active
        taken = self._turns.get(turns, 0)
        if turn:
            self._turns[turns] = taken + 1
        start = taken % count
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

    def release(self, endpoint: Endpoint) -> None:
        """Count a request of `endpoint` as finished."""
        key = (endpoint.address, endpoint.port)
        left = self.inflight.get(key, 1) - 1
        if left > 0:
            self.inflight[key] = left
        else:
            self.inflight.pop(key, None)  # no entry per instance that ever existed: the table changes
