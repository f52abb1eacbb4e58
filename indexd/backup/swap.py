"""Swapping a restored scratch database in for an existing one, with no moment where the target's data exists
nowhere: close the target to new connections, end the open ones, rename it aside, rename the scratch database
in, and only then drop the old one. A failure undoes the steps taken so far, newest first (the old database is
renamed back and opened again); the caller drops its scratch database.

`hook` is called with each step's name right before the step runs: tests drive a failure at every step with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from indexd.errors import BackupError

log = logging.getLogger(__name__)

Connection: TypeAlias = psycopg2.extensions.connection
Hook = Callable[[str], None]
CLOSE, DISCONNECT, RENAME_ASIDE, RENAME_IN, DROP_OLD = (
    "close the target", "end its connections", "rename the target aside", "rename the restored database in",
    "drop the old database")
STEPS = (CLOSE, DISCONNECT, RENAME_ASIDE, RENAME_IN, DROP_OLD)


@dataclass(frozen=True)
class _Step:
    name: str
    run: Callable[[], None]
    undo: Callable[[], None] | None = None


def _allow_connections(admin: Connection, name: str, allow: bool) -> None:
    with admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")))


def _disconnect(admin: Connection, name: str) -> None:
    """End every other session on `name`; RENAME then waits (up to 5 s, in the server) for them to exit."""
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def rename_database(admin: Connection, old: str, new: str) -> None:
    with admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _drop(admin: Connection, name: str) -> None:
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _steps(admin: Connection, scratch: str, target: str, aside: str) -> list[_Step]:
    return [
        _Step(CLOSE, lambda: _allow_connections(admin, target, False),
              lambda: _allow_connections(admin, target, True)),
        _Step(DISCONNECT, lambda: _disconnect(admin, target)),
        _Step(RENAME_ASIDE, lambda: rename_database(admin, target, aside),
              lambda: rename_database(admin, aside, target)),
        _Step(RENAME_IN, lambda: rename_database(admin, scratch, target)),
    ]


def _undo(done: list[_Step], target: str, aside: str) -> None:
    """Undo the steps taken, newest first; a failed undo is reported with what the operator must do."""
    for step in reversed(done):
        if step.undo is None:
            continue
        try:
            step.undo()
        except psycopg2.Error as exc:
            log.critical("undoing %r failed: %s; the previous contents of %s are in database %s: rename it back "
                         "with ALTER DATABASE %s RENAME TO %s and ALTER DATABASE %s WITH ALLOW_CONNECTIONS true",
                         step.name, str(exc).strip(), target, aside, aside, target, target)
            return


def swap_in(admin: Connection, scratch: str, target: str, aside: str, *, hook: Hook | None = None) -> str | None:
    """Replace database `target` by `scratch` (same server, `admin` in autocommit). Returns None, or the name
    of the old database when it could not be dropped at the end (the restore stands; the old copy is kept).

    On failure before the scratch database is renamed in, `target` is as it was and BackupError is raised."""
    done: list[_Step] = []
    current = ""
    try:
        for step in _steps(admin, scratch, target, aside):
            current = step.name
            if hook is not None:
                hook(step.name)
            step.run()
            done.append(step)
    except BaseException as exc:
        _undo(done, target, aside)
        if isinstance(exc, psycopg2.Error):
            raise BackupError(f"restore into {target!r} failed to {current}: {str(exc).strip()}; "
                              f"{target!r} is unchanged") from None
        raise
    try:
        if hook is not None:
            hook(DROP_OLD)
        _drop(admin, aside)
    except Exception as exc:  # the restore stands whatever stops the drop of the old copy
        log.error("restored into %s, but the previous database (now %s) could not be dropped: %s; drop it with "
                  "DROP DATABASE %s", target, aside, str(exc).strip(), aside)
        return aside
    return None


def drop_quietly(admin: Connection, name: str) -> None:
    """Drop a scratch database on a failure path; a failure to do so is logged with the name to drop by hand."""
    try:
        _drop(admin, name)
    except psycopg2.Error as exc:
        log.error("scratch database %s could not be dropped (%s): drop it with DROP DATABASE %s",
                  name, str(exc).strip(), name)
