"""Which database errors are worth retrying, decided in one place by SQLSTATE, and the retry policy itself.

Classification never looks at message text (it is localised and changes between versions): it reads the
SQLSTATE of psycopg2 errors (``pgcode``, else ``diag.sqlstate``), of our own connect failures (``sqlstate``,
learnt from the server by `indexd.db.connect`) and of SQLAlchemy's wrappers (``orig``).

Decisions worth knowing:

* transient: class 08 (connection exceptions), 57P01/57P02/57P03 (admin shutdown, crash shutdown, cannot
  connect now), 53300 (too many connections), 40001 (serialization failure), 40P01 (deadlock), and a psycopg2
  OperationalError/InterfaceError that carries no SQLSTATE at all: the server never answered (refused, reset,
  "server closed the connection unexpectedly", connect_timeout).
* not retried: 55P03 lock_not_available (a lock_timeout fired: waiting again queues behind the same lock and
  blocks the application's sessions behind us once more; the index lifecycle decides when to try a build again),
  57014 query_canceled (a statement_timeout would fire again), 58xxx system/I/O errors (a disk or OS problem
  needs an operator, retrying only hides it), 28xxx authentication, 3D000 unknown database, 42xxx syntax and
  permission, 22xxx data, 23xxx constraint errors, and everything that is not a database error.
* SQLAlchemy's pool TimeoutError (every pooled connection is checked out) is not retried: the pool has already
  waited its `pool.timeout`, and the wait is caused by our own workers, not by the server.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg2
import psycopg2.errorcodes
import psycopg2.errors
import sqlalchemy.exc
import tenacity

from indexd.config.schema import RetrySettings
from indexd.dsn import redact_dsn
from indexd.errors import IndexdError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_CLASSES = frozenset({"08"})
TRANSIENT_CODES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})
# Transient codes that say the server (not our transaction) is in trouble: these count for the circuit breaker.
CONNECTION_CODES = frozenset({"57P01", "57P02", "57P03", "53300"})
AUTH_CLASS = "28"


def _codes_by_class() -> dict[type, str]:
    """psycopg2 raises one class per SQLSTATE (psycopg2.errors); map each back to its code."""
    found: dict[type, str] = {}
    for name in dir(psycopg2.errorcodes):
        code = getattr(psycopg2.errorcodes, name)
        if name.isupper() and isinstance(code, str) and len(code) == 5:
            try:
                found.setdefault(psycopg2.errors.lookup(code), code)
            except KeyError:
                continue
    return found


_CODE_OF_CLASS = _codes_by_class()


@dataclass(frozen=True)
class Classification:
    """What an error means for a retry: transient or not, and whether it says the server is unreachable."""

    transient: bool
    connection: bool  # the server is unreachable or refusing us: counts for the breaker, breaks the connection
    sqlstate: str | None
    cause: str  # short, password-free: "SQLSTATE 57P01 AdminShutdown"


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE an error carries, looking through SQLAlchemy wrappers and our own connect failures."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str) and code:
            return code
        if isinstance(current, psycopg2.Error):
            code = current.pgcode or getattr(current.diag, "sqlstate", None) or _CODE_OF_CLASS.get(type(current))
            if code:
                return str(code)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def _dbapi_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None else exc


def classify(exc: BaseException) -> Classification:
    """Transient or permanent, by SQLSTATE; see the module docstring for each decision."""
    code = sqlstate_of(exc)
    cause = describe(exc, code)
    if isinstance(exc, IndexdError):  # ours: breaker open, authentication failed, retries exhausted ...
        return Classification(False, False, code, cause)
    if code is not None:
        transient = code[:2] in TRANSIENT_CLASSES or code in TRANSIENT_CODES
        connection = code[:2] in TRANSIENT_CLASSES or code in CONNECTION_CODES
        return Classification(transient, connection, code, cause)
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return Classification(True, True, None, cause)
    inner = _dbapi_error(exc)
    if getattr(inner, "needs_password", False):  # libpq had no password to send: a configuration problem
        return Classification(False, False, None, cause)
    if isinstance(inner, psycopg2.OperationalError | psycopg2.InterfaceError):
        return Classification(True, True, None, cause)
    return Classification(False, False, None, cause)


def is_transient(exc: BaseException) -> bool:
    return classify(exc).transient


def is_auth_failure(exc: BaseException) -> bool:
    code = sqlstate_of(exc)
    return bool(code and code.startswith(AUTH_CLASS)) or bool(getattr(_dbapi_error(exc), "needs_password", False))


def describe(exc: BaseException, code: str | None = None) -> str:
    """A short, password-free cause for logs: SQLSTATE and class name, plus the first line of the message."""
    inner = _dbapi_error(exc)
    code = code if code is not None else sqlstate_of(exc)
    first = first_line(inner, "")
    head = f"SQLSTATE {code} {type(inner).__name__}" if code else type(inner).__name__
    return redact_dsn(f"{head}: {first}" if first else head)


# ---- backoff -----------------------------------------------------------------------------------------------
def backoff_cap(retry_number: int, settings: RetrySettings) -> float:
    """The upper bound of the n-th wait (n >= 1): initial * multiplier^(n-1), at most max_delay."""
    initial = settings.initial_delay.total_seconds()
    ceiling = settings.max_delay.total_seconds()
    exponent = max(0, retry_number - 1)
    try:
        cap = initial * settings.multiplier**exponent
    except OverflowError:
        cap = ceiling
    return max(0.0, min(ceiling, cap))


def full_jitter(retry_number: int, settings: RetrySettings, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, cap], so many clients retrying together spread out (AWS's backoff analysis)."""
    return rand() * backoff_cap(retry_number, settings)


@dataclass
class RetryHooks:
    """Injectable time and randomness (tests), and callbacks on each retry and on giving up."""

    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random
    on_retry: Callable[[int, BaseException, float], None] | None = None  # (attempt, error, next delay)
    on_giveup: Callable[[int, BaseException], None] | None = None  # (attempts made, last error)


def policy(
    settings: RetrySettings,
    *,
    what: str,
    hooks: RetryHooks | None = None,
    retry_if: Callable[[BaseException], bool] = is_transient,
    started: float | None = None,
) -> tenacity.Retrying:
    """A tenacity policy: transient errors only, full-jitter backoff, stop by count or elapsed time, logged.

    The wait before a retry is clamped to the time left, so the last attempt starts no later than max_elapsed
    (counted from `started`, by default now).
    """
    hooks = hooks or RetryHooks()
    start = hooks.clock() if started is None else started
    budget = settings.max_elapsed.total_seconds()
    attempts = max(1, settings.attempts)

    def stop(state: tenacity.RetryCallState) -> bool:
        return state.attempt_number >= attempts or hooks.clock() - start >= budget

    def wait(state: tenacity.RetryCallState) -> float:
        left = max(0.0, budget - (hooks.clock() - start))
        return min(full_jitter(state.attempt_number, settings, hooks.rand), left)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        if exc is None:
            return
        # The first failure is a WARNING that says how long the retries may take; the next ones are INFO (a
        # command line would otherwise print one warning per attempt), and giving up is an ERROR.
        first = state.attempt_number == 1
        message = "%s: attempt %d/%d failed (%s); retrying in %.2f s"
        extra: tuple[float, ...] = ()
        if first:
            message, extra = message + ", at most %d more time(s) within %.0f s", (attempts - 1, budget)
        log.log(logging.WARNING if first else logging.INFO, message,
                what, state.attempt_number, attempts, classify(exc).cause, delay, *extra)
        if hooks.on_retry:
            hooks.on_retry(state.attempt_number, exc, delay)

    return tenacity.Retrying(
        sleep=hooks.sleep,
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(retry_if),
        before_sleep=before_sleep,
        reraise=True,
    )


def retry_call(
    fn: Callable[[], T],
    settings: RetrySettings,
    *,
    what: str = "database call",
    hooks: RetryHooks | None = None,
    retry_if: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call fn until it succeeds, fails permanently, or the policy gives up; the last error is re-raised.

    On giving up after a transient error, `hooks.on_giveup(attempts, error)` runs first and the give-up is logged.
    The first attempt runs without the policy: building it costs more than a short unit of work, and most calls
    succeed at once.
    """
    hooks = hooks or RetryHooks()
    started = hooks.clock()
    try:
        return fn()
    except BaseException as exc:
        if not retry_if(exc):
            raise
        first_error = exc
    pending: list[BaseException] = [first_error]

    def attempt() -> T:
        if pending:  # replay the first attempt's failure, so the policy counts, logs and waits for it
            raise pending.pop()
        return fn()

    retrying = policy(settings, what=what, hooks=hooks, retry_if=retry_if, started=started)
    try:
        return retrying(attempt)
    except BaseException as exc:
        made = retrying.statistics.get("attempt_number", 1)
        if retry_if(exc):
            log.error("%s: giving up after %d attempt(s): %s", what, made, classify(exc).cause)
            if hooks.on_giveup:
                hooks.on_giveup(int(made), exc)
        raise
