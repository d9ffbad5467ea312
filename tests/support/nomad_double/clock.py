"""The double's clock: Nomad's time, optionally running faster than the wall clock.

Every duration in a job (reschedule delays, progress deadlines, health deadlines, restart delays) is kept in
Nomad's units and measured on this clock. With `scale` N, one real second is N seconds of Nomad time, so a 10m
progress deadline passes in 600/N real seconds. Timestamps in API objects (CreateTime, RequireProgressBy,
RescheduleTime, StartedAt ...) are read from the same clock, so they stay consistent with each other: an
allocation that failed at T is replaced at T + its reschedule delay, whatever the scale.
"""

from __future__ import annotations

import time

from .goduration import SECOND


class Clock:
    """Virtual time in unix nanoseconds: the wall clock at creation, then `scale` times real elapsed time."""

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("time_scale must be positive")
        self.scale = scale
        self._wall0 = time.time_ns()
        self._mono0 = time.monotonic_ns()

    def now(self) -> int:
        """Nomad's `time.Now().UnixNano()`."""
        return self._wall0 + int((time.monotonic_ns() - self._mono0) * self.scale)

    def seconds(self) -> float:
        """Nomad time in seconds, for intervals measured by clients (restart intervals, health timers)."""
        return self.now() / SECOND

    def real_seconds(self, nanos: int) -> float:
        """How long `nanos` of Nomad time takes on the wall clock."""
        return max(0.0, nanos / SECOND / self.scale)

    def nomad_ns(self, real_seconds: float) -> int:
        """How much Nomad time passes in `real_seconds` of wall-clock time."""
        return int(real_seconds * SECOND * self.scale)
