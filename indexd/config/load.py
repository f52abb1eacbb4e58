"""Load the settings: defaults <- YAML file <- environment, fully validated before anything uses them.

Where the file is: `--config PATH`, else `$INDEXD_CONFIG`, else `./indexpilot_config.yaml`, else
`/etc/indexd/indexpilot_config.yaml`.

Environment overrides (applied after the file, so they win):

* `INDEXD_<SECTION>__<KEY>[__<KEY>...]` sets one key; sections and keys are the file's, upper-cased, nesting
  joined by a double underscore: `INDEXD_LOGGING__LEVEL=DEBUG`, `INDEXD_HTTP__LISTEN=127.0.0.1:9471`,
  `INDEXD_INDEXING__RATE_LIMIT__PER_HOUR=2`, `INDEXD_ENVIRONMENT=production`. A database entry is addressed
  by its name (`-` written as `_`): `INDEXD_DATABASES__MAIN__DSN=...`. Values are text and converted like
  the file's ("2h", "512MB", "true"); an empty value or `null` clears an optional key. Lists of windows
  cannot be set this way. Other `INDEXD_*` variables without `__` (INDEXD_CONFIG, ...) are not overrides.
* The variables an IndexPilot installation already sets: `LOG_LEVEL` -> logging.level and
  `ENVIRONMENT` -> environment (an `INDEXD_*` variable for the same key wins over them).

`DB_HOST`, `DB_PASSWORD` and `DB_SSLMODE` are deliberately *not* mapped onto every database: with several
databases one host or password cannot be right for all of them, and quietly sending a password to every
server is a leak. Use them where they belong with interpolation (`dsn: postgresql://indexd@${DB_HOST}/app`),
or libpq's own `PGHOST`, `PGPASSWORD`, `PGSSLMODE` and `~/.pgpass`, which keep working because the DSN is
handed to libpq unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from indexd.config import build as builder
from indexd.config.schema import DatabaseSettings, Settings
from indexd.config.tree import Node, Problems, inherit, merge, parse_yaml
from indexd.dsn import parse_dsn
from indexd.errors import ConfigError

CONFIG_NAME = "indexpilot_config.yaml"
SYSTEM_CONFIG = Path("/etc/indexd") / CONFIG_NAME
ENV_PREFIX = "INDEXD_"
SEED_VARIABLES = {"LOG_LEVEL": ("logging", "level"), "ENVIRONMENT": ("environment",)}
MERGED_SECTIONS = ("indexing", "backups", "leadership")  # global sections a database entry may override key by key


def find_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The configuration file to use; an explicit path (argument or $INDEXD_CONFIG) is returned as given."""
    env = os.environ if env is None else env
    if path:
        return Path(path)
    if env.get("INDEXD_CONFIG"):
        return Path(env["INDEXD_CONFIG"])
    for candidate in (Path.cwd() / CONFIG_NAME, SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    path: str | None = None, env: Mapping[str, str] | None = None, *, required: bool = True
) -> Settings:
    """Settings from the file found by find_config and the environment; ConfigError lists every problem.

    Without a file: ConfigError naming the places searched, or (required=False) the defaults with the
    environment overrides applied. An explicitly named file that does not exist is always an error.
    """
    env = os.environ if env is None else env
    config = find_config(path, env)
    problems = Problems()
    if config is None:
        if required:
            raise ConfigError(
                f"no configuration file found (looked for $INDEXD_CONFIG, ./{CONFIG_NAME}, {SYSTEM_CONFIG}); "
                "pass --config PATH, or --dsn DSN for a single database"
            )
        root: Node | None = Node({})
    else:
        root = parse_yaml(_read(config), str(config), env, problems)
    settings = _settings(root, env, problems) if root is not None else None
    if problems or settings is None:
        raise ConfigError(problems.items)
    return replace(settings, source=str(config) if config else None)


def settings_for_dsn(dsn: str, base: Settings | None = None) -> Settings:
    """Settings with the one database given by --dsn (named after its dbname), on top of `base`."""
    problem = builder.dsn(dsn)
    if problem:
        raise ConfigError(f"--dsn: {problem}")
    base = base or Settings()
    for db in base.databases:
        if db.dsn == dsn:
            return replace(base, databases=(db,))
    name = re.sub(r"[^A-Za-z0-9_-]", "_", parse_dsn(dsn).get("dbname") or "default")
    db = DatabaseSettings(name=name, dsn=dsn, indexing=base.indexing, backups=base.backups,
                          leadership=base.leadership)
    return replace(base, databases=(db,))


def _read(config: Path) -> str:
    try:
        return config.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {config} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {config} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {config}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {config} is not UTF-8 text: {exc.reason}") from None


def _settings(root: Node, env: Mapping[str, str], problems: Problems) -> Settings | None:
    if not isinstance(root.value, dict):
        problems.add("<top>", root, "the configuration must be a mapping of sections (environment, databases, ...)")
        return None
    _apply_env(root, env, problems)
    databases = root.value.get("databases")
    entries = _database_entries(databases, problems)
    for entry in entries:
        for section in MERGED_SECTIONS:
            _merge_section(root.value.get(section), entry, section)
    rest = Node({k: v for k, v in root.value.items() if k != "databases"}, root.line)
    settings = builder.build(Settings, rest, "", problems)
    built = [builder.build(DatabaseSettings, entry, label, problems) for label, entry in _labelled(entries, problems)]
    if settings is builder.INVALID or any(db is builder.INVALID for db in built):
        return None
    return replace(settings, databases=tuple(built))


def _database_entries(databases: Node | None, problems: Problems) -> list[Node]:
    if databases is None or databases.value is None:
        return []
    if not isinstance(databases.value, list):
        problems.add("databases", databases, "expected a list of databases (each with name and dsn)")
        return []
    entries = []
    for i, entry in enumerate(databases.value):
        if isinstance(entry.value, dict):
            entries.append(entry)
        else:
            problems.add(f"databases[{i}]", entry, "expected a mapping with name and dsn")
    return entries


def _merge_section(global_node: Node | None, entry: Node, section: str) -> None:
    if global_node is None or not isinstance(global_node.value, dict | None):
        return
    base = inherit(global_node if global_node.value is not None else Node({}, global_node.line))
    own = entry.value.get(section)
    entry.value[section] = merge(base, own) if own is not None and own.value is not None else base


def _labelled(entries: list[Node], problems: Problems) -> list[tuple[str, Node]]:
    """Key paths for the database entries (databases.NAME) and a problem for each duplicate name."""
    first: dict[str, Node] = {}
    labels = []
    for i, entry in enumerate(entries):
        name_node = entry.value.get("name")
        name = name_node.value if name_node is not None else None
        label = f"databases[{i}]"
        if isinstance(name, str) and name in first:
            line = first[name].line
            problems.add(f"{label}.name", name_node, f"duplicate database name {name!r} (first at line {line})")
        elif isinstance(name, str) and name_node is not None:
            first[name] = name_node
            if builder.db_name(name) is None:
                label = f"databases.{name}"
        labels.append((label, entry))
    return labels


def _apply_env(root: Node, env: Mapping[str, str], problems: Problems) -> None:
    """Set the keys named by LOG_LEVEL/ENVIRONMENT, then by INDEXD_* variables (which win)."""
    for var, keys in SEED_VARIABLES.items():
        if env.get(var):
            _set(root, list(keys), env[var], var, problems)
    for var in sorted(env):
        rest = var[len(ENV_PREFIX) :]
        if var.startswith(ENV_PREFIX) and ("__" in rest or rest == "ENVIRONMENT"):
            _set(root, [part.lower() for part in rest.split("__")], env[var], var, problems)


def _set(root: Node, keys: list[str], text: str, var: str, problems: Problems) -> None:
    cls: Any = Settings
    node = root
    i = 0
    while i < len(keys):
        key = keys[i]
        known = builder.keys_of(cls)
        if key not in known:
            problems.add(f"${var}", None, builder.unknown_key(key, known))
            return
        hint = builder.field_hint(cls, key)
        last = i == len(keys) - 1
        if key == "databases" and cls is Settings:
            target = _database_by_env_name(node, keys[i + 1] if not last else "")
            if target is None:
                problems.add(f"${var}", None, "names no configured database (write INDEXD_DATABASES__<NAME>__<KEY>)")
                return
            node, cls, i = target, DatabaseSettings, i + 2
            continue
        if last:
            if builder.is_section(hint):
                problems.add(f"${var}", None, f"{'.'.join(keys)} is a section; name one of its keys")
            else:
                value = None if builder.is_optional(hint) and text.strip().lower() in ("", "null") else text
                node.value[key] = Node(value, env=var)
            return
        if not builder.is_section(hint) or not isinstance(node.value.get(key, Node({})).value, dict | None):
            problems.add(f"${var}", None, f"{'.'.join(keys[: i + 1])} cannot be set from the environment")
            return
        child = node.value.get(key)
        if child is None or child.value is None:
            child = node.value[key] = Node({}, child.line if child else None)
        node, cls, i = child, hint, i + 1


def _database_by_env_name(root: Node, env_name: str) -> Node | None:
    databases = root.value.get("databases")
    if databases is None or not isinstance(databases.value, list):
        return None
    for entry in databases.value:
        name = entry.value.get("name") if isinstance(entry.value, dict) else None
        if name is not None and isinstance(name.value, str) and name.value.lower().replace("-", "_") == env_name:
            return entry
    return None
