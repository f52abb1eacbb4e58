"""One connection attempt, and why it failed, by SQLSTATE.

psycopg2 2.9 gives no SQLSTATE for a failed connection: a wrong password, an unknown database and a refused TCP
connection all arrive as OperationalError with ``pgcode`` and ``diag.sqlstate`` None, told apart only by
(localised) message text. To classify them by code, a failed attempt that got an answer from the server is
repeated once through libpq's non-blocking API with error verbosity PQERRORS_SQLSTATE, which makes libpq
report the server's SQLSTATE ("FATAL:  28P01"); `PQconnectionNeedsPassword` tells that no password was
available at all. The probe costs one extra round of the startup handshake, only after a failure, and is
skipped when the attempt timed out (a silent server has no SQLSTATE to give).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import getpass
import glob
import logging
import os
import re
import select
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from indexd.dsn import parse_dsn
from indexd.errors import ConnectionFailed, first_line

log = logging.getLogger(__name__)

_SQLSTATE_IN_MESSAGE = re.compile(r":\s+([0-9A-Z]{5})(?=:|\s*$)", re.MULTILINE)
PQERRORS_VERBOSE, PQERRORS_SQLSTATE = 2, 3
PGRES_POLLING_FAILED, PGRES_POLLING_READING, PGRES_POLLING_WRITING, PGRES_POLLING_OK = 0, 1, 2, 3
PROBE_TIMEOUT = 3.0  # an authentication answer takes milliseconds; a silent server is not worth waiting for


class ConnectAttemptFailed(psycopg2.OperationalError):
    """A failed connection attempt, with the SQLSTATE the server answered (None: it never answered)."""

    sqlstate: str | None = None
    needs_password: bool = False


@dataclass(frozen=True)
class Diagnosis:
    sqlstate: str | None
    needs_password: bool


class _Libpq:
    """The few libpq functions the probe needs, loaded once (psycopg2's bundled copy, else the system one)."""

    def __init__(self) -> None:
        here = os.path.dirname(os.path.dirname(psycopg2.__file__))
        paths = sorted(glob.glob(os.path.join(here, "psycopg2_binary.libs", "libpq*.so*")))
        system = ctypes.util.find_library("pq")
        self.lib: Any = None
        for path in [*paths, system]:
            if not path:
                continue
            try:
                self.lib = ctypes.CDLL(path)
                break
            except OSError:
                continue
        if self.lib is None:
            return
        lib, vp, cp = self.lib, ctypes.c_void_p, ctypes.c_char_p
        lib.PQconnectStartParams.restype = vp
        lib.PQconnectStartParams.argtypes = [ctypes.POINTER(cp), ctypes.POINTER(cp), ctypes.c_int]
        for name in ("PQconnectPoll", "PQsocket", "PQconnectionNeedsPassword", "PQfinish"):
            getattr(lib, name).argtypes = [vp]
        lib.PQerrorMessage.argtypes = [vp]
        lib.PQerrorMessage.restype = cp
        lib.PQsetErrorVerbosity.argtypes = [vp, ctypes.c_int]
        self.verbosity = PQERRORS_SQLSTATE if lib.PQlibVersion() >= 120000 else PQERRORS_VERBOSE


_libpq: _Libpq | None = None


def _load() -> _Libpq:
    global _libpq
    if _libpq is None:
        _libpq = _Libpq()
        if _libpq.lib is None:
            log.warning("libpq not found for diagnosing connection failures; they will all be treated as transient")
    return _libpq


def diagnose(kwargs: dict[str, Any], timeout: float = PROBE_TIMEOUT) -> Diagnosis:
    """Repeat a failed connection attempt to learn the server's SQLSTATE (None when it does not answer)."""
    libpq = _load()
    if libpq.lib is None:
        return Diagnosis(None, False)
    lib = libpq.lib
    conninfo = psycopg2.extensions.make_dsn(**kwargs).encode()
    keys = (ctypes.c_char_p * 2)(b"dbname", None)
    values = (ctypes.c_char_p * 2)(conninfo, None)
    conn = lib.PQconnectStartParams(keys, values, 1)
    if not conn:
        return Diagnosis(None, False)
    try:
        lib.PQsetErrorVerbosity(conn, libpq.verbosity)
        deadline = time.monotonic() + timeout
        status = PGRES_POLLING_WRITING
        while status not in (PGRES_POLLING_FAILED, PGRES_POLLING_OK):
            left = deadline - time.monotonic()
            sock = lib.PQsocket(conn)
            if left <= 0 or sock < 0:
                return Diagnosis(None, False)
            reading = status == PGRES_POLLING_READING
            ready = select.select([sock] if reading else [], [] if reading else [sock], [], left)
            if not any(ready):
                return Diagnosis(None, False)
            status = lib.PQconnectPoll(conn)
        if status == PGRES_POLLING_OK:  # it works now: whatever failed before was transient
            return Diagnosis(None, False)
        message = (lib.PQerrorMessage(conn) or b"").decode("utf-8", "replace")
        codes = _SQLSTATE_IN_MESSAGE.findall(message)
        return Diagnosis(codes[-1] if codes else None, bool(lib.PQconnectionNeedsPassword(conn)))
    finally:
        lib.PQfinish(conn)


def role_of(kwargs: dict[str, Any]) -> str:
    """The role libpq logs in as: the DSN's user, else PGUSER, else the OS user."""
    user = kwargs.get("user") or parse_dsn(kwargs.get("dsn", "")).get("user")
    return str(user or os.environ.get("PGUSER") or getpass.getuser())


def connect_once(name: str, kwargs: dict[str, Any], connect_timeout: float) -> psycopg2.extensions.connection:
    """One psycopg2 connection attempt. A failure raises ConnectionFailed when retrying cannot help (wrong password,
    no password, unknown database), else ConnectAttemptFailed carrying the SQLSTATE if the server gave one."""
    started = time.monotonic()
    try:
        return psycopg2.connect(**kwargs)
    except psycopg2.OperationalError as exc:
        if exc.pgcode:
            raise
        timed_out = time.monotonic() - started >= 0.9 * connect_timeout
        found = Diagnosis(None, False) if timed_out else diagnose(kwargs, min(PROBE_TIMEOUT, connect_timeout))
        error = ConnectAttemptFailed(first_line(exc, "connection failed"))
        error.sqlstate = found.sqlstate
        error.needs_password = found.needs_password
        permanent = _permanent_message(name, role_of(kwargs), found)
        if permanent:
            raise ConnectionFailed(permanent) from error
        raise error from exc


def _permanent_message(name: str, role: str, found: Diagnosis) -> str | None:
    code = found.sqlstate or ""
    if found.needs_password:
        return (
            f"no password for database {name} as user {role}: the server asks for one; set it through "
            "password_file, PGPASSWORD or ~/.pgpass"
        )
    if code.startswith("28"):
        return (
            f"authentication failed for database {name} as user {role} (SQLSTATE {code}): check the password "
            "source (password_file / PGPASSWORD / .pgpass) and pg_hba.conf"
        )
    if code == "3D000":
        return f"database {name}: the server has no such database (SQLSTATE 3D000); check the DSN's dbname"
    return None
