"""DSN text: libpq's parsing of it, and redaction of its secrets for display.

A leaf module (psycopg2 and errors only), so config, db and log can all use it."""

from __future__ import annotations

import os
import re

import psycopg2.extensions

from indexd.errors import ConfigError

_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_dsn(text: str) -> str:
    """Replace any password in a URI or key=value DSN (or text containing one) by ***."""
    text = _URI_PASSWORD.sub(r"\1***\3", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def parse_dsn(dsn: str) -> dict[str, str]:
    """libpq's own parsing of a URI or key=value DSN; a ConfigError (without the password) if it is bad."""
    try:
        params = dict(psycopg2.extensions.parse_dsn(dsn))
    except psycopg2.ProgrammingError as exc:
        raise ConfigError(f"invalid DSN {redact_dsn(dsn)!r}: {str(exc).strip()}") from None
    # libpq checks the port only when it connects, and that failure would look transient and be retried.
    for port in params.get("port", "").split(","):
        if port.strip() and not (port.strip().isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"invalid DSN {redact_dsn(dsn)!r}: port {port.strip()!r} is not a number from 1 to 65535")
    return params


def server_of(dsn: str) -> str:
    """The server a DSN points at, as `host:port` (libpq's PGHOST/PGPORT and defaults filling the gaps): the key
    that databases of one server share (a connection budget, a leadership session)."""
    params = parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "local socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    return f"{host}:{port}"


def with_dbname(dsn: str, dbname: str) -> str:
    """The same DSN (user, password, TLS and all) for another database of the same server."""
    parse_dsn(dsn)  # a clear error for a bad DSN, never libpq's own with the password in it
    return str(psycopg2.extensions.make_dsn(dsn, dbname=dbname))
