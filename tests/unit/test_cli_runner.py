"""The per-database runner of the command line: which error means which exit code, how outcomes combine, and that
one database's error never stops the next one."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import pytest

from indexd.cli.runner import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Outcome,
    Run,
    describe,
    each_database,
    exit_code_of,
    is_expected,
    worst,
)
from indexd.errors import (
    BackupError,
    BuildError,
    ConfigError,
    ConnectionFailed,
    GuardRefusal,
    StateMissing,
    UsageError,
)

ORDER = [EXIT_USAGE, EXIT_FAILED, EXIT_REFUSED, EXIT_OK]  # most severe first


@dataclass(frozen=True)
class Target:
    name: str


@pytest.mark.parametrize("codes", [p for n in range(1, 5) for p in itertools.permutations(ORDER, n)])
def test_the_most_severe_code_wins_in_any_order(codes: tuple[int, ...]) -> None:
    assert worst(codes) == min(codes, key=ORDER.index)


def test_no_database_at_all_is_ok() -> None:
    assert worst([]) == EXIT_OK


@pytest.mark.parametrize(("error", "code"), [
    (UsageError("no database 'x'"), EXIT_USAGE),
    (ConfigError(["databases[0].password_file: cannot read /x"]), EXIT_USAGE),
    (GuardRefusal("paused by ops"), EXIT_REFUSED),
    (StateMissing("run 'indexd migrate' first"), EXIT_FAILED),
    (ConnectionFailed("connection refused"), EXIT_FAILED),
    (BuildError("lock timeout"), EXIT_FAILED),
    (BackupError("pg_dump failed"), EXIT_FAILED),
    (psycopg2.errors.InsufficientPrivilege("permission denied for table t"), EXIT_FAILED),
    (OSError(28, "No space left on device"), EXIT_FAILED),
    (KeyError("bug"), EXIT_FAILED),
])
def test_each_error_maps_to_one_exit_code(error: Exception, code: int) -> None:
    assert exit_code_of(error) == code


@pytest.mark.parametrize(("error", "expected"), [
    (ConnectionFailed("connection refused"), True),
    (StateMissing("no state schema"), True),
    (psycopg2.OperationalError("FATAL: password authentication failed"), True),
    (psycopg2.errors.InsufficientPrivilege("permission denied"), True),
    (psycopg2.errors.UndefinedFunction("function hypopg_create_index does not exist"), True),
    (PermissionError(13, "Permission denied"), True),
    (psycopg2.errors.SyntaxError("syntax error at or near"), False),  # our own SQL: a bug
    (TypeError("unsupported operand"), False),
    (AttributeError("'NoneType' object has no attribute 'id'"), False),
])
def test_operating_errors_are_expected_and_bugs_are_not(error: Exception, expected: bool) -> None:
    assert is_expected(error) is expected


def test_describe_keeps_the_operator_message_whole_and_cuts_server_detail() -> None:
    assert describe(ConfigError(["a.b (line 3): bad", "c (line 4): worse"])) == "a.b (line 3): bad; c (line 4): worse"
    server = psycopg2.OperationalError("connection to server failed\nDETAIL: x\nHINT: y")
    assert describe(server) == "connection to server failed"
    assert "s3cret" not in describe(ConnectionFailed("cannot reach postgresql://bob:s3cret@db1/app"))
    assert describe(ValueError()) == "ValueError"


def test_one_failing_database_does_not_stop_the_others() -> None:
    seen: list[str] = []

    def work(t: Target) -> int:
        seen.append(t.name)
        if t.name == "down":
            raise ConnectionFailed("connection to 127.0.0.1:5 refused\nis the server running?")
        if t.name == "paused":
            raise GuardRefusal("paused by ops until 12:00")
        return len(t.name)

    err = io.StringIO()
    run = each_database([Target("a"), Target("down"), Target("paused"), Target("b")], work, act="pause", err=err)
    assert seen == ["a", "down", "paused", "b"]
    assert [(o.database, o.code) for o in run.outcomes] == [
        ("a", EXIT_OK), ("down", EXIT_FAILED), ("paused", EXIT_REFUSED), ("b", EXIT_OK)]
    assert run.exit_code == EXIT_FAILED
    lines = err.getvalue().splitlines()
    assert lines[0] == "indexd: down: pause failed: connection to 127.0.0.1:5 refused"
    assert lines[-1] == "indexd: paused: pause refused: paused by ops until 12:00"
    assert "Traceback" not in err.getvalue()


def test_a_bug_shows_its_traceback_and_the_rest_still_runs() -> None:
    def work(t: Target) -> None:
        if t.name == "a":
            raise KeyError("missing")

    err = io.StringIO()
    run = each_database([Target("a"), Target("b")], work, act="status", err=err)
    assert [o.code for o in run.outcomes] == [EXIT_FAILED, EXIT_OK]
    assert "Traceback (most recent call last)" in err.getvalue()
    assert err.getvalue().rstrip().endswith("indexd: a: status failed: 'missing'")


def test_a_closed_pipe_is_not_one_databases_error() -> None:
    def work(t: Target) -> None:
        raise BrokenPipeError

    with pytest.raises(BrokenPipeError):
        each_database([Target("a"), Target("b")], work, act="status", err=io.StringIO())


def test_the_verdict_turns_a_returned_value_into_its_code() -> None:
    run = each_database([Target("built"), Target("refused")], lambda t: t.name, act="apply",
                        verdict=lambda v: EXIT_REFUSED if v == "refused" else EXIT_OK)
    assert run.exit_code == EXIT_REFUSED


def test_the_listing_is_one_object_per_database_with_its_name_first() -> None:
    run: Run[dict[str, int]] = Run([Outcome("a", EXIT_OK, {"database": "ignored", "n": 1}),
                                    Outcome("b", EXIT_FAILED, error="connection refused")])
    listing = run.listing(lambda v: v)
    assert listing == [{"database": "a", "n": 1}, {"database": "b", "error": "connection refused"}]
    assert all(next(iter(obj)) == "database" for obj in listing)
