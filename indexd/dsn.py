"""DSN text: libpq's parsing of it, and redaction of its secrets for display.

A leaf module (psycopg2 and errors only), so config, db and log can all use it."""

from __future__ import annotations

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
