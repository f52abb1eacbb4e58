"""Restoring a backup, from its manifest alone (the source database and its state schema may be gone).

The checksum is verified first. The dump is restored into a fresh database; when the target already exists
(and the operator confirmed), it is restored beside it under a scratch name and only swapped in (`swap`: the
old one renamed aside, the new one renamed in, then the old one dropped) once pg_restore succeeded, so a failed
restore leaves the existing database untouched and removes its scratch database. Template databases and the
database the restore connects to for CREATE/RENAME are refused, and missing privileges are named up front.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from indexd.backup.catalog import find_backup
from indexd.backup.command import find_binary, libpq_connection, password_of, run_command
from indexd.backup.manifest import BackupInfo, checksum_problems
from indexd.backup.swap import Hook, drop_quietly, swap_in
from indexd.backup.vetting import require_own
from indexd.clock import monotonic
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.conninfo import connect_kwargs
from indexd.dsn import parse_dsn, redact_dsn
from indexd.errors import BackupError, UsageError, first_line
from indexd.state.audit import record_event, record_intent, record_outcome

log = logging.getLogger(__name__)

Confirm = Callable[[str], bool]
MAX_IDENTIFIER = 63
ADMIN_DB = "postgres"
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")  # needs no quotes in SQL


class ConfirmationRequired(BackupError):
    """A destructive restore was neither confirmed interactively nor allowed with --yes."""

    exit_code = 2


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    target_db: str
    replaced_existing: bool
    jobs: int
    duration_s: float
    kept_old: str | None = None  # the previous database, when it could not be dropped after the swap


def pg_restore_list(path: Path) -> int:
    """`pg_restore --list` of a dump: proves it is readable to the end of its table of contents.

    Returns the number of entries."""
    result = run_command([find_binary("pg_restore"), "--list", str(path)], capture_stdout=True, timeout=600)
    return sum(1 for line in result.stdout if line.strip() and not line.startswith(";"))


def scratch_name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"[:MAX_IDENTIFIER]


def server_kwargs(dsn: str, db: DatabaseSettings | None, dbname: str, app: str = "indexd-restore") -> dict[str, str]:
    """psycopg2.connect arguments for database `dbname` on the server of `dsn` (password_file honoured)."""
    params = parse_dsn(dsn)
    params.update(dbname=dbname, application_name=app)
    params.setdefault("connect_timeout", "10")
    password = password_of(params, db)
    if password is not None:
        params["password"] = password
    return params


@contextlib.contextmanager
def admin_connection(dsn: str, db: DatabaseSettings | None = None) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to the server's `postgres` database (CREATE/DROP/RENAME DATABASE)."""
    try:
        conn = psycopg2.connect(**server_kwargs(dsn, db, ADMIN_DB))
    except psycopg2.Error as exc:
        raise BackupError(f"cannot connect to {redact_dsn(dsn)} to restore: {first_line(exc)}") from None
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def database_exists(conn: psycopg2.extensions.connection, name: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def _role_fix(conn: psycopg2.extensions.connection) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        role = str(cur.fetchone()[0])
    return (f"role {role!r} may not create databases, which a restore needs: run "
            f"ALTER ROLE {role if _PLAIN_NAME.fullmatch(role) else psycopg2.extensions.quote_ident(role, conn)} "
            "CREATEDB as a superuser, "
            "or pass --target-dsn with a role that has CREATEDB")


def create_database(conn: psycopg2.extensions.connection, name: str) -> None:
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    except psycopg2.errors.InsufficientPrivilege:
        raise BackupError(f"cannot create database {name!r}: {_role_fix(conn)}") from None


def check_target(conn: psycopg2.extensions.connection, target_db: str) -> None:
    """Refuse a template database and the database this connection is on (it cannot be renamed or dropped)."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_database(), (SELECT datistemplate FROM pg_database WHERE datname = %s)",
                    (target_db,))
        own, template = cur.fetchone()
    if template or target_db in ("template0", "template1"):
        raise UsageError(f"--target-db {target_db}: refusing to restore into a template database (every new "
                         "database is copied from it); choose another name")
    if target_db == own:
        raise UsageError(f"--target-db {target_db}: refusing to restore into {own!r}, the database indexd "
                         "connects to for creating and renaming databases on this server; choose another name")


def check_privileges(conn: psycopg2.extensions.connection, target_db: str, exists: bool) -> None:
    """Name a missing privilege before anything is created: CREATEDB, and ownership of a database replaced."""
    with conn.cursor() as cur:
        cur.execute("SELECT r.rolname, r.rolsuper OR r.rolcreatedb, "
                    "  (SELECT pg_has_role(r.oid, d.datdba, 'USAGE') FROM pg_database d WHERE d.datname = %s), "
                    "  (SELECT pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = %s) "
                    "FROM pg_roles r WHERE r.rolname = current_user", (target_db, target_db))
        role, may_create, owns, owner = cur.fetchone()
    if not may_create:
        raise BackupError(_role_fix(conn))
    if exists and not owns:
        raise BackupError(f"role {role!r} cannot replace database {target_db!r}, which belongs to {owner!r}: "
                          "restore as its owner or a superuser (--target-dsn with that role)")


def drop_database(conn: psycopg2.extensions.connection, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pg_restore_into(info: BackupInfo, dsn: str, db: DatabaseSettings | None, dbname: str, *, jobs: int,
                    no_owner: bool = False, cancel: threading.Event | None = None) -> None:
    """Run pg_restore of `info` into the existing, empty database `dbname` on the server of `dsn` (a test restore,
    which leaves out what its role cannot create, is backup/scratch.py's)."""
    with libpq_connection(dsn, db, dbname=dbname, app="indexd-restore") as conn:
        argv = [find_binary("pg_restore"), "--no-password", "--exit-on-error", f"--jobs={max(1, jobs)}"]
        if no_owner:
            argv += ["--no-owner", "--no-privileges"]
        argv += ["--dbname", conn.conninfo, str(info.path)]
        run_command(argv, env=conn.env, drop_env=conn.drop_env, cancel=cancel)


def configured_database(settings: Settings, info: BackupInfo) -> DatabaseSettings | None:
    return next((d for d in settings.databases if d.name == info.database), None)


def server_for(settings: Settings, info: BackupInfo, target_dsn: str | None) -> tuple[str, DatabaseSettings | None]:
    """The server to restore on: --target-dsn, else the backup's own database from the configuration."""
    configured = configured_database(settings, info)
    if target_dsn:
        return target_dsn, None
    if configured is None:
        raise UsageError(f"backup {info.id} belongs to {info.database!r}, which is not in the configuration: "
                         "pass --target-dsn to say which server to restore on")
    return configured.dsn, configured


@contextlib.contextmanager
def _audit_connection(db: DatabaseSettings | None) -> Iterator[psycopg2.extensions.connection | None]:
    """An autocommit connection to the backup's own database for the audit log; None when unavailable."""
    if db is None:
        yield None
        return
    kwargs = connect_kwargs(db)
    kwargs["connect_timeout"] = "5"
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        log.warning("restore not written to the audit log of %s: %s", db.name, str(exc).strip())
        yield None
        return
    conn.autocommit = True
    try:
        yield conn
    except psycopg2.Error as exc:
        log.warning("restore not written to the audit log of %s: %s", db.name, first_line(exc))
    finally:
        conn.close()


def _audit_intent(db: DatabaseSettings | None, target: str, info: BackupInfo, before: dict[str, Any]) -> int | None:
    with _audit_connection(db) as conn:
        if conn is not None and db is not None:
            return record_intent(conn, db.state_schema, action="restore", target=target,
                                 reason=f"restore backup {info.id}", before=before)
    return None


def _audit_outcome(db: DatabaseSettings | None, intent_id: int, target: str, *, outcome: str,
                   reason: str | None = None, after: Any = None, duration_s: float | None = None) -> None:
    """The outcome of a restore. When the restore replaced the very database that held the intent, the intent
    is gone: the outcome is then written as an event of its own."""
    with _audit_connection(db) as conn:
        if conn is None or db is None:
            return
        try:
            record_outcome(conn, db.state_schema, intent_id, outcome=outcome, reason=reason, after=after,
                           duration_s=duration_s)
        except ValueError:
            record_event(conn, db.state_schema, action="restore", target=target, outcome=outcome, reason=reason,
                         after=after)


def _default_jobs(info: BackupInfo, db: DatabaseSettings | None) -> int:
    if info.format != "directory":
        return 1
    return int(info.manifest.get("jobs") or (db.backups.jobs if db else 2))


def _confirm_overwrite(target_db: str, info: BackupInfo, assume_yes: bool, confirm: Confirm | None) -> None:
    if assume_yes:
        return
    question = (f"Database {target_db!r} exists. Replace it with backup {info.id} "
                f"(taken {info.started_at:%Y-%m-%d %H:%M} UTC)? Its current contents will be lost.")
    if confirm is None:
        raise ConfirmationRequired(f"refusing to overwrite existing database {target_db!r} without confirmation: "
                                   "run on a terminal to be asked, or pass --yes")
    if not confirm(question):
        raise ConfirmationRequired(f"restore of {info.id} into {target_db!r} declined; nothing was changed")


def _restore_and_swap(admin: psycopg2.extensions.connection, info: BackupInfo, dsn: str,
                      db: DatabaseSettings | None, target_db: str, exists: bool, hook: Hook | None,
                      **options: Any) -> str | None:
    """pg_restore into a new database (a scratch one when the target exists, then swapped in). Every failure
    drops what this created; returns the old database's name when only its final drop failed."""
    into = scratch_name("indexd_restore") if exists else target_db
    create_database(admin, into)
    log.info("restoring %s into %s%s with %d job(s)", info.id, target_db,
             f" (via scratch database {into})" if exists else "", options["jobs"])
    try:
        pg_restore_into(info, dsn, db, into, **options)
        # The swap: nothing is lost before pg_restore has fully succeeded, and nothing while it runs.
        return swap_in(admin, into, target_db, scratch_name("indexd_old"), hook=hook) if exists else None
    except BaseException:
        drop_quietly(admin, into)
        raise


def _check_target_name(target_db: str) -> None:
    """PostgreSQL cuts longer names to 63 bytes without an error: the restore would land in another database."""
    size = len(target_db.encode())
    if not 0 < size <= MAX_IDENTIFIER:
        raise UsageError(f"--target-db: a database name has 1 to {MAX_IDENTIFIER} bytes, "
                         f"{target_db!r} has {size}")


def _checked_target(admin: psycopg2.extensions.connection, target_db: str) -> bool:
    """Refuse a target that cannot or may not be restored into, before anything is created; whether it exists."""
    try:
        check_target(admin, target_db)
        exists = database_exists(admin, target_db)
        check_privileges(admin, target_db, exists)
    except psycopg2.Error as exc:
        raise BackupError(f"cannot restore into {target_db!r}: {first_line(exc)}") from None
    return exists


def restore(settings: Settings, backup_id: str, target_db: str, *, target_dsn: str | None = None,
            jobs: int | None = None, assume_yes: bool = False, confirm: Confirm | None = None,
            no_owner: bool = False, cancel: threading.Event | None = None,
            swap_hook: Hook | None = None) -> RestoreResult:
    """Restore backup `backup_id` into `target_db`; an existing database is replaced only once confirmed.

    `swap_hook` is called before each step of the swap (see `swap`); tests drive failures with it."""
    _check_target_name(target_db)
    info = require_own(find_backup(settings, backup_id), "restore")
    problems = checksum_problems(info)
    if problems:
        raise BackupError(f"refusing to restore {backup_id}: " + "; ".join(problems))
    if info.status == "failed":
        log.warning("backup %s is marked failed (%s); its checksum matches, so it is restored anyway",
                    backup_id, info.error)
    dsn, db = server_for(settings, info, target_dsn)
    jobs = jobs or _default_jobs(info, db)
    started = monotonic()
    audited = configured_database(settings, info)
    with admin_connection(dsn, db) as admin:
        exists = _checked_target(admin, target_db)
        if exists:
            _confirm_overwrite(target_db, info, assume_yes, confirm)
        intent = _audit_intent(audited, target_db, info,
                               {"target_existed": exists, "backup": info.id, "server": redact_dsn(dsn)})
        try:
            kept = _restore_and_swap(admin, info, dsn, db, target_db, exists, swap_hook, jobs=jobs,
                                     no_owner=no_owner, cancel=cancel)
        except BaseException as exc:
            if intent is not None:
                _audit_outcome(audited, intent, target_db, outcome="failed", reason=redact_dsn(str(exc))[:500])
            if isinstance(exc, psycopg2.Error):
                raise BackupError(f"restore of {backup_id} into {target_db!r} failed: {first_line(exc)}") from None
            raise
    duration = monotonic() - started
    if intent is not None:
        _audit_outcome(audited, intent, target_db, outcome="succeeded", duration_s=duration,
                       after={"replaced_existing": exists, "old_database_kept": kept})
    log.info("restored %s into %s in %.1fs%s", backup_id, target_db, duration,
             " (replaced the existing database)" if exists else "")
    return RestoreResult(backup_id, target_db, exists, jobs, duration, kept)
