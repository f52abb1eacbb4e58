"""The one wrapper that runs external binaries (pg_dump, pg_restore): argument lists, never a shell.

Output is streamed line by line to the log with any password redacted; a timeout and a cancel Event end the
child and every process it started (its own process group): SIGTERM first, SIGKILL after a grace period.
Passwords reach the child through a private 0600 passfile named by PGPASSFILE in the child's environment only:
never on the command line (ps shows argv) and never in a log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2.extensions

from indexd.config.schema import DatabaseSettings
from indexd.config.secrets import file_password
from indexd.dsn import parse_dsn, redact_dsn
from indexd.errors import BackupError
from indexd.units import human_duration

log = logging.getLogger(__name__)

TERMINATE_GRACE_S = 5.0
_TAIL_LINES = 20
# Environment variables that override where a binary is found (used by operators and by the fault tests).
BINARY_ENV = {"pg_dump": "INDEXD_PG_DUMP", "pg_restore": "INDEXD_PG_RESTORE", "psql": "INDEXD_PSQL"}


class CommandFailed(BackupError):
    """An external command exited non-zero, timed out or was cancelled."""

    def __init__(self, message: str, result: CommandResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    duration_s: float
    stdout: tuple[str, ...] = ()  # only when captured
    stderr_tail: tuple[str, ...] = ()
    timed_out: bool = False
    cancelled: bool = False

    @property
    def name(self) -> str:
        return Path(self.argv[0]).name


@dataclass(frozen=True)
class Connection:
    """How a child process reaches a database: a password-free libpq string plus a private environment."""

    conninfo: str
    env: Mapping[str, str] = field(default_factory=dict)
    drop_env: tuple[str, ...] = ()


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in path.parent.parent.name.split(".") if p.isdigit())


def find_binary(name: str) -> str:
    """The path of a PostgreSQL client binary: the $INDEXD_PG_DUMP-style override, else $INDEXD_PG_BINDIR, else
    the newest version in Debian's /usr/lib/postgresql/<version>/bin (what its wrapper on PATH would pick for a
    remote server, without starting a Perl interpreter each time), else PATH."""
    override = os.environ.get(BINARY_ENV.get(name, ""), "")
    if override:
        return override
    bindir = os.environ.get("INDEXD_PG_BINDIR")
    if bindir and (Path(bindir) / name).exists():
        return str(Path(bindir) / name)
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=_version_key)
    if versions:
        return str(versions[-1])
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} not found on PATH; install the PostgreSQL client or set {BINARY_ENV.get(name)}")
    return found


def password_of(params: dict[str, str], db: DatabaseSettings | None) -> str | None:
    """The password of a parsed DSN, else of the database's password_file; None leaves it to libpq's own ways."""
    if "password" in params:
        return params["password"]
    return None if db is None else file_password(db)


def _passfile_line(password: str) -> str:
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


@contextlib.contextmanager
def libpq_connection(
    dsn: str, db: DatabaseSettings | None = None, *, dbname: str | None = None, app: str = "indexd-backup"
) -> Iterator[Connection]:
    """A password-free conninfo for `dsn` (optionally another dbname on the same server), with the password,
    if any, in a temporary 0600 passfile that exists only while the context is open."""
    params = parse_dsn(dsn)
    password = password_of(params, db)
    params.pop("password", None)
    if dbname is not None:
        params["dbname"] = dbname
    params.setdefault("application_name", app)
    if db is not None:
        params.setdefault("connect_timeout", str(max(1, int(db.timeouts.connect.total_seconds()))))
    conninfo = psycopg2.extensions.make_dsn(**params)
    if password is None:
        yield Connection(conninfo)
        return
    fd, path = tempfile.mkstemp(prefix="indexd-pgpass-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_passfile_line(password))
        # PGPASSWORD would win over the passfile: the child must not inherit one.
        yield Connection(conninfo, {"PGPASSFILE": path}, drop_env=("PGPASSWORD",))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _pump(stream: object, name: str, sink: deque[str] | list[str], level: int) -> None:
    """Read a child's stream line by line: log it (redacted) and keep it (tail or full capture)."""
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        line = redact_dsn(raw.decode("utf-8", "replace").rstrip("\n"))
        sink.append(line)
        if level:
            log.log(level, "%s", line if line.startswith(f"{name}:") else f"{name}: {line}")


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the child's whole process group, then SIGKILL whatever is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            # The leader is gone; its children may linger in the group: make sure they go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    drop_env: Sequence[str] = (),
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    capture_stdout: bool = False,
    check: bool = True,
    grace_s: float = TERMINATE_GRACE_S,
    cwd: str | None = None,
    stderr_keep: int = _TAIL_LINES,
    stderr_level: int = logging.INFO,
) -> CommandResult:
    """Run `argv` (no shell) to completion, timeout or cancellation; raise CommandFailed unless it exits 0.

    The last `stderr_keep` lines of stderr are kept in the result; each is logged at `stderr_level`."""
    argv = tuple(str(a) for a in argv)
    name = Path(argv[0]).name
    child_env = {k: v for k, v in os.environ.items() if k not in drop_env}
    child_env.update(env or {})
    started = time.monotonic()
    log.debug("running %s", redact_dsn(" ".join(argv)))
    try:
        proc = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_env, cwd=cwd, start_new_session=True, umask=0o077,  # what it writes is private
        )
    except OSError as exc:
        raise CommandFailed(f"cannot run {name}: {exc.strerror or exc}") from exc
    out: list[str] | deque[str] = [] if capture_stdout else deque(maxlen=_TAIL_LINES)
    err: deque[str] = deque(maxlen=max(1, stderr_keep))
    # Each reader runs in a copy of our context, so its log lines carry the job id of the caller.
    pumps = [
        threading.Thread(target=contextvars.copy_context().run, daemon=True,
                         args=(_pump, proc.stdout, name, out, 0 if capture_stdout else logging.INFO)),
        threading.Thread(target=contextvars.copy_context().run, daemon=True,
                         args=(_pump, proc.stderr, name, err, stderr_level)),
    ]
    for t in pumps:
        t.start()
    try:
        timed_out, cancelled = _wait(proc, name, started, timeout, cancel, grace_s)
    except BaseException:
        # Ctrl-C or an error in this thread: the child runs in its own session and would outlive us.
        log.warning("%s interrupted: terminating it and its children", name)
        _kill_group(proc, grace_s)
        raise
    for t in pumps:
        t.join(timeout=5)
    result = CommandResult(
        argv, proc.returncode, time.monotonic() - started,
        tuple(out) if capture_stdout else (), tuple(err), timed_out, cancelled,
    )
    log.debug("%s exited with code %s after %.2fs", name, proc.returncode, result.duration_s)
    if check and (proc.returncode != 0 or timed_out or cancelled):
        raise CommandFailed(describe_failure(result), result)
    return result


def _wait(proc: subprocess.Popen[bytes], name: str, started: float, timeout: float | None,
          cancel: threading.Event | None, grace_s: float) -> tuple[bool, bool]:
    """Wait for the child; on timeout or cancellation end its process group. Returns (timed_out, cancelled)."""
    deadline = None if timeout is None else started + timeout
    waiter = cancel or threading.Event()
    while proc.poll() is None:
        cancelled = cancel is not None and cancel.is_set()
        timed_out = not cancelled and deadline is not None and time.monotonic() >= deadline
        if cancelled or timed_out:
            log.warning("%s %s: terminating it and its children", name, "cancelled" if cancelled else "timed out")
            _kill_group(proc, grace_s)
            proc.wait()
            return timed_out, cancelled
        waiter.wait(0.05)
    return False, False


def describe_failure(result: CommandResult) -> str:
    if result.cancelled:
        what = "was cancelled"
    elif result.timed_out:
        what = f"timed out after {human_duration(result.duration_s)}"
    else:
        what = f"exited with code {result.returncode}"
    tail = "; ".join(line for line in result.stderr_tail[-5:] if line.strip())
    return f"{result.name} {what}" + (f": {tail}" if tail else "")


@functools.lru_cache(maxsize=8)
def _version_of(path: str) -> str:
    result = run_command([path, "--version"], capture_stdout=True, timeout=30, check=False)
    return result.stdout[0].strip() if result.stdout else "unknown"


def binary_version(name: str) -> str:
    """`pg_dump --version` and friends, e.g. 'pg_dump (PostgreSQL) 15.18'."""
    return _version_of(find_binary(name))
