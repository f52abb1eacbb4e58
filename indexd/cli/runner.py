"""One runner for every command that acts on each selected database, and the one mapping to exit codes.

A command hands `each_database` the databases it targets (`--database NAME`, the `--dsn` one, or every configured
database) and a function for one of them. Each database is a fault boundary: its error is printed as one line
naming it (`indexd: main: backup failed: ...`) and the next database runs. Errors we expect in operation
(connection refused, authentication, a missing extension or state schema, permission denied, a full disk) print
no traceback; any other exception is a bug and shows its traceback, after which the other databases still run.

Exit codes (DESIGN.md §3): 0 every database ok, 1 a database failed, 2 a usage or configuration error, 3 a guard
refused (window, pause, rate limit, leadership). Mixed outcomes give the most severe code: 2 > 1 > 3 > 0. A usage
or configuration error means the command as given cannot be trusted and must be fixed first; a failure needs
someone's attention, where a refusal is the guards doing what they were configured to do and the same command
succeeds later; so a script that retries on 3 never retries over a failure, and 0 means every database was fine.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Generic, Protocol, TypeVar

import psycopg2
import psycopg2.errors

from indexd.dsn import redact_dsn
from indexd.errors import ConfigError, IndexdError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")


class Named(Protocol):
    @property
    def name(self) -> str: ...


D = TypeVar("D", bound=Named)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
SEVERITY = {EXIT_OK: 0, EXIT_REFUSED: 1, EXIT_FAILED: 2, EXIT_USAGE: 3}  # the higher wins when outcomes mix

EXIT_HELP = ("exit codes: 0 ok, 1 failure, 2 usage or config error, 3 refused by a guard (window, pause, rate "
             "limit, leader);\n  over several databases the worst wins: 2, then 1, then 3, then 0")

SYNTAX_ERROR = "42601"  # a statement of our own that does not parse is a bug, not an operating condition


def worst(codes: Iterable[int]) -> int:
    """The exit code of several outcomes: the most severe one (2 > 1 > 3 > 0); none at all is 0."""
    return max(codes, key=SEVERITY.__getitem__, default=EXIT_OK)


@functools.cache
def _operating_errors() -> tuple[type[BaseException], ...]:
    return (IndexdError, psycopg2.Error, OSError)


@functools.cache
def _bug_errors() -> tuple[type[BaseException], ...]:
    return (psycopg2.errors.lookup(SYNTAX_ERROR),)


def is_expected(exc: BaseException) -> bool:
    """True for what operation brings (unreachable server, refused login, missing extension or schema, denied
    permission, full disk): one line is the whole story. False for a bug, which deserves its traceback."""
    return isinstance(exc, _operating_errors()) and not isinstance(exc, _bug_errors())


def exit_code_of(exc: BaseException) -> int:
    """The exit code one database's error stands for: an IndexdError says its own (ConfigError and UsageError 2,
    GuardRefusal 3, the rest 1); anything else is a failure."""
    return int(exc.exit_code) if isinstance(exc, IndexdError) else EXIT_FAILED


def describe(exc: BaseException) -> str:
    """The message of one database's error, password-free: all of an IndexdError (written for the operator,
    every problem of a ConfigError included), the first line of anything else (libpq adds DETAIL and context)."""
    if isinstance(exc, ConfigError):
        text = "; ".join(exc.problems)
    elif isinstance(exc, IndexdError):
        text = str(exc).strip() or type(exc).__name__
    else:
        text = first_line(exc)
    return redact_dsn(text)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one database gave: its value when the function returned, else the error's one-line description."""

    database: str
    code: int
    value: T | None = None
    error: str | None = None


@dataclass
class Run(Generic[T]):
    outcomes: list[Outcome[T]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return worst(o.code for o in self.outcomes)

    def listing(self, to_json: Callable[[T], dict[str, Any]]) -> list[dict[str, Any]]:
        """The `--json` shape of every listing: one object per database, its `database` key first; a database
        that failed is `{"database": ..., "error": ...}`."""
        out: list[dict[str, Any]] = []
        for o in self.outcomes:
            body = {"error": o.error} if o.error is not None else to_json(o.value)  # type: ignore[arg-type]
            out.append({"database": o.database, **{k: v for k, v in body.items() if k != "database"}})
        return out


def each_database(databases: Sequence[D], work: Callable[[D], T], *, act: str,
                  verdict: Callable[[T], int] | None = None, err: IO[str] | None = None) -> Run[T]:
    """Run `work` on each database (objects with a `name`) in turn and collect the outcomes. `verdict` maps a
    returned value to its exit code (say, 3 when every build was refused); without it a return is 0. `act` names
    the work in the error line: `indexd: NAME: ACT failed: MESSAGE` (or `ACT refused: ...` for a guard)."""
    run: Run[T] = Run()
    for target in databases:
        try:
            value = work(target)
        except BrokenPipeError:
            raise  # the reader went away: nothing more to say to anyone (the entry point handles it)
        except Exception as exc:  # each database is a fault boundary
            run.outcomes.append(_failed(target.name, act, exc, err or sys.stderr))
            continue
        run.outcomes.append(Outcome(target.name, verdict(value) if verdict else EXIT_OK, value))
    return run


def _failed(name: str, act: str, exc: Exception, err: IO[str]) -> Outcome[Any]:
    code = exit_code_of(exc)
    message = describe(exc)
    if is_expected(exc):
        log.debug("%s of %s failed", act, name, exc_info=True)
    else:
        err.write(redact_dsn("".join(traceback.format_exception(exc))))
    what = "refused" if code == EXIT_REFUSED else "failed"
    err.write(f"indexd: {name}: {act} {what}: " + message.replace("\n", "\n  ") + "\n")
    err.flush()
    return Outcome(name, code, error=message)
