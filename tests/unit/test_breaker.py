from __future__ import annotations

import threading

import pytest

from indexd.db.breaker import CircuitBreaker
from indexd.errors import ConnectionFailed


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def always(_: BaseException) -> bool:
    return True


def never(_: BaseException) -> bool:
    return False


def boom() -> None:
    raise OSError("connection refused to postgresql://bob:s3cret@db1/app")


def make(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("main", failure_threshold=3, reset_timeout=10.0, clock=clock)


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(2):
        with pytest.raises(OSError):
            b.call(boom, always)
    assert b.state == "closed" and b.consecutive_failures == 2
    with pytest.raises(OSError):
        b.call(boom, always)
    assert b.state == "open" and b.opens == 1
    assert b.last_failure is not None and "s3cret" not in b.last_failure


def test_success_resets_the_count() -> None:
    b = make(Clock())
    for _ in range(2):
        with pytest.raises(OSError):
            b.call(boom, always)
    assert b.call(lambda: 1, always) == 1
    with pytest.raises(OSError):
        b.call(boom, always)
    assert b.state == "closed" and b.consecutive_failures == 1


def test_open_fails_fast_with_a_clear_message() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(3):
        with pytest.raises(OSError):
            b.call(boom, always)
    clock.now = 4.0
    calls = []
    with pytest.raises(ConnectionFailed) as err:
        b.call(lambda: calls.append(1), always)
    assert calls == []
    msg = str(err.value)
    assert "breaker open for database main until" in msg and "another 6.0 s" in msg
    assert "last error: connection refused" in msg and "s3cret" not in msg


def test_half_open_allows_one_trial_and_success_closes() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(3):
        with pytest.raises(OSError):
            b.call(boom, always)
    clock.now = 10.0
    assert b.state == "half_open"
    b.before_call()  # the trial is out ...
    with pytest.raises(ConnectionFailed, match="trial"):
        b.before_call()  # ... so others still fail fast
    b.record_success()
    assert b.state == "closed" and b.consecutive_failures == 0
    assert b.call(lambda: "ok", always) == "ok"


def test_half_open_trial_failure_reopens_for_another_timeout() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(3):
        with pytest.raises(OSError):
            b.call(boom, always)
    clock.now = 12.0
    with pytest.raises(OSError):
        b.call(boom, always)
    assert b.state == "open" and b.opens == 2
    clock.now = 21.0
    assert b.state == "open"
    clock.now = 22.0
    assert b.state == "half_open"


def test_lost_trial_expires() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(3):
        b.record_failure("refused")
    clock.now = 10.0
    b.before_call()  # trial taken, never reported back
    clock.now = 15.0
    with pytest.raises(ConnectionFailed):
        b.before_call()
    clock.now = 20.0
    b.before_call()  # a new trial after another reset_timeout


def test_errors_that_do_not_count_change_nothing() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(5):
        with pytest.raises(OSError):
            b.call(boom, never)
    assert b.state == "closed" and b.consecutive_failures == 0
    for _ in range(3):
        b.record_failure("refused")
    clock.now = 10.0
    with pytest.raises(OSError):
        b.call(boom, never)  # e.g. wrong password during the trial: the trial is released, still half-open
    assert b.state == "half_open"
    b.before_call()


def test_thread_safety_counts_every_failure() -> None:
    b = CircuitBreaker("main", failure_threshold=10_000, reset_timeout=1.0)

    def hammer() -> None:
        for _ in range(500):
            b.record_failure("x")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.consecutive_failures == 4000 and b.state == "closed"
