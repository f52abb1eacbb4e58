"""Configuration loading: every broken file names the key path, the line and what is wrong."""

from __future__ import annotations

import textwrap
from datetime import time, timedelta
from pathlib import Path

import pytest

from indexd.config.load import find_config, load_settings, settings_for_dsn
from indexd.config.schema import LoggingSettings, Settings
from indexd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
environment: development
databases:
  - name: main
    dsn: postgresql://indexd@127.0.0.1:5432/app
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "indexpilot_config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env=env or {})
    return caught.value.problems


def only(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    found = problems(tmp_path, text, env)
    assert len(found) == 1, found
    return found[0]


# ---- broken files --------------------------------------------------------------------------------------------


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    msg = only(tmp_path, "logging:\n  level: INFO\n   file: x.log\n")
    assert "(line 3, column 8)" in msg
    assert "YAML syntax error" in msg and "mapping values are not allowed" in msg


def test_unknown_top_level_key_suggests_the_right_one(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "indexng:\n  mode: auto\n")
    assert msg == "indexng (line 5): unknown key 'indexng' (did you mean 'indexing'?)"


def test_unknown_nested_key(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "indexing:\n  rate_limit:\n    per_hourr: 3\n")
    assert msg == "indexing.rate_limit.per_hourr (line 7): unknown key 'per_hourr' (did you mean 'per_hour'?)"


def test_unknown_key_without_close_match_lists_the_known_ones(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "http:\n  colour: blue\n")
    assert msg.startswith("http.colour (line 6): unknown key 'colour' (known keys: enabled, listen, token_file)")


def test_wrong_type(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "logging:\n  backup_count: many\n")
    assert msg == "logging.backup_count (line 6): expected a whole number, got 'many'"


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "retry: 5\n")
    assert msg == "retry (line 5): expected a mapping of settings, got 5"


def test_bad_duration(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "indexing:\n  lookback: 3 fortnights\n")
    assert msg.startswith("indexing.lookback (line 6): expected a duration such as 90s")
    assert "'3 fortnights'" in msg


def test_bad_size(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "indexing:\n  storage_budget: 10 XB\n")
    assert msg.startswith("indexing.storage_budget (line 6): expected a size such as 512MB")


def test_bad_window_day(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "indexing:\n  windows:\n    - days: [mon, funday]\n")
    assert msg.startswith("indexing.windows[0].days (line 7): unknown day 'funday'")
    assert "mon-fri" in msg


def test_bad_time_zone(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "indexing:\n  windows:\n    - days: daily\n      timezone: Mars/Olympus\n")
    assert msg == (
        "indexing.windows[0].timezone (line 8): unknown time zone 'Mars/Olympus' (use a name such as UTC or "
        "Europe/Berlin)"
    )


def test_bad_time_of_day(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "indexing:\n  windows:\n    - start: '25:00'\n")
    assert msg.startswith("indexing.windows[0].start (line 7): expected a time of day")


def test_bad_cron(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "backups:\n  schedule: '0 */6 * *'\n")
    assert msg.startswith("backups.schedule (line 6): not a valid cron schedule '0 */6 * *'")
    assert "got 4, expected 5" in msg


def test_bad_dsn_is_reported_without_its_password(tmp_path: Path) -> None:
    msg = only(tmp_path, "databases:\n  - name: main\n    dsn: 'host=x password=hunter2 port= = bad'\n")
    assert msg.startswith("databases.main.dsn (line 3): invalid DSN")
    assert "hunter2" not in msg


@pytest.mark.parametrize("hosts", ["h:notaport", "h:99999", "h1:5432,h2:x"])
def test_bad_port_in_dsn_is_a_config_error_not_a_retried_connect(tmp_path: Path, hosts: str) -> None:
    msg = only(tmp_path, f"databases:\n  - name: main\n    dsn: 'postgresql://u:hunter2@{hosts}/app'\n")
    assert msg.startswith("databases.main.dsn (line 3): invalid DSN") and "is not a number from 1 to 65535" in msg
    assert "hunter2" not in msg


def test_multi_host_dsn_with_default_port_is_fine() -> None:
    assert settings_for_dsn("host=h1,h2 port=5432, dbname=app").databases[0].name == "app"


def test_missing_env_var_names_key_line_and_variable(tmp_path: Path) -> None:
    msg = only(tmp_path, "databases:\n  - name: main\n    dsn: postgresql://indexd@${DB_HOST}/app\n")
    assert msg.startswith("databases[0].dsn (line 3): environment variable DB_HOST is not set")


def test_duplicate_database_name(tmp_path: Path) -> None:
    text = GOOD + "  - name: main\n    dsn: postgresql://indexd@127.0.0.1/other\n"
    msg = only(tmp_path, text)
    assert msg == "databases[1].name (line 5): duplicate database name 'main' (first at line 3)"


def test_bad_database_name_and_missing_dsn(tmp_path: Path) -> None:
    found = problems(tmp_path, "databases:\n  - name: 'my db'\n")
    assert "databases[0].name (line 2): database names may use only letters, digits, '_' and '-' (got 'my db')" in found
    assert "databases[0] (line 2): missing required key 'dsn'" in found


def test_bad_literal_lists_the_allowed_values(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "indexing:\n  mode: turbo\n")
    assert msg == "indexing.mode (line 6): must be one of advise, approve, auto (got 'turbo')"


def test_nonsense_numbers(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD + "retry:\n  attempts: 0\n  initial_delay: -5\nbackups:\n  compression: 11\n")
    assert "retry.attempts (line 6): must be between 1 and 100 (got 0)" in found
    assert "retry.initial_delay (line 7): must be between 0s and 1h (got -5)" in found
    assert "backups.compression (line 9): must be between 0 and 9 (got 11)" in found


@pytest.mark.parametrize("value", ["100", "2GiB"])
def test_queries_max_bytes_has_a_sane_range(tmp_path: Path, value: str) -> None:
    msg = only(tmp_path, GOOD + f"indexing:\n  queries_max_bytes: {value}\n")
    assert msg.startswith("indexing.queries_max_bytes (line 6): must be between 1kB and 1GB (got ")
    assert load_settings(write(tmp_path, GOOD + "indexing:\n  queries_max_bytes: 8MB\n"), env={}
                         ).indexing.queries_max_bytes == 8 * 1024**2


def test_http_listen_must_be_host_port(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "http:\n  listen: localhost\n")
    assert msg.startswith("http.listen (line 6): expected host:port")


@pytest.mark.parametrize("listen", ["0.0.0.0:9470", "'[::]:9470'", "10.1.2.3:9470", "metrics-host:9470"])
def test_http_beyond_loopback_without_a_token_is_an_error(tmp_path: Path, listen: str) -> None:
    msg = only(tmp_path, GOOD + f"http:\n  enabled: true\n  listen: {listen}\n")
    assert msg.startswith(f"http.listen (line 7): {listen.strip(chr(39))} is reachable from other hosts")
    assert "set http.token_file" in msg
    token = tmp_path / "token"
    s = load_settings(write(tmp_path, GOOD + f"http:\n  listen: {listen}\n  token_file: {token}\n"), env={})
    assert s.http.token_file == str(token)
    disabled = GOOD + f"http:\n  enabled: false\n  listen: {listen}\n"
    assert not load_settings(write(tmp_path, disabled), env={}).http.enabled


@pytest.mark.parametrize("listen", ["127.0.0.1:9470", "127.0.0.2:9470", "localhost:9470", "'[::1]:9470'"])
def test_http_on_loopback_needs_no_token(tmp_path: Path, listen: str) -> None:
    assert load_settings(write(tmp_path, GOOD + f"http:\n  listen: {listen}\n"), env={}).http.token_file is None


def test_http_exposure_set_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD, env={"INDEXD_HTTP__LISTEN": "0.0.0.0:9470"})
    assert msg.startswith("http.listen (from $INDEXD_HTTP__LISTEN): 0.0.0.0:9470 is reachable from other hosts")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "logging:\n  level: INFO\n  level: DEBUG\n")
    assert msg == "logging.level (line 7): duplicate key (first at line 6)"


def test_several_errors_are_all_reported_at_once(tmp_path: Path) -> None:
    text = """\
        environment: prod
        databases:
          - name: main
            dsn: postgresql://indexd@127.0.0.1/app
            pool:
              size: -1
        indexing:
          mode: turbo
        logging:
          level: LOUD
        http:
          listen: nowhere
        """
    found = problems(tmp_path, text)
    assert [p.split(":")[0] for p in found] == [
        "environment (line 1)",
        "indexing.mode (line 8)",
        "logging.level (line 10)",
        "http.listen (line 12)",
        "databases.main.pool.size (line 6)",
    ]


def test_error_in_a_global_section_is_reported_once_not_per_database(tmp_path: Path) -> None:
    text = GOOD + "  - name: two\n    dsn: postgresql://indexd@127.0.0.1/two\nindexing:\n  mode: turbo\n"
    assert problems(tmp_path, text) == ["indexing.mode (line 8): must be one of advise, approve, auto (got 'turbo')"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in only(tmp_path, "- a\n- b\n")


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.yaml"), env={})
    with pytest.raises(ConfigError, match=r"no configuration file found \(looked for \$INDEXD_CONFIG"):
        load_settings(None, env={})


# ---- what works ----------------------------------------------------------------------------------------------


def test_values_in_every_notation(tmp_path: Path) -> None:
    text = GOOD + """\
indexing:
  storage_budget: 10 MB
  maintenance_work_mem: 1GiB
  lookback: 1h30m
  build_timeout: 5400
  lock_timeout: 500ms
  windows:
    - days: fri-mon
      start: 01:00
      end: "05:30"
      timezone: Europe/Berlin
    - days: weekdays
logging:
  level: info
  max_bytes: 1048576
http:
  enabled: off
"""
    s = load_settings(write(tmp_path, text), env={})
    assert s.indexing.storage_budget == 10 * 1024**2
    assert s.indexing.maintenance_work_mem == 1024**3
    assert s.indexing.lookback == timedelta(minutes=90)
    assert s.indexing.build_timeout == timedelta(seconds=5400)
    first, second = s.indexing.windows
    assert first.days == ("mon", "fri", "sat", "sun")
    assert (first.start, first.end, first.timezone) == (time(1, 0), time(5, 30), "Europe/Berlin")
    assert second.days == ("mon", "tue", "wed", "thu", "fri")
    assert s.indexing.lock_timeout == timedelta(milliseconds=500)
    assert s.logging.level == "INFO" and s.logging.max_bytes == 1024**2
    assert s.http.enabled is False
    assert s.source == str(tmp_path / "indexpilot_config.yaml")


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD), env={})
    assert s.logging == LoggingSettings()
    assert s.indexing == Settings().indexing
    assert s.databases[0].indexing == Settings().indexing


def test_interpolation_with_and_without_default(tmp_path: Path) -> None:
    text = """\
        databases:
          - name: main
            dsn: postgresql://indexd@${DB_HOST}:${DB_PORT:-5432}/app
        logging:
          file: ${LOG_DIR:-/tmp/indexd}/indexd.log
          max_bytes: ${LOG_SIZE:-2MB}
        bypass:
          reason: costs $$5
        """
    s = load_settings(write(tmp_path, text), env={"DB_HOST": "db1", "LOG_DIR": ""})
    assert s.databases[0].dsn == "postgresql://indexd@db1:5432/app"
    assert s.logging.file == "/tmp/indexd/indexd.log"  # empty variable takes the default, like the shell
    assert s.logging.max_bytes == 2 * 1024**2
    assert s.bypass.reason == "costs $5"


def test_indexd_environment_overrides(tmp_path: Path) -> None:
    env = {
        "INDEXD_LOGGING__LEVEL": "DEBUG",
        "INDEXD_HTTP__LISTEN": "127.0.0.1:9999",
        "INDEXD_INDEXING__RATE_LIMIT__PER_HOUR": "2",
        "INDEXD_DATABASES__MAIN__POOL__SIZE": "9",
        "INDEXD_LOGGING__FILE": "",
        "INDEXD_ENVIRONMENT": "production",
        "INDEXD_CONFIG": "ignored here: not an override",
    }
    s = load_settings(write(tmp_path, GOOD + "logging:\n  level: WARNING\n"), env=env)
    assert s.logging.level == "DEBUG" and s.logging.file is None
    assert s.http.listen == "127.0.0.1:9999"
    assert s.indexing.rate_limit.per_hour == 2
    assert s.databases[0].indexing.rate_limit.per_hour == 2
    assert s.databases[0].pool.size == 9
    assert s.environment == "production"


def test_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD, env={"INDEXD_LOGGING__LEVL": "x", "INDEXD_RETRY__ATTEMPTS": "lots"})
    assert found == [
        "$INDEXD_LOGGING__LEVL: unknown key 'levl' (did you mean 'level'?)",
        "retry.attempts (from $INDEXD_RETRY__ATTEMPTS): expected a whole number, got 'lots'",
    ]


def test_seed_variables_and_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    s = load_settings(path, env={"LOG_LEVEL": "warning", "ENVIRONMENT": "production"})
    assert (s.logging.level, s.environment) == ("WARNING", "production")
    s = load_settings(path, env={"LOG_LEVEL": "warning", "INDEXD_LOGGING__LEVEL": "ERROR"})
    assert s.logging.level == "ERROR"
    msg = only(tmp_path, GOOD, env={"ENVIRONMENT": "staging"})
    assert msg == "environment (from $ENVIRONMENT): must be one of production, development (got 'staging')"


def test_per_database_sections_merge_over_the_global_ones(tmp_path: Path) -> None:
    text = GOOD + """\
    indexing:
      mode: approve
      rate_limit:
        per_day: 1
  - name: reports
    dsn: postgresql://indexd@127.0.0.1/reports
indexing:
  mode: auto
  rate_limit:
    per_hour: 2
backups:
  enabled: true
  dir: /srv/backups
"""
    s = load_settings(write(tmp_path, text.replace("  - name: reports", "    backups:\n      enabled: false\n"
                                                                          "  - name: reports")), env={})
    main, reports = s.databases
    assert main.indexing.mode == "approve" and reports.indexing.mode == "auto"
    assert (main.indexing.rate_limit.per_hour, main.indexing.rate_limit.per_day) == (2, 1)
    assert main.backups.enabled is False and main.backups.dir == "/srv/backups"
    assert reports.backups.enabled is True and s.indexing.mode == "auto"


def test_error_in_a_database_override_names_the_database(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "    indexing:\n      mode: sometimes\n")
    assert msg == "databases.main.indexing.mode (line 6): must be one of advise, approve, auto (got 'sometimes')"


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config("given.yaml", env={"INDEXD_CONFIG": "/x.yaml"}) == Path("given.yaml")
    assert find_config(None, env={"INDEXD_CONFIG": "/x.yaml"}) == Path("/x.yaml")
    here = Path(write(tmp_path, GOOD))
    assert find_config(None, env={}) == here


def test_not_required_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if Path("/etc/indexd/indexpilot_config.yaml").exists():
        pytest.skip("a system-wide configuration exists on this machine")
    assert load_settings(None, env={}, required=False) == Settings()


def test_settings_for_dsn() -> None:
    base = Settings(indexing=Settings().indexing.__class__(mode="auto"))
    s = settings_for_dsn("postgresql://indexd:pw@127.0.0.1:5432/my.app", base)
    (db,) = s.databases
    assert db.name == "my_app" and db.indexing.mode == "auto"
    assert settings_for_dsn("host=/tmp").databases[0].name == "default"
    with pytest.raises(ConfigError, match="--dsn: invalid DSN"):
        settings_for_dsn("host=x = y")


@pytest.mark.parametrize(
    "name", ["indexpilot_config.yaml", "config/examples/production.yaml", "config/examples/development.yaml"]
)
def test_shipped_files_load(name: str) -> None:
    s = load_settings(str(REPO / name), env={})
    assert s.databases and s.source == str(REPO / name)


def test_shipped_default_shows_every_section() -> None:
    text = (REPO / "indexpilot_config.yaml").read_text(encoding="utf-8")
    s = load_settings(str(REPO / "indexpilot_config.yaml"), env={})
    assert s.databases[0].dsn == "postgresql://indexd@127.0.0.1:5432/app"
    for section in ("environment", "databases", "retry", "circuit_breaker", "indexing", "bypass", "backups",
                    "retention", "logging", "http"):
        assert f"\n{section}:" in text


def test_self_referring_alias_is_an_error_not_a_crash(tmp_path: Path) -> None:
    assert "nests too deeply" in only(tmp_path, "databases: &a\n  - *a\n")


def test_yaml_merge_keys_are_refused(tmp_path: Path) -> None:
    msg = only(tmp_path, GOOD + "logging:\n  <<: {level: INFO}\n")
    assert msg == "logging (line 6): YAML merge keys (<<) are not supported"
