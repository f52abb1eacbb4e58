"""sql/roles.sql applied on a real cluster; indexd logs in with a password over TCP and is held to its rights."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from indexd.config.schema import DatabaseSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.state.migrations import migrate

ROLES_SQL = Path(__file__).resolve().parents[2] / "sql" / "roles.sql"
_n = itertools.count()


@dataclass
class Roles:
    app: str
    group: str
    login: str
    other: str
    schema: str
    password: str = "indexd pw 'quoted' ok"
    app_password: str = "app-pw"


def psql(cluster: EmbeddedCluster, dbname: str, variables: dict[str, str], env: dict[str, str]) -> str:
    binary = cluster.bindir / "psql" if (cluster.bindir / "psql").exists() else shutil.which("psql")
    args = [str(binary), "-X", "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d", dbname,
            "-f", str(ROLES_SQL)]
    for key, value in variables.items():
        args += ["-v", f"{key}={value}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def superuser(cluster: EmbeddedCluster, dbname: str, statement: str, params: tuple = ()) -> list[tuple]:
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def roles(pg_cluster: EmbeddedCluster, pg_dbname: str) -> Iterator[Roles]:
    n = next(_n)
    r = Roles(app=f"shop_owner_{n}", group=f"indexd_group_{n}", login=f"indexd_{n}", other=f"hr_{n}",
              schema=f"indexd_state_{n}")
    db = pg_dbname
    superuser(pg_cluster, db, f"CREATE ROLE {r.app} LOGIN PASSWORD %s", (r.app_password,))
    superuser(pg_cluster, db, f"CREATE ROLE {r.other} NOLOGIN")
    superuser(pg_cluster, db, "CREATE TABLE public.orders (id int PRIMARY KEY, customer int, total numeric)")
    superuser(pg_cluster, db, "INSERT INTO public.orders SELECT i, i % 100, i FROM generate_series(1, 2000) i")
    superuser(pg_cluster, db, f"ALTER TABLE public.orders OWNER TO {r.app}")
    superuser(pg_cluster, db, f"GRANT CREATE ON SCHEMA public TO {r.app}")  # the app made its tables there
    superuser(pg_cluster, db, f"CREATE SCHEMA payroll AUTHORIZATION {r.other}")
    superuser(pg_cluster, db, "CREATE TABLE payroll.salaries (who text, amount int)")
    superuser(pg_cluster, db, f"ALTER TABLE payroll.salaries OWNER TO {r.other}")
    try:
        yield r
    finally:
        roles_list = ", ".join([r.login, r.group, r.app, r.other])
        superuser(pg_cluster, db, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  f"WHERE usename IN ('{r.login}', '{r.app}')")
        superuser(pg_cluster, db, f"DROP OWNED BY {roles_list} CASCADE")
        for role in (r.login, r.group, r.app, r.other):
            superuser(pg_cluster, db, f"DROP ROLE IF EXISTS {role}")


def apply_roles(cluster: EmbeddedCluster, dbname: str, r: Roles) -> None:
    variables = {"app_owner": r.app, "group_role": r.group, "login_role": r.login, "state_schema": r.schema}
    out = psql(cluster, dbname, variables, {"INDEXD_LOGIN_PASSWORD": r.password})
    assert r.password not in out


def test_least_privilege_role(pg_cluster: EmbeddedCluster, pg_dbname: str, roles: Roles) -> None:
    apply_roles(pg_cluster, pg_dbname, roles)
    apply_roles(pg_cluster, pg_dbname, roles)  # idempotent

    # The application runs a query of its own, as its own user.
    app = psycopg2.connect(pg_cluster.dsn(pg_dbname, roles.app, roles.app_password))
    with app.cursor() as cur:
        cur.execute("SELECT total FROM orders WHERE customer = 42 AND total > 1000")
    app.close()

    settings = DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname, roles.login, roles.password),
                                state_schema=roles.schema)
    db = Database(settings)
    try:
        who = db.run(lambda c: _one(c, "SELECT session_user, current_user, current_setting('is_superuser')"))
        assert who == (roles.login, roles.group, "off")

        # pg_read_all_stats through pg_monitor: other users' statements, with their text.
        texts = db.run(lambda c: _all(
            c, "SELECT s.query FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
               "WHERE r.rolname = %s", (roles.app,)))
        assert any("FROM orders WHERE customer" in q for (q,) in texts)

        # Migrations into its own schema; the tables belong to the group role, whichever login made them.
        assert migrate(db)
        owners = db.run(lambda c: _all(c, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = %s",
                                       (roles.schema,)))
        assert owners == [(roles.group,)]

        # CREATE INDEX CONCURRENTLY on an application table, allowed only through membership in its owner role.
        with db.connection(autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("CREATE INDEX CONCURRENTLY orders_customer_idx ON public.orders (customer)")
        assert superuser(pg_cluster, pg_dbname, "SELECT indisvalid FROM pg_index "
                                                "WHERE indexrelid = 'orders_customer_idx'::regclass") == [(True,)]

        # The honest price of that membership: it could drop the table too (rolled back here).
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SAVEPOINT s")
            cur.execute("DROP TABLE public.orders")
            cur.execute("ROLLBACK TO SAVEPOINT s")

        # What nobody granted stays closed.
        for statement in ("SELECT * FROM payroll.salaries", f"CREATE ROLE sneaky_{roles.login}",
                          "CREATE DATABASE sneaky", "ALTER SYSTEM SET work_mem = '1GB'",
                          "SELECT pg_read_file('postgresql.conf')"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), db.connection(autocommit=True) as conn, \
                    conn.cursor() as cur:
                cur.execute(statement)
    finally:
        db.close()


def test_without_owner_membership_builds_are_refused(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                     roles: Roles) -> None:
    variables = {"app_owner": "", "group_role": roles.group, "login_role": roles.login, "state_schema": roles.schema}
    psql(pg_cluster, pg_dbname, variables, {"INDEXD_LOGIN_PASSWORD": roles.password})
    db = Database(DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname, roles.login, roles.password),
                                   state_schema=roles.schema))
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="must be owner"), \
                db.connection(autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("CREATE INDEX CONCURRENTLY orders_total_idx ON public.orders (total)")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM public.orders")
        assert migrate(db)  # its own schema still works
    finally:
        db.close()


def _one(conn, statement: str, params: tuple = ()) -> tuple:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchone()


def _all(conn, statement: str, params: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()
