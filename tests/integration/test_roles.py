"""sql/roles.sql applied on a real cluster; indexd logs in with a password over TCP and is held to its rights."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql

from indexd.config.schema import DatabaseSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.state.migrations import migrate
from tests.support.roles import Roles, apply_roles, drop_roles, superuser


@pytest.fixture
def roles(pg_cluster: EmbeddedCluster, pg_dbname: str) -> Iterator[Roles]:
    r = Roles.unique()
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
        drop_roles(pg_cluster, db, r)


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

        # HypoPG's functions and its view (not readable by PUBLIC), for the what-if costing.
        db.run(lambda c: _all(c, "SELECT hypopg_reset(); SELECT * FROM hypopg_create_index("
                                 "'CREATE INDEX ON public.orders (total)'); SELECT hypopg_drop_index(indexrelid) "
                                 "FROM hypopg_list_indexes"))

        # Scratch databases for test restores (CREATEDB), and cancelling another login's builds.
        scratch = sql.Identifier(f"scratch_{roles.login}")  # the role's own right, as a test restore uses it
        with db.connection(autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(scratch))
            cur.execute(sql.SQL("DROP DATABASE {}").format(scratch))
            cur.execute("SELECT pg_has_role('pg_signal_backend', 'USAGE')")
            assert cur.fetchone()[0]

        # What nobody granted stays closed.
        for statement in ("SELECT * FROM payroll.salaries", f"CREATE ROLE sneaky_{roles.login}",
                          "ALTER SYSTEM SET work_mem = '1GB'", "SELECT pg_read_file('postgresql.conf')"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), db.connection(autocommit=True) as conn, \
                    conn.cursor() as cur:
                cur.execute(statement)
    finally:
        db.close()


def test_without_owner_membership_builds_are_refused(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                     roles: Roles) -> None:
    apply_roles(pg_cluster, pg_dbname, roles, app_owner="")
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


def test_rerunning_keeps_every_right_and_createdb_can_be_withheld(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                                    roles: Roles) -> None:
    superuser(pg_cluster, pg_dbname, "DROP EXTENSION hypopg")
    out = apply_roles(pg_cluster, pg_dbname, roles)
    assert "HypoPG is not created in this database yet" in out and "this file again" in out
    superuser(pg_cluster, pg_dbname, "CREATE EXTENSION hypopg")  # created after the roles: run the file again
    apply_roles(pg_cluster, pg_dbname, roles)
    apply_roles(pg_cluster, pg_dbname, roles)

    def rights() -> tuple:
        return superuser(pg_cluster, pg_dbname, (
            "SELECT r.rolcreatedb, pg_has_role(r.oid, 'pg_read_all_stats', 'USAGE'),"
            " pg_has_role(r.oid, 'pg_signal_backend', 'USAGE'), pg_has_role(r.oid, %s, 'USAGE'),"
            " has_table_privilege(r.oid, 'public.hypopg_list_indexes', 'SELECT'),"
            " has_function_privilege(r.oid, 'public.hypopg_create_index(text)', 'EXECUTE'),"
            " has_function_privilege(r.oid, 'public.hypopg_get_indexdef(oid)', 'EXECUTE')"
            " FROM pg_roles r WHERE r.rolname = %s"), (roles.app, roles.group))[0]

    assert rights() == (True,) * 7
    apply_roles(pg_cluster, pg_dbname, roles, createdb="off")
    assert rights() == (False,) + (True,) * 6  # withheld on request only; the rest stays
    apply_roles(pg_cluster, pg_dbname, roles)
    assert rights() == (True,) * 7


def test_state_tables_a_superuser_made_go_to_the_group_role(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                            roles: Roles) -> None:
    apply_roles(pg_cluster, pg_dbname, roles)
    # What an older indexd run by a superuser left: state tables of the superuser's.
    superuser(pg_cluster, pg_dbname, f"CREATE TABLE {roles.schema}.schema_version (version int PRIMARY KEY)")
    superuser(pg_cluster, pg_dbname, f"CREATE TABLE {roles.schema}.pause (id bigserial PRIMARY KEY)")
    apply_roles(pg_cluster, pg_dbname, roles)
    owners = superuser(pg_cluster, pg_dbname, "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN "
                                              "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                       (roles.schema,))
    assert owners == [(roles.group,)]
