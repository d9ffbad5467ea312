"""The server's background thread: everything Nomad's leader does on its own (running evaluations from the
broker, delayed evaluations at their WaitUntil, the deployment watchers' timers and batched updates).

Work is a callable run at a time of the double's clock, in order, one at a time, with the state lock held, so
the server's decisions never interleave with each other. A change of state wakes the thread (the state's
condition variable), so work scheduled "now" by a commit hook runs right after that commit.
"""

from __future__ import annotations

import heapq
import itertools
import sys
import threading
import traceback
from collections.abc import Callable

from .clock import Clock
from .state import State


class Leader:
    def __init__(self, state: State, clock: Clock, errors: list[BaseException]) -> None:
        self.state = state
        self.clock = clock
        self.errors = errors
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="nomad-double-leader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def at(self, due: int, work: Callable[[], None]) -> None:
        """Run `work` once the clock reaches `due` (unix ns of Nomad time). Call with the state lock held, or
        from any thread (it takes the lock)."""
        with self.state.cond:
            heapq.heappush(self._queue, (due, next(self._order), work))
            self.state.cond.notify_all()

    def soon(self, work: Callable[[], None]) -> None:
        """Run `work` as soon as the current write is done."""
        self.at(0, work)

    def _loop(self) -> None:
        state = self.state
        with state.cond:
            while not state.closed:
                now = self.clock.now()
                if self._queue and self._queue[0][0] <= now:
                    _, _, work = heapq.heappop(self._queue)
                    try:
                        work()
                    except Exception as exc:  # a bug in the double: fail the test at exit, keep serving
                        traceback.print_exc(file=sys.stderr)
                        self.errors.append(exc)
                    continue
                timeout = self.clock.real_seconds(self._queue[0][0] - now) if self._queue else None
                state.cond.wait(timeout if timeout is None else max(timeout, 0.001))

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
