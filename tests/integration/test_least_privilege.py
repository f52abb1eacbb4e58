"""The README's "Running it on your databases" as a new user follows it, as the least-privilege role of
sql/roles.sql: extensions created by a superuser, the roles file through psql, a config folder with its modes,
`indexd check` (exit 0), `indexd migrate`, `indexd recommend --json`; and the traps around it: a superuser who
ran indexd first, state tables left to another role, a test restore without superuser."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexd.cli import main
from indexd.config.load import load_settings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.service.databases import ensure_prepared
from indexd.service.runtime import DatabaseRuntime
from tests.support.roles import Roles, apply_roles, drop_roles, superuser

SCHEMA = [
    "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, region int NOT NULL)",
    "INSERT INTO customers SELECT g, 'c' || g || '@example.com', g % 40 FROM generate_series(1, 20000) g",
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL, total int,"
    " placed_at timestamptz NOT NULL)",
    "INSERT INTO orders SELECT g, g % 20000, CASE WHEN g % 50 = 0 THEN 'open' ELSE 'done' END, g % 700,"
    " now() - g * interval '1 minute' FROM generate_series(1, 60000) g",
    "ANALYZE",
]
WORKLOAD = [
    "SELECT id, region FROM customers WHERE email = 'c{n}@example.com'",
    "SELECT id, total FROM orders WHERE customer_id = {n} ORDER BY placed_at DESC LIMIT 10",
    "SELECT count(*) FROM orders WHERE status = 'open' AND total > {n}",
]


@pytest.fixture
def app(pg_cluster: EmbeddedCluster, pg_dbname: str) -> Iterator[Roles]:
    """The application's tables, owned by the application's role, and a small workload it ran."""
    r = Roles.unique(schema="indexd")
    superuser(pg_cluster, pg_dbname, f"CREATE ROLE {r.app} LOGIN PASSWORD %s", (r.app_password,))
    conn = pg_cluster.connect(pg_dbname)
    try:
        with conn.cursor() as cur:
            for statement in SCHEMA:
                cur.execute(statement)
            cur.execute(f"ALTER TABLE customers OWNER TO {r.app}")
            cur.execute(f"ALTER TABLE orders OWNER TO {r.app}")
            cur.execute(f"GRANT CREATE ON SCHEMA public TO {r.app}")
            cur.execute("SELECT pg_stat_statements_reset()")
    finally:
        conn.close()
    app_conn = pg_cluster.connect(pg_dbname)  # the workload, as the superuser here: whose it is does not matter
    try:
        with app_conn.cursor() as cur:
            for n in range(1, 31):
                for statement in WORKLOAD:
                    cur.execute(statement.format(n=n * 37))
    finally:
        app_conn.close()
    try:
        yield r
    finally:
        drop_roles(pg_cluster, pg_dbname, r)


def config_dir(tmp_path: Path) -> Path:
    """/etc/indexd as the README makes it (here under tmp_path): the folder 0750, the file 0640."""
    folder = tmp_path / "etc" / "indexd"
    folder.mkdir(parents=True, mode=0o750)
    folder.chmod(0o750)
    return folder


def write_config(folder: Path, dsn: str, tmp_path: Path, password: str | None = None) -> Path:
    lines = ["environment: development", "databases:", "  - name: main", f"    dsn: {dsn}"]
    if password is not None:
        secret = folder / "main.password"
        secret.write_text(password + "\n", encoding="utf-8")
        secret.chmod(0o600)
        lines.append(f"    password_file: {secret}")
    lines += ["indexing:", "  min_calls: 1", "backups:", f"  dir: {tmp_path / 'backups'}", "logging:",
              "  file: null", "http:", "  enabled: false"]
    path = folder / "indexpilot_config.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o640)
    return path


def indexd(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--config", str(config)])
    out = capsys.readouterr()
    return code, out.out, out.err


def shapes(doc: dict) -> list[tuple]:
    return sorted((r["table"], tuple(r["columns"]), r["where"], tuple(r["include"])) for r in doc["recommendations"])


def login_dsn(cluster: EmbeddedCluster, dbname: str, r: Roles) -> str:
    return cluster.dsn(dbname, r.login)  # the password comes from password_file, as the README says


def test_the_readme_flow_as_the_least_privilege_role_gives_the_superusers_advice(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    superuser_config = write_config(config_dir(tmp_path / "su"), pg_cluster.dsn(pg_dbname), tmp_path)
    code, out, err = indexd(capsys, superuser_config, "recommend", "--json", "--no-save")
    assert code == 0, err
    expected = shapes(json.loads(out))
    assert expected, "the workload needs indexes"
    assert superuser(pg_cluster, pg_dbname, "SELECT to_regnamespace('indexd')") == [(None,)]  # --no-save wrote nothing

    # 1. CREATE EXTENSION as a superuser (the test database has them), 2. sql/roles.sql through psql.
    apply_roles(pg_cluster, pg_dbname, app)
    # 3. The config in /etc/indexd, with the login role and its password file.
    folder = config_dir(tmp_path)
    config = write_config(folder, login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750 and stat.S_IMODE(config.stat().st_mode) == 0o640
    # 4. indexd check: every required piece is there.
    code, out, err = indexd(capsys, config, "check")
    assert code == 0, out + err
    assert "main: ready" in out and "missing  HypoPG" not in out
    assert "create indexes: " in out and "2 of 2 tables" in out
    # 5. indexd migrate, 6. indexd recommend --json: the same advice, stored.
    code, out, err = indexd(capsys, config, "migrate")
    assert code == 0, err
    assert "WARNING" not in err  # nothing missing, so nothing logged
    code, out, err = indexd(capsys, config, "recommend", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert shapes(doc) == expected
    assert all(isinstance(r.get("id"), int) for r in doc["recommendations"])
    assert "hypothetical index refused" not in err and "permission denied" not in err
    owners = superuser(pg_cluster, pg_dbname, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'indexd'")
    assert owners == [(app.group,)]


def test_without_the_roles_file_check_names_each_missing_piece_and_fails(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    superuser(pg_cluster, pg_dbname, f"CREATE ROLE {app.login} LOGIN PASSWORD %s", (app.password,))
    config = write_config(config_dir(tmp_path), login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    code, out, err = indexd(capsys, config, "check")
    assert code == 1, out + err
    assert "main: NOT ready" in out
    for fix in (f"GRANT pg_read_all_stats TO {app.login};", f"TO {app.login};  -- or re-run",
                "GRANT SELECT ON public.hypopg_list_indexes TO", f"ALTER ROLE {app.login} CREATEDB;",
                f"GRANT CREATE ON DATABASE {pg_dbname} TO {app.login};"):
        assert fix in out, fix
    assert "0 of 2 tables" in out  # required only when indexd builds: mode advise here
    code, out, _ = indexd(capsys, config, "check", "--json")
    (db,) = json.loads(out)
    assert db["database"] == "main" and db["ready"] is False
    assert {c["check"] for c in db["checks"] if c["status"] == "missing" and c["required"]} >= {
        "read all of pg_stat_statements", "HypoPG privileges", "state schema"}


def test_a_superuser_running_recommend_first_does_not_lock_the_role_out(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    apply_roles(pg_cluster, pg_dbname, app)
    superuser_config = write_config(config_dir(tmp_path / "su"), pg_cluster.dsn(pg_dbname), tmp_path)
    code, _, err = indexd(capsys, superuser_config, "recommend")
    assert code == 0, err
    owners = superuser(pg_cluster, pg_dbname, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'indexd'")
    assert owners == [(app.group,)]  # made as the schema's owner, not as the superuser

    config = write_config(config_dir(tmp_path), login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    for command in (["check"], ["migrate"], ["recommend", "--json"], ["status", "--json"]):
        code, out, err = indexd(capsys, config, *command)
        assert code == 0, (command, out, err)
        assert "Traceback" not in err


def test_state_tables_another_role_owns_are_a_clear_error_until_fixed(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    apply_roles(pg_cluster, pg_dbname, app)
    superuser_config = write_config(config_dir(tmp_path / "su"), pg_cluster.dsn(pg_dbname), tmp_path)
    assert indexd(capsys, superuser_config, "migrate")[0] == 0
    # What an older indexd left when a superuser ran it first: every state table the superuser's.
    for (table,) in superuser(pg_cluster, pg_dbname, "SELECT tablename FROM pg_tables WHERE schemaname = 'indexd'"):
        superuser(pg_cluster, pg_dbname, f"ALTER TABLE indexd.{table} OWNER TO postgres")

    config = write_config(config_dir(tmp_path), login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    code, out, err = indexd(capsys, config, "status")
    assert code == 1 and "Traceback" not in err
    assert "belong to 'postgres'" in err and "ALTER TABLE indexd.schema_version OWNER TO" in err
    assert "permission denied for table" not in err
    code, out, err = indexd(capsys, config, "check")
    assert code == 1 and "missing  state schema" in out
    assert f"ALTER TABLE indexd.recommendations OWNER TO {app.group};" in out

    # A superuser's migrate gives the tables back to the schema's owner.
    assert indexd(capsys, superuser_config, "migrate")[0] == 0
    code, out, err = indexd(capsys, config, "status")
    assert code == 0, err
    assert indexd(capsys, config, "check")[0] == 0


def test_a_test_restore_without_superuser_leaves_out_the_superuser_only_extensions(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    apply_roles(pg_cluster, pg_dbname, app)
    config = write_config(config_dir(tmp_path), login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    assert indexd(capsys, config, "migrate")[0] == 0
    code, out, err = indexd(capsys, config, "backup", "run")
    assert code == 0, err
    code, out, _ = indexd(capsys, config, "backup", "list", "--json")
    (backup,) = json.loads(out)
    backup_id = backup["id"]
    code, out, err = indexd(capsys, config, "backup", "verify", backup_id, "--restore")
    assert code == 0, out + err
    leftovers = superuser(pg_cluster, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'indexd_verify%'")
    assert leftovers == []
    assert os.listdir(tmp_path / "backups" / "main")


def test_migrate_and_the_daemon_log_each_missing_piece_once(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    apply_roles(pg_cluster, pg_dbname, app, createdb="off")  # test restores would fail: a missing piece
    config = write_config(config_dir(tmp_path), login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    code, out, err = indexd(capsys, config, "migrate")
    assert code == 0, err  # a missing piece is said, not a failure of migrate
    assert "WARNING" in err and "missing scratch databases for test restores" in err
    assert f"fix: ALTER ROLE {app.group} CREATEDB;" in err
    assert "pg_trgm" not in err  # optional pieces stay at INFO

    settings = load_settings(str(config))
    target = settings.databases[0]
    runtime = DatabaseRuntime(target, Database(target))
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO, logger="indexd.lifecycle.preflight_readings"):
            ensure_prepared(runtime)
            ensure_prepared(runtime)
    finally:
        runtime.db.close()
    lines = [r for r in caplog.records if r.name == "indexd.lifecycle.preflight_readings"]
    assert [r.levelno for r in lines if "scratch databases" in r.getMessage()] == [logging.WARNING]
    assert any(r.levelno == logging.INFO and "pg_trgm" in r.getMessage() for r in lines)


def test_a_superuser_who_ran_indexd_before_the_roles_file_is_fixed_by_it(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    superuser_config = write_config(config_dir(tmp_path / "su"), pg_cluster.dsn(pg_dbname), tmp_path)
    assert indexd(capsys, superuser_config, "recommend")[0] == 0  # schema and tables: the superuser's
    apply_roles(pg_cluster, pg_dbname, app)
    owners = superuser(pg_cluster, pg_dbname, "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN "
                                              "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'indexd' "
                                              "UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace "
                                              "WHERE nspname = 'indexd'")
    assert owners == [(app.group,)]
    config = write_config(config_dir(tmp_path), login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    for command in (["check"], ["recommend", "--json"], ["status"]):
        code, out, err = indexd(capsys, config, *command)
        assert code == 0, (command, out, err)


def test_a_role_hypopg_refuses_gets_the_fix_not_silently_less_advice(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    apply_roles(pg_cluster, pg_dbname, app)
    superuser(pg_cluster, pg_dbname, f"REVOKE EXECUTE ON FUNCTION hypopg_reset() FROM PUBLIC, {app.group}")
    config = write_config(config_dir(tmp_path), login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    code, out, err = indexd(capsys, config, "recommend", "--json")
    assert code == 1 and "Traceback" not in err
    assert "HypoPG refused the role" in err and "permission denied for function hypopg_reset" in err
    assert "'indexd check' prints the GRANT statements" in err
    code, out, _ = indexd(capsys, config, "check")
    assert code == 1 and f"fix: GRANT EXECUTE ON FUNCTION public.hypopg_reset() TO {app.group};" in out


def test_a_partition_another_role_owns_makes_its_table_not_indexable(
        pg_cluster: EmbeddedCluster, pg_dbname: str, app: Roles, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A build indexes each partition as its owner, and a backup reads it: check counts the partitions' owners."""
    for statement in ("CREATE TABLE events (id bigint, at date NOT NULL) PARTITION BY RANGE (at)",
                      "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
                      f"ALTER TABLE events OWNER TO {app.app}",
                      f"CREATE ROLE {app.other} NOLOGIN", f"ALTER TABLE events_2026 OWNER TO {app.other}"):
        superuser(pg_cluster, pg_dbname, statement)
    apply_roles(pg_cluster, pg_dbname, app)
    config = write_config(config_dir(tmp_path), login_dsn(pg_cluster, pg_dbname, app), tmp_path, app.password)
    code, out, err = indexd(capsys, config, "check")
    assert "create indexes: " in out and "2 of 3 tables" in out, out + err
    assert f"GRANT {app.other} TO {app.group};" in out  # the partition's owner, named with the fix
    superuser(pg_cluster, pg_dbname, f"ALTER TABLE events_2026 OWNER TO {app.app}")
    code, out, err = indexd(capsys, config, "check")
    assert code == 0 and "3 of 3 tables" in out, out + err
