"""Connection keyword arguments for libpq: the DSN plus indexd's timeouts, keepalives and application name."""

from __future__ import annotations

from typing import Any

from indexd.config.schema import DatabaseSettings
from indexd.config.secrets import file_password
from indexd.dsn import parse_dsn


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
    password = None if "password" in params else file_password(db)
    if password is not None:
        kwargs["password"] = password
    return kwargs
