"""What every command shares: finding and loading the config, choosing target databases, printing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from indexd.config.load import load_settings, settings_for_dsn
from indexd.config.schema import DatabaseSettings, Settings
from indexd.errors import UsageError

if TYPE_CHECKING:  # the pool pulls in SQLAlchemy: commands that need no database do not pay for it
    from indexd.db.pool import Database

T = TypeVar("T")


def load(args: argparse.Namespace) -> Settings:
    """The settings for this command: from the config file, or with --dsn the one database it names (the
    file, if there is one, still supplies the other sections); --log-level overrides logging.level."""
    if getattr(args, "dsn", None):
        settings = settings_for_dsn(args.dsn, load_settings(args.config, required=False))
    else:
        settings = load_settings(args.config)
    if getattr(args, "log_level", None):
        settings = replace(settings, logging=replace(settings.logging, level=args.log_level))
    return settings


def targets(args: argparse.Namespace, settings: Settings) -> list[DatabaseSettings]:
    """The databases a command acts on: --database NAME, the --dsn one, or every configured database."""
    name = getattr(args, "database", None)
    if name:
        return [settings.database(name)]
    if not settings.databases:
        raise UsageError("no databases configured: add one under 'databases:' or pass --dsn")
    return list(settings.databases)


def single_target(args: argparse.Namespace, settings: Settings) -> DatabaseSettings:
    dbs = targets(args, settings)
    if len(dbs) > 1:
        names = ", ".join(d.name for d in dbs)
        raise UsageError(f"this command acts on one database: pass --database NAME (one of {names}) or --dsn")
    return dbs[0]


@contextmanager
def open_database(settings: Settings, db: DatabaseSettings) -> Iterator[Database]:
    from indexd.db.pool import Database  # heavy: SQLAlchemy, only for commands that connect through a pool

    database = Database(db, settings.retry, settings.circuit_breaker)
    try:
        yield database
    finally:
        database.close()


def connected(settings: Settings, work: Callable[[Database], T]) -> Callable[[DatabaseSettings], T]:
    """`work` run on an open pool of one database (closed after it), in the form `runner.each_database` takes."""

    def run(target: DatabaseSettings) -> T:
        with open_database(settings, target) as db:
            return work(db)

    return run


@contextmanager
def notifying(settings: Settings) -> Iterator[None]:
    """Deliver the events this command causes to the configured webhooks, in the background while it works;
    at its end wait for them at most notifications.drain_timeout (a command that changes something notifies
    like the daemon would)."""
    from indexd.service.notify import delivering  # heavy: prometheus_client, only for commands that change

    with delivering(settings.notifications):
        yield


def _json_value(value: Any) -> Any:
    """Timestamps as ISO 8601 (`2026-11-23T07:33:51+00:00`), as every listing writes them; the rest as text."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_json_value)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: Any = None, indent: str = "") -> None:
    """A plain aligned text table; cells are str()-ed, None shows as '-'; each line starts with `indent`."""
    out = out or sys.stdout
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out.write(indent + line.rstrip() + "\n")
    out.write(indent + "  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
