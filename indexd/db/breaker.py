"""A circuit breaker per database: stop hammering a server that is down, try again after a pause.

closed --N consecutive connection failures--> open --reset_timeout--> half_open --trial succeeds--> closed
                                                                               \\--trial fails--> open

Only failures that say the server is unreachable count (see `indexd.db.retry.classify(...).connection`); a
syntax error or a wrong password neither opens nor closes it. While open, calls fail at once with ConnectionFailed.
In half-open exactly one trial call is let through; a trial that never reports back (its thread died) expires
after another reset_timeout, so the breaker cannot stay stuck half-open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from indexd.dsn import redact_dsn
from indexd.errors import ConnectionFailed, first_line

T = TypeVar("T")
State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Thread-safe breaker; `clock` is monotonic seconds (injectable for tests)."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout: float | timedelta = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.reset_timeout = (
            reset_timeout.total_seconds() if isinstance(reset_timeout, timedelta) else float(reset_timeout)
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0  # consecutive
        self._opened_at = 0.0
        self._trial_started: float | None = None
        self.opens = 0
        self.last_failure: str | None = None

    @property
    def state(self) -> State:
        with self._lock:
            return self._current_state()

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def _current_state(self) -> State:
        # Called with the lock held: an open breaker turns half-open by itself once its timeout has passed.
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_timeout:
            self._state = "half_open"
            self._trial_started = None
        return self._state

    def before_call(self) -> None:
        """Let a call through, or raise ConnectionFailed at once while open (or while a trial is running)."""
        if self._state == "closed":  # the common case, read without the lock (a racing opening lets one call by)
            return
        with self._lock:
            state = self._current_state()
            if state == "closed":
                return
            now = self._clock()
            if state == "half_open" and (
                self._trial_started is None or now - self._trial_started >= self.reset_timeout
            ):
                self._trial_started = now
                return
            raise ConnectionFailed(self._refusal(now))

    def _refusal(self, now: float) -> str:
        if self._state == "open":
            left = max(0.0, self._opened_at + self.reset_timeout - now)
            until = (datetime.now(UTC) + timedelta(seconds=left)).strftime("%Y-%m-%dT%H:%M:%SZ")
            when = f"until {until} (another {left:.1f} s)"
        else:
            when = "while one trial connection is tested"
        return (
            f"circuit breaker open for database {self.name} {when} after {self._failures} consecutive "
            f"connection failures; last error: {self.last_failure or 'unknown'}"
        )

    def record_success(self) -> None:
        if self._state == "closed" and self._failures == 0:  # nothing to reset: no lock on the common path
            return
        with self._lock:
            self._state = "closed"
            self._failures = 0
            self._trial_started = None

    def record_failure(self, error: BaseException | str) -> None:
        """A connection failure: count it; open after the threshold, or at once if it was the half-open trial."""
        text = redact_dsn(first_line(error))
        with self._lock:
            self.last_failure = text
            self._failures += 1
            state = self._current_state()
            if state == "half_open" or (state == "closed" and self._failures >= self.failure_threshold):
                self._state = "open"
                self._opened_at = self._clock()
                self._trial_started = None
                self.opens += 1

    def release(self) -> None:
        """The call ended with an error that does not count: free the half-open trial, change nothing else."""
        with self._lock:
            self._trial_started = None

    def call(self, fn: Callable[[], T], counts: Callable[[BaseException], bool]) -> T:
        """Run fn through the breaker: success closes it, an error for which counts(error) is a failure,
        any other error (a syntax error, a wrong password) leaves the state as it was."""
        self.before_call()
        try:
            result = fn()
        except BaseException as exc:
            if counts(exc):
                self.record_failure(exc)
            else:
                self.release()
            raise
        self.record_success()
        return result
