"""sql/roles.sql run the way the README says (psql as a superuser, with its variables), and the roles it makes
torn down again, for the tests that log in as the least-privilege role."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from indexd.embedded import EmbeddedCluster

ROLES_SQL = Path(__file__).resolve().parents[2] / "sql" / "roles.sql"
_n = itertools.count()


@dataclass
class Roles:
    """One set of role names (unique per test: roles are cluster-wide) and their passwords."""

    app: str
    group: str
    login: str
    other: str
    schema: str
    password: str = "indexd pw 'quoted' ok"
    app_password: str = "app-pw"
    extra: list[str] = field(default_factory=list)  # other roles a test made, dropped with these

    @classmethod
    def unique(cls, schema: str | None = None) -> Roles:
        n = f"{os.getpid()}_{next(_n)}"
        return cls(app=f"shop_owner_{n}", group=f"indexd_group_{n}", login=f"indexd_{n}", other=f"hr_{n}",
                   schema=schema or f"indexd_state_{n}")

    def variables(self, **extra: str) -> dict[str, str]:
        return {"app_owner": self.app, "group_role": self.group, "login_role": self.login,
                "state_schema": self.schema, **extra}

    def all(self) -> list[str]:
        return [self.login, self.group, self.app, self.other, *self.extra]


def psql(cluster: EmbeddedCluster, dbname: str, variables: dict[str, str], env: dict[str, str] | None = None,
         script: Path = ROLES_SQL) -> str:
    """Run a psql script as the superuser, with -v NAME=VALUE for each variable; its output (it must succeed)."""
    binary = cluster.bindir / "psql" if (cluster.bindir / "psql").exists() else shutil.which("psql")
    args = [str(binary), "-X", "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d", dbname,
            "-f", str(script)]
    for key, value in variables.items():
        args += ["-v", f"{key}={value}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def apply_roles(cluster: EmbeddedCluster, dbname: str, r: Roles, **variables: str) -> str:
    """sql/roles.sql with these roles' names; the password comes from the environment and is never echoed."""
    out = psql(cluster, dbname, r.variables(**variables), {"INDEXD_LOGIN_PASSWORD": r.password})
    assert r.password not in out
    return out


def superuser(cluster: EmbeddedCluster, dbname: str, statement: str, params: tuple = ()) -> list[tuple]:
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def drop_roles(cluster: EmbeddedCluster, dbname: str, r: Roles) -> None:
    """Everything the roles own or were granted in `dbname`, the databases they own, then the roles."""
    names = r.all()
    listed = ", ".join(f"'{n}'" for n in names)
    superuser(cluster, dbname, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ({listed})")
    for (name,) in superuser(cluster, "postgres", "SELECT datname FROM pg_database d JOIN pg_roles r ON "
                                                  f"r.oid = d.datdba WHERE r.rolname IN ({listed})"):
        cluster.drop_database(name)
    query = f"SELECT rolname FROM pg_roles WHERE rolname IN ({listed})"
    existing = [row[0] for row in superuser(cluster, dbname, query)]
    if existing:
        superuser(cluster, dbname, f"DROP OWNED BY {', '.join(existing)} CASCADE")
    for role in names:
        superuser(cluster, dbname, f"DROP ROLE IF EXISTS {role}")
