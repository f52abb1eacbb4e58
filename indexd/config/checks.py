"""Checks beyond a valid file: what the daemon needs to run (`check_runnable`, at start, on reload and in
`check-config`), and the hardening of `check-config --production`: secrets, TLS, permissions, verbosity.

(HTTP beyond loopback without a token is no hardening matter: every validation refuses it, see config.build.)

Functions of the settings, the configuration file's own text, the files it names and a few stat() readings;
nothing connects.
"""

from __future__ import annotations

import os
import re
import stat as st
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from indexd.config.listen import ListenAddress, listen_address
from indexd.config.schedule import validate
from indexd.config.schema import Settings
from indexd.config.secrets import read_token
from indexd.dsn import parse_dsn
from indexd.errors import ConfigError

StatFn = Callable[[str], os.stat_result]

SAFE_SSLMODES = ("require", "verify-ca", "verify-full")
_URI_PASSWORD = re.compile(r"^postgres(?:ql)?://[^:/@\s]*:([^@\s]*)@")
_QUERY_PASSWORD = re.compile(r"^postgres(?:ql)?://[^?\s]*\?(?:[^#\s]*&)?password=([^&#\s]*)")
_KV_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_TOKEN = re.compile(r"^\x01(\d+)\x02$")


def check_runnable(settings: Settings) -> None:
    """What the daemon needs beyond a valid file: databases, valid schedules, a usable listen address."""
    problems = validate(settings)
    if not settings.databases:
        problems.append("databases: none configured; the daemon has nothing to do")
    if settings.http.enabled:
        for check in (lambda: listen_address(settings.http), lambda: read_token(settings.http)):
            try:
                check()
            except ConfigError as exc:
                problems += exc.problems
    if problems:
        raise ConfigError(problems)


def production_problems(
    settings: Settings,
    config_path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    stat: StatFn = os.stat,
) -> list[str]:
    """Every way these settings fall short of a production deployment, one readable line each."""
    env = os.environ if env is None else env
    problems: list[str] = []
    if settings.environment != "production":
        problems.append(f"environment: is {settings.environment!r}; set environment: production")
    if settings.logging.level == "DEBUG":
        problems.append("logging.level: DEBUG is verbose and may log statement texts; use INFO or WARNING")
    if config_path is not None:
        problems += plaintext_passwords(config_path)
        problems += _permissions(str(config_path), f"configuration file {config_path}", stat)
    for db in settings.databases:
        problems += _sslmode(db.name, db.dsn, env)
        if db.password_file:
            problems += _password_file(db.name, db.password_file, stat)
    problems += _webhooks(settings, stat)
    for where, folder in sorted({("backups.dir", settings.backups.dir)} | _db_backup_dirs(settings)):
        problems += _permissions(folder, f"{where} {folder}", stat, missing_ok=True)
    return problems


def plaintext_passwords(config_path: Path) -> list[str]:
    """DSNs in the file that spell out a password (a lone ${VAR} reference is fine)."""
    try:
        root = yaml.compose(config_path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    problems = []
    for where, node in _raw_dsns(root):
        if _spells_password(node.value):
            problems.append(
                f"{where} (line {node.start_mark.line + 1}): the password is written in the file; "
                "take it from the environment (${VAR} or PGPASSWORD), a password_file or ~/.pgpass"
            )
    return problems


def _raw_dsns(root: yaml.Node | None) -> list[tuple[str, yaml.ScalarNode]]:
    if not isinstance(root, yaml.MappingNode):
        return []
    found = []
    for key, value in root.value:
        if key.value != "databases" or not isinstance(value, yaml.SequenceNode):
            continue
        for i, entry in enumerate(value.value):
            if not isinstance(entry, yaml.MappingNode):
                continue
            fields = {k.value: v for k, v in entry.value if isinstance(k, yaml.ScalarNode)}
            name_node = fields.get("name")
            name = name_node.value if isinstance(name_node, yaml.ScalarNode) else f"[{i}]"
            dsn = fields.get("dsn")
            if isinstance(dsn, yaml.ScalarNode):
                found.append((f"databases.{name}.dsn", dsn))
            replicas = fields.get("replicas")
            if isinstance(replicas, yaml.SequenceNode):
                found += [(f"databases.{name}.replicas[{j}]", r) for j, r in enumerate(replicas.value)
                          if isinstance(r, yaml.ScalarNode)]
    return found


def _spells_password(raw: str) -> bool:
    """Whether a DSN as written in the file holds a password other than a bare ${VAR} reference."""
    references: list[re.Match[str]] = []

    def mask(m: re.Match[str]) -> str:
        references.append(m)
        return f"\x01{len(references) - 1}\x02"  # a placeholder no DSN syntax character can break

    password = _password_in(_REFERENCE.sub(mask, raw))
    if not password:
        return False
    token = _TOKEN.match(password)
    if token is None:
        return True
    default = references[int(token.group(1))].group(2)
    return bool(default and default != ":-")  # ${VAR:-secret} writes "secret" in the file


def _password_in(dsn: str) -> str | None:
    m = _URI_PASSWORD.match(dsn.strip())
    if m and m.group(1):
        return m.group(1)
    m = _QUERY_PASSWORD.match(dsn.strip()) or _KV_PASSWORD.search(dsn)
    return m.group(1).strip("'") if m else None


def _sslmode(name: str, dsn: str, env: Mapping[str, str]) -> list[str]:
    try:
        params = parse_dsn(dsn)
    except ConfigError:
        return []  # already reported by validation
    mode = params.get("sslmode") or env.get("PGSSLMODE")
    if mode in SAFE_SSLMODES:
        return []
    hosts = (params.get("host") or env.get("PGHOST") or "").split(",")
    if not params.get("hostaddr") and all(h == "" or h.startswith("/") for h in hosts):
        return []  # unix socket: nothing crosses the network
    said = f"sslmode={mode}" if mode else "no sslmode (libpq then only prefers TLS)"
    return [f"databases.{name}.dsn: {said}; use sslmode=verify-full (or at least require) for TCP connections"]


def _password_file(name: str, path: str, stat: StatFn) -> list[str]:
    return _secret_file(f"databases.{name}.password_file", path, stat)


def _secret_file(where: str, path: str, stat: StatFn) -> list[str]:
    try:
        mode = stat(path).st_mode
    except OSError as exc:
        return [f"{where}: cannot stat {path}: {exc.strerror}"]
    if mode & (st.S_IRWXG | st.S_IRWXO):
        return [f"{where}: {path} is readable by group or others; chmod 600 it"]
    return []


def _webhooks(settings: Settings, stat: StatFn) -> list[str]:
    """Token files private like password files; no token sent in clear text over the network."""
    problems = []
    for i, hook in enumerate(settings.notifications.webhooks):
        where = f"notifications.webhooks[{i}]"
        if hook.token_file:
            problems += _secret_file(f"{where}.token_file", hook.token_file, stat)
        parts = urlsplit(hook.url)
        host = parts.hostname or ""
        if parts.scheme == "http" and not ListenAddress(host, parts.port or 80).is_loopback:
            problems.append(f"{where}.url: plain http to {host} sends every event"
                            f"{' and the bearer token' if hook.token_file else ''} in clear text; use https")
    return problems


def _permissions(path: str, what: str, stat: StatFn, missing_ok: bool = False) -> list[str]:
    try:
        mode = stat(path).st_mode
    except FileNotFoundError:
        return [] if missing_ok else [f"{what}: cannot be found"]
    except OSError as exc:
        return [f"{what}: cannot stat: {exc.strerror}"]
    flags = [word for bit, word in ((st.S_IROTH, "readable"), (st.S_IWOTH, "writable")) if mode & bit]
    if flags:
        return [f"{what}: is world-{' and '.join(flags)}; chmod o-rwx it"]
    return []


def _db_backup_dirs(settings: Settings) -> set[tuple[str, str]]:
    return {
        (f"databases.{db.name}.backups.dir", db.backups.dir)
        for db in settings.databases
        if db.backups.dir != settings.backups.dir
    }

