"""Connection keyword arguments for libpq: the DSN plus indexd's timeouts, keepalives and application name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from indexd.config.schema import DatabaseSettings
from indexd.dsn import parse_dsn
from indexd.errors import ConfigError


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
