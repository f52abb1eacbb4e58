"""DSN handling: connection keyword arguments for libpq, and redaction of secrets for display."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg2.extensions

from indexd.config.schema import DatabaseSettings
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


def connect_kwargs(db: DatabaseSettings) -> dict[str, Any]:
    """Keyword arguments for psycopg2.connect: the DSN plus our timeouts, keepalives and application name.

    libpq's environment (PGHOST, PGPASSWORD, PGSSLMODE, ...) and ~/.pgpass keep working because we only add
    what the DSN does not already say.
    """
    params = parse_dsn(db.dsn)
    t = db.timeouts
    kwargs: dict[str, Any] = {"dsn": db.dsn}
    defaults = {
        "connect_timeout": str(max(1, int(t.connect.total_seconds()))),
        "application_name": "indexd",
        "keepalives": "1",
        "keepalives_idle": str(int(t.keepalives_idle.total_seconds())),
        "keepalives_interval": str(int(t.keepalives_interval.total_seconds())),
        "keepalives_count": str(t.keepalives_count),
        # Unacknowledged data (a dead host, a partition) drops the connection as soon as keepalives would.
        "tcp_user_timeout": str(
            int((t.keepalives_idle + t.keepalives_interval * t.keepalives_count).total_seconds() * 1000)
        ),
    }
    for key, value in defaults.items():
        if key not in params:
            kwargs[key] = value
    idle_ms = int(t.idle_in_transaction.total_seconds() * 1000)
    if "options" not in params and idle_ms:
        kwargs["options"] = f"-c idle_in_transaction_session_timeout={idle_ms}"
    if db.password_file and "password" not in params:
        try:
            kwargs["password"] = Path(db.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"databases.{db.name}.password_file: cannot read {db.password_file}: {exc.strerror}"
            ) from None
    return kwargs
