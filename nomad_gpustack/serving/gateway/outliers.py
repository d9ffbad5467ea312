"""Passive outlier detection: which instances the gateway's own requests show to be failing, and for how long
they are out of rotation. Pure bookkeeping: the clock is passed in, so tests move time without sleeping.

The rules follow Envoy's outlier detection (docs: intro/arch_overview/upstream/outlier.rst; source:
source/common/upstream/outlier_detection_impl.cc, `DetectorImpl::ejectHost` and `checkHostForUneject`):

- Consecutive failures: `eject_after` timeouts or failed connections in a row eject an instance (Envoy's
  `consecutive_5xx`, which counts local-origin errors too). An answer of any status ends the run: a model
  server's 5xx is relayed to the client and says more about the request than about the server.
- Ejection time: `eject_for` (Envoy's `base_ejection_time`, 30 s there too) times the number of times the
  instance was ejected, at most `MAX_MULTIPLIER` times (Envoy's `max_ejection_time`, 300 s by default). Then
  it is back by itself: no health check has to change, which a busy server's never does.
- Decay: Envoy lowers the multiplier by one at each sweep (`interval`) that finds the host in rotation;
  here by one for each `eject_for` the instance spent back in rotation, counted when it is ejected again.
- Cap: Envoy ejects no more than `max_ejection_percent` (10 %) of a cluster's hosts. A model has a few
  replicas, where 10 % would forbid any ejection, so the cap here is "all but one": the last instance of a
  model in rotation (passing in the routing table, not ejected) is never ejected; a slow answer beats a
  503. Should the table leave nothing but ejected instances (the others' checks failed), those are used
  anyway, like Envoy's panic threshold.
- Busy is not dead (ours): a timeout counts only when the instance started no answer to another request
  since this one was sent. A server that answers others but not this one in time is busy (its slots are
  taken: the request waits in its queue); one that answers nobody is hung, however many requests wait on it.
- A change in the routing table is a fresh start (Envoy: a host removed from the cluster loses its
  monitor): an instance that stops passing, or whose registration changes, is forgotten here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..discovery import Endpoint, RoutingTable

EJECT_AFTER = 3  # timeouts or failed connections in a row that eject an instance
EJECT_FOR = 30.0  # seconds of the first ejection; the Nth ejection in a row lasts N times as long
MAX_MULTIPLIER = 10  # the longest ejection: 10 x EJECT_FOR (5 min), as Envoy's max_ejection_time (300 s)
TRY_LAST_SECONDS = 5.0  # how long an instance that just failed is tried after the others

Clock = Callable[[], float]
Key = tuple[str, int]
# What a failure did: "gone" (the instance is no longer in the routing table: nothing to count), "busy" (a
# timeout while it answers others: not counted), "out" (it is ejected already: a request sent before),
# "counted", "ejected", "kept" (this failure reached `eject_after`, but the instance is its model's last).
Outcome = Literal["gone", "busy", "out", "counted", "ejected", "kept"]


@dataclass(frozen=True, slots=True)
class Ejection:
    """An instance out of rotation until `until` (on the detector's clock)."""

    endpoint: Endpoint
    times: int  # the multiplier: ejections in a row, less the decay
    seconds: float
    until: float


@dataclass(frozen=True, slots=True)
class Failure:
    """What one failed request did to its instance; `failures` in a row, this one included."""

    endpoint: Endpoint
    outcome: Outcome
    failures: int = 0
    ejection: Ejection | None = None


def key_of(endpoint: Endpoint) -> Key:
    """An instance's identity: one server per address and port."""
    return endpoint.address, endpoint.port


class OutlierDetector:
    """Counts the failures of each instance and ejects it for a while (see the module's rules).

    The gateway reports what its requests met: `answered` (the head of an answer arrived), `succeeded` (an
    answer ran to its end), `failed` (a failed connection, an answer that went quiet), `timed_out` (no
    answer in time). `in_rotation` and `tried_last` tell the balancer where to send the next request.
    """

    def __init__(
        self,
        *,
        eject_after: int = EJECT_AFTER,
        eject_for: float = EJECT_FOR,
        try_last_seconds: float = TRY_LAST_SECONDS,
        clock: Clock | None = None,
    ) -> None:
        """`eject_for` 0 ejects nothing (failing instances are still tried last for `try_last_seconds`)."""
        self.eject_after = eject_after
        self.eject_for = eject_for
        self.try_last_seconds = try_last_seconds
        self.clock: Clock = clock or time.monotonic
        self._failures: dict[Key, int] = {}
        self._try_last: dict[Key, float] = {}  # until when
        self._out: dict[Key, Ejection] = {}
        self._past: dict[Key, Ejection] = {}  # the last ejection that ended, for the next one's multiplier
        self._back: list[Ejection] = []  # ended, not yet reported by `returned`
        self._answered: dict[Key, float] = {}  # when the instance last started an answer

    @property
    def active(self) -> bool:
        """Whether any instance is ejected or tried last: else the balancer need not ask."""
        return bool(self._out or self._try_last)

    # --- what requests met --------------------------------------------------------------------------------

    def answered(self, endpoint: Endpoint) -> None:
        """The head of an answer from `endpoint` arrived: it is alive (see `timed_out`)."""
        self._answered[key_of(endpoint)] = self.clock()

    def succeeded(self, endpoint: Endpoint) -> None:
        """`endpoint` answered in full: its failures are no longer in a row."""
        if self._failures:
            self._failures.pop(key_of(endpoint), None)

    def timed_out(self, endpoint: Endpoint, sent: float, peers: Sequence[Endpoint]) -> Failure:
        """A request sent to `endpoint` at `sent` (on the clock) got no answer in time. Counted as `failed`,
        unless the instance started an answer to another request since: then it is busy, not dead."""
        if endpoint not in peers:
            return Failure(endpoint, "gone")
        if self._answered.get(key_of(endpoint), float("-inf")) > sent:
            return Failure(endpoint, "busy")
        return self.failed(endpoint, peers)

    def failed(self, endpoint: Endpoint, peers: Sequence[Endpoint]) -> Failure:
        """Count a failure of `endpoint`; `peers` are the passing instances of its model in the routing table
        now. It is tried last for a while; `eject_after` failures in a row eject it, unless that would leave
        its model with no instance in rotation."""
        if endpoint not in peers:
            # The table no longer shows it passing as when the request was routed (Consul noticed first): that
            # change is the fresh start it comes back from; nothing of it is kept.
            return Failure(endpoint, "gone")
        now = self.clock()
        key = key_of(endpoint)
        if self._is_out(key, now):
            return Failure(endpoint, "out")
        self._try_last[key] = now + self.try_last_seconds
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        if failures < self.eject_after or self.eject_for <= 0:
            return Failure(endpoint, "counted", failures)
        if not any(key_of(p) != key and not self._is_out(key_of(p), now) for p in peers):
            # The last in rotation: kept, its failures still counted, so that it goes as soon as another is back.
            return Failure(endpoint, "kept" if failures == self.eject_after else "counted", failures)
        times = self._multiplier(key, now)
        seconds = self.eject_for * times
        ejection = self._out[key] = Ejection(endpoint, times, seconds, now + seconds)
        del self._failures[key]  # counted afresh once it is back, as Envoy resets its counters
        self._try_last.pop(key, None)
        return Failure(endpoint, "ejected", failures, ejection)

    # --- where requests go --------------------------------------------------------------------------------

    def in_rotation(self, instances: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
        """`instances` less the ejected ones; all of them when all are ejected (a slow answer beats none)."""
        if not self._out:
            return instances
        now = self.clock()
        kept = tuple(e for e in instances if not self._is_out(key_of(e), now))
        return kept or instances

    def tried_last(self, endpoint: Endpoint, now: float) -> bool:
        """Whether `endpoint` failed within `try_last_seconds` before `now` (the balancer reads the clock once
        per request)."""
        key = key_of(endpoint)
        until = self._try_last.get(key)
        if until is None:
            return False
        if until <= now:
            del self._try_last[key]
            return False
        return True

    def failures(self, endpoint: Endpoint) -> int:
        """The failures of `endpoint` in a row now (0 once it is ejected: they are counted afresh after)."""
        return self._failures.get(key_of(endpoint), 0)

    def ejected(self) -> list[Endpoint]:
        """The instances ejected now."""
        now = self.clock()
        return [ejection.endpoint for key, ejection in list(self._out.items()) if self._is_out(key, now)]

    def returned(self) -> list[Ejection]:
        """The ejections that ended since the last call (their instances are back in rotation)."""
        self.ejected()  # ends the ejections that are over
        back, self._back = self._back, []
        return back

    def observe(self, table: RoutingTable) -> list[Endpoint]:
        """Forget the instances that `table` does not show passing as they were; returns those of them that
        were ejected. A later table showing them passing brings them back with a clean record."""
        passing = {e for instances in table.routes.values() for e in instances}
        released = [ejection.endpoint for ejection in self._out.values() if ejection.endpoint not in passing]
        keys = {key_of(e) for e in passing}
        for record in (self._failures, self._try_last, self._out, self._past, self._answered):
            for key in [k for k in record if k not in keys]:
                del record[key]
        self._back = [ejection for ejection in self._back if key_of(ejection.endpoint) in keys]
        return released

    # --- inside -------------------------------------------------------------------------------------------

    def _is_out(self, key: Key, now: float) -> bool:
        ejection = self._out.get(key)
        if ejection is None:
            return False
        if ejection.until > now:
            return True
        del self._out[key]
        self._past[key] = ejection
        self._back.append(ejection)
        return False

    def _multiplier(self, key: Key, now: float) -> int:
        """The multiplier of an ejection now: one more than the last one's, less one for each `eject_for` the
        instance spent back in rotation since that one ended."""
        past = self._past.get(key)
        if past is None:
            return 1
        clean = int((now - past.until) // self.eject_for)
        return min(max(past.times - clean, 0) + 1, MAX_MULTIPLIER)
