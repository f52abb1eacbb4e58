from __future__ import annotations

import logging
from datetime import timedelta

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy.exc

from indexd.config.schema import RetrySettings
from indexd.db.retry import RetryHooks, backoff_cap, classify, full_jitter, is_auth_failure, retry_call, sqlstate_of
from indexd.errors import ConnectionFailed


def pg_error(code: str, message: str = "boom") -> psycopg2.Error:
    return psycopg2.errors.lookup(code)(message)


@pytest.mark.parametrize(
    ("code", "transient", "connection"),
    [
        ("08000", True, True), ("08003", True, True), ("08006", True, True), ("08001", True, True),
        ("57P01", True, True), ("57P02", True, True), ("57P03", True, True), ("53300", True, True),
        ("40001", True, False), ("40P01", True, False),
        ("55P03", False, False), ("57014", False, False), ("58030", False, False), ("58000", False, False),
        ("28P01", False, False), ("28000", False, False), ("3D000", False, False),
        ("42601", False, False), ("42501", False, False), ("42P01", False, False),
        ("22012", False, False), ("23505", False, False), ("53100", False, False),
    ],
)
def test_classification_by_sqlstate(code: str, transient: bool, connection: bool) -> None:
    verdict = classify(pg_error(code))
    assert (verdict.transient, verdict.connection, verdict.sqlstate) == (transient, connection, code)
    assert verdict.cause.startswith(f"SQLSTATE {code} ")


def test_errors_without_sqlstate() -> None:
    # What psycopg2 raises when the server never answered: refused, reset, connect_timeout.
    assert classify(psycopg2.OperationalError("server closed the connection unexpectedly")).transient
    assert classify(psycopg2.InterfaceError("connection already closed")).transient
    assert not classify(psycopg2.ProgrammingError("can't execute an empty query")).transient
    assert not classify(ValueError("bug")).transient
    assert not classify(ConnectionFailed("breaker open")).transient
    assert not classify(sqlalchemy.exc.TimeoutError("QueuePool limit reached")).transient


def test_sqlalchemy_wrappers_are_looked_through() -> None:
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, pg_error("57P01"))
    assert sqlstate_of(wrapped) == "57P01" and classify(wrapped).transient
    invalidated = sqlalchemy.exc.DBAPIError("SELECT 1", {}, psycopg2.Error("x"), connection_invalidated=True)
    assert classify(invalidated).transient
    syntax = sqlalchemy.exc.ProgrammingError("SELEC", {}, pg_error("42601"))
    assert not classify(syntax).transient


def test_chained_and_attached_sqlstate() -> None:
    class ConnectAttemptFailed(psycopg2.OperationalError):
        sqlstate = "28P01"

    assert is_auth_failure(ConnectAttemptFailed("x"))
    assert not classify(ConnectAttemptFailed("x")).transient
    try:
        try:
            raise pg_error("40P01")
        except psycopg2.Error as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert sqlstate_of(outer) == "40P01"


def test_cause_is_password_free() -> None:
    err = psycopg2.OperationalError("could not connect to postgresql://bob:s3cret@db1/app")
    assert "s3cret" not in classify(err).cause


SETTINGS = RetrySettings(
    attempts=10, initial_delay=timedelta(seconds=0.5), multiplier=2.0,
    max_delay=timedelta(seconds=5), max_elapsed=timedelta(seconds=60),
)


def test_backoff_cap_grows_by_multiplier_until_max_delay() -> None:
    assert [backoff_cap(n, SETTINGS) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert backoff_cap(10_000, SETTINGS) == 5.0  # no overflow


@pytest.mark.parametrize("r", [0.0, 0.25, 0.999999])
def test_full_jitter_stays_within_zero_and_cap(r: float) -> None:
    for n in range(1, 10):
        delay = full_jitter(n, SETTINGS, rand=lambda r=r: r)
        assert 0.0 <= delay <= backoff_cap(n, SETTINGS)
        assert delay == pytest.approx(r * backoff_cap(n, SETTINGS))


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int, error: BaseException, cost: float = 0.0, clock: FakeTime | None = None):
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if clock is not None:
            clock.now += cost
        if calls["n"] <= times:
            raise error
        return "ok"

    return fn, calls


def test_retries_transient_errors_then_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    t = FakeTime()
    fn, calls = failing(2, pg_error("57P01"))
    with caplog.at_level(logging.INFO, logger="indexd.db.retry"):
        assert retry_call(fn, SETTINGS, what="db main", hooks=RetryHooks(sleep=t.sleep, clock=t.clock,
                                                                          rand=lambda: 1.0)) == "ok"
    assert calls["n"] == 3
    assert t.sleeps == [0.5, 1.0]
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    budget = SETTINGS.max_elapsed.total_seconds()
    assert lines[0] == ("WARNING", "db main: attempt 1/10 failed (SQLSTATE 57P01 AdminShutdown: boom); retrying in "
                                   f"0.50 s, at most 9 more time(s) within {budget:.0f} s")
    assert lines[1][0] == "INFO" and "attempt 2/10" in lines[1][1] and lines[1][1].endswith("retrying in 1.00 s")


def test_permanent_errors_are_not_retried() -> None:
    t = FakeTime()
    fn, calls = failing(5, pg_error("28P01"))
    with pytest.raises(psycopg2.errors.InvalidPassword):
        retry_call(fn, SETTINGS, hooks=RetryHooks(sleep=t.sleep, clock=t.clock))
    assert calls["n"] == 1 and t.sleeps == []


def test_stops_after_attempts_and_reports_giveup() -> None:
    t = FakeTime()
    gave_up: list[tuple[int, BaseException]] = []
    settings = RetrySettings(attempts=3, initial_delay=timedelta(seconds=1), max_elapsed=timedelta(hours=1))
    fn, calls = failing(99, pg_error("08006"))
    with pytest.raises(psycopg2.errors.ConnectionFailure):
        retry_call(fn, settings, hooks=RetryHooks(sleep=t.sleep, clock=t.clock, rand=lambda: 0.5,
                                                  on_giveup=lambda n, e: gave_up.append((n, e))))
    assert calls["n"] == 3 and len(t.sleeps) == 2
    assert gave_up and gave_up[0][0] == 3


def test_stops_by_elapsed_time_and_never_sleeps_past_it() -> None:
    t = FakeTime()
    settings = RetrySettings(attempts=1000, initial_delay=timedelta(seconds=1), multiplier=2.0,
                             max_delay=timedelta(seconds=8), max_elapsed=timedelta(seconds=20))
    fn, calls = failing(10_000, psycopg2.OperationalError("refused"), cost=0.5, clock=t)
    with pytest.raises(psycopg2.OperationalError):
        retry_call(fn, settings, hooks=RetryHooks(sleep=t.sleep, clock=t.clock, rand=lambda: 1.0))
    elapsed = t.now - 100.0
    assert 20.0 <= elapsed <= 20.5  # the last attempt starts no later than max_elapsed
    assert calls["n"] < 1000
    assert max(t.sleeps) <= 8.0


def test_on_retry_hook_sees_attempt_error_and_delay() -> None:
    t = FakeTime()
    seen: list[tuple[int, str, float]] = []
    fn, _ = failing(1, pg_error("40001"))
    retry_call(fn, SETTINGS, hooks=RetryHooks(sleep=t.sleep, clock=t.clock, rand=lambda: 0.5,
                                              on_retry=lambda n, e, d: seen.append((n, type(e).__name__, d))))
    assert seen == [(1, "SerializationFailure", 0.25)]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  28P01\n', "28P01"),
        ('connection to server at "db1" (10.0.0.1), port 5432 failed: FATAL:  3D000: database "x" does not exist\n'
         "LOCATION:  InitPostgres, postinit.c:948\n", "3D000"),
        ('connection to server at "::1", port 5432 failed: Connection refused\n'
         'connection to server at "127.0.0.1", port 5432 failed: FATAL:  53300\n', "53300"),
        ('connection to server at "127.0.0.1", port 1 failed: Connection refused\n', None),
        ("fe_sendauth: no password supplied\n", None),
    ],
)
def test_sqlstate_read_from_libpq_sqlstate_verbosity(message: str, code: str | None) -> None:
    from indexd.db.connect import _SQLSTATE_IN_MESSAGE

    found = _SQLSTATE_IN_MESSAGE.findall(message)
    assert (found[-1] if found else None) == code


def test_permanent_connect_failures_name_database_and_role() -> None:
    from indexd.db.connect import Diagnosis, _permanent_message

    auth = _permanent_message("main", "indexd", Diagnosis("28P01", False))
    assert auth is not None and auth.startswith("authentication failed for database main as user indexd")
    assert "password_file / PGPASSWORD / .pgpass" in auth
    assert "no password for database main as user indexd" in (_permanent_message("main", "indexd",
                                                                                  Diagnosis(None, True)) or "")
    assert "SQLSTATE 3D000" in (_permanent_message("main", "indexd", Diagnosis("3D000", False)) or "")
    assert _permanent_message("main", "indexd", Diagnosis("53300", False)) is None
    assert _permanent_message("main", "indexd", Diagnosis(None, False)) is None
