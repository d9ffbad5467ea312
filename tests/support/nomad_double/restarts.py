"""Nomad's restart tracker (client/allocrunner/taskrunner/restarts): after a task exits or fails to start,
whether and when it runs again under its restart policy (attempts, interval, delay, mode).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .goduration import SECOND, format_duration
from .jobspec import JSON

JITTER = 0.25  # Nomad adds up to 25 % of the delay
REASON_NO_RESTARTS = "Policy allows no restarts"
REASON_UNRECOVERABLE = "Error was unrecoverable"
REASON_WITHIN_POLICY = "Restart within policy"
REASON_DELAY = "Exceeded allowed attempts, applying a delay"
REASON_SUCCESS = "Restart unnecessary as task terminated successfully"

Verdict = Literal["restart", "not-restarting", "terminated"]


@dataclass(frozen=True)
class Decision:
    """`restart` after `delay` seconds; `not-restarting` (the task fails); `terminated` (done, not failed)."""

    verdict: Verdict
    reason: str
    delay: float = 0.0


@dataclass
class RestartTracker:
    """One task's restart bookkeeping. `restart_on_success` is false for batch jobs and prestart tasks."""

    policy: JSON  # RestartPolicy: Attempts, Interval, Delay (ns), Mode
    restart_on_success: bool
    now: Callable[[], float] = time.monotonic  # seconds: the double's clock in client mode
    clock: float = -1.0  # start of the current interval (-1: now, when the tracker is made)
    count: int = 0
    rand: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.clock < 0:
            self.clock = self.now()

    def after_exit(self, exit_code: int) -> Decision:
        """The task ran and exited with `exit_code`."""
        return self._decide(exit_code=exit_code, start_error=None)

    def after_start_error(self, recoverable: bool) -> Decision:
        """The driver could not start the task."""
        return self._decide(exit_code=None, start_error=recoverable)

    def _decide(self, exit_code: int | None, start_error: bool | None) -> Decision:
        attempts = int(self.policy.get("Attempts") or 0)
        successful = exit_code == 0
        if attempts == 0:
            if exit_code is not None and successful and not self.restart_on_success:
                return Decision("terminated", REASON_NO_RESTARTS)
            return Decision("not-restarting", REASON_NO_RESTARTS)
        now = self.now()
        if now > self.clock + int(self.policy.get("Interval") or 0) / SECOND:
            self.count, self.clock = 0, now  # a new interval
        self.count += 1
        if start_error is not None:
            if not start_error:
                return Decision("not-restarting", REASON_UNRECOVERABLE)
        elif successful and not self.restart_on_success:
            return Decision("terminated", REASON_SUCCESS)
        if self.count > attempts:
            if self.policy.get("Mode") == "fail":
                interval = format_duration(int(self.policy.get("Interval") or 0))
                reason = f'Exceeded allowed attempts {attempts} in interval {interval} and mode is "fail"'
                return Decision("not-restarting", reason)
            remaining = self.clock + int(self.policy.get("Interval") or 0) / SECOND - now
            return Decision("restart", REASON_DELAY, max(remaining, 0.0))
        return Decision("restart", REASON_WITHIN_POLICY, self._jitter())

    def _jitter(self) -> float:
        delay_ns = int(self.policy.get("Delay") or 0) or 1
        return (delay_ns + int(self.rand.randrange(delay_ns) * JITTER)) / SECOND
