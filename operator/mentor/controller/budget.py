"""One budget for the status writes that time alone causes, all jobs together.

Two writers change a job's status with nothing new having happened to it: the progress flusher
(a trainer's step and loss) and the GPU-hours refresh of every job that holds pods. Each, once
per job per period, grows with the number of jobs: 5,000 running jobs refreshed every 30 s are
167 writes a second, each one a validation of the whole object, an etcd write and a watch event
to every watcher. Both draw on one token bucket instead (MENTOR_STATUS_WRITES_PER_SECOND, the
chart's operator.statusWritesPerSecond), so the API server's load from them is a setting's.
A job's own news (created, running, failed, restarted) never waits for a token: what happens
to jobs bounds it, not the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class WriteBudget:
    """A token bucket: `rate` writes a second on average, at most `burst` at once."""

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, max(burst, 1.0), clock
        self._tokens, self._at = self.burst, clock()
        self._lock = threading.Lock()

    def take(self, wanted: int = 1) -> int:
        """Up to `wanted` writes allowed now; the rest must wait for a later turn."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            granted = min(wanted, int(self._tokens))
            self._tokens -= granted
            return granted

    def period(self, holders: int, floor: float) -> float:
        """How often each of `holders` jobs may refresh its GPU-hours so that all of them
        together stay within the rate: `floor` (MENTOR_RESYNC_SECONDS) while few hold pods,
        longer as more do. The reconciles that refresh them are bounded with the writes."""
        return max(floor, holders / self.rate)
