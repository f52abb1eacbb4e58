"""Build the frozen settings dataclasses from a Node tree, generically, by their type hints.

Every problem (unknown key, wrong type, value out of range, bad cron/time zone/DSN) is collected with its key
path and origin; nothing is dropped with a warning. A field is checked by its type's converter, then by the
range and validator registered for (class, field) below.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable
from datetime import time, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from indexd.config import convert, schema
from indexd.config.bounds import ITEM_RANGES, RANGES, Range
from indexd.config.listen import parse_listen
from indexd.config.schema import ByteSize
from indexd.config.tree import Node, Problems, join
from indexd.dsn import parse_dsn
from indexd.errors import ConfigError

INVALID: Any = object()  # a value that could not be built; its problem is already recorded

Check = Callable[[Any], str | None]

_SCALARS: dict[Any, Callable[[Any], Any]] = {
    bool: convert.to_bool,
    ByteSize: convert.to_size,
    int: convert.to_int,
    float: convert.to_float,
    str: convert.to_str,
    timedelta: convert.to_duration,
    time: convert.to_time,
}


def cron(value: str) -> str | None:
    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        return f"not a valid cron schedule {value!r} (minute hour day month weekday): {exc}"
    return None


def time_zone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use a name such as UTC or Europe/Berlin)"
    return None


def dsn(value: str) -> str | None:
    try:
        parse_dsn(value)
    except ConfigError as exc:
        return exc.problems[0]
    return None


def dsn_list(values: tuple[str, ...]) -> str | None:
    for i, value in enumerate(values):
        problem = dsn(value)
        if problem:
            return f"item {i}: {problem}"
    if len(set(values)) != len(values):
        return "the same DSN is listed twice"
    return None


def db_name(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9_-]+", value):
        return None
    return f"database names may use only letters, digits, '_' and '-' (got {value!r})"


def sql_name(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
        return None
    return f"expected a plain SQL name (letters, digits, '_', at most 63), got {value!r}"


def pg_database(value: str) -> str | None:
    if not value or "\0" in value or len(value.encode()) > 63:
        return f"expected the name of a database on the server (1 to 63 bytes), got {value!r}"
    return None


def file_path(value: str) -> str | None:
    if not value.strip():
        return "must not be empty (leave the key out, or null where it is optional)"
    if "\0" in value:
        return "must not contain a NUL character"
    return None


def listen(value: str) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def http_url(value: str) -> str | None:
    """An http(s) URL with a host and no credentials in it. The message never repeats the URL: its path may
    be a secret (a Slack webhook's is)."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is no number from 0 to 65535
    except ValueError:
        return "not a valid URL (its host or port cannot be read)"
    if parts.scheme not in ("http", "https"):
        return f"expected an http:// or https:// URL, not {parts.scheme or 'one without a scheme'!r}"
    if not parts.hostname:
        return "the URL names no host"
    if parts.username is not None or parts.password is not None:
        return "the URL carries credentials; remove them and put a bearer token in token_file"
    return None


def token_file(value: str) -> str | None:
    """A readable file holding one token (its content is never repeated)."""
    try:
        token = Path(value).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return f"{value} does not exist; create it (mode 600) with the bearer token, or remove token_file"
    except IsADirectoryError:
        return f"{value} is a directory, not a file holding the token"
    except OSError as exc:
        return f"cannot read {value}: {exc.strerror}"
    except UnicodeDecodeError:
        return f"{value} is not UTF-8 text"
    if not token:
        return f"{value} is empty; write the bearer token into it"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token):
        return f"{value} holds more than one word or a control character; it must hold the token alone"
    return None


def some_events(value: tuple[str, ...]) -> str | None:
    return None if value else "names no event; leave events out to send every event"


S = schema
CHECKS: dict[tuple[type, str], Check] = {
    (S.WindowSettings, "timezone"): time_zone,
    (S.BackupSettings, "schedule"): cron,
    (S.BackupSettings, "dir"): file_path,
    (S.BackupVerifySettings, "restore_schedule"): cron,
    (S.BackupVerifySettings, "restore_dsn"): dsn,
    (S.RetentionSettings, "schedule"): cron,
    (S.LoggingSettings, "file"): file_path,
    (S.HttpSettings, "listen"): listen,
    (S.HttpSettings, "token_file"): file_path,
    (S.WebhookSettings, "url"): http_url,
    (S.WebhookSettings, "token_file"): token_file,
    (S.WebhookSettings, "events"): some_events,
    (S.DatabaseSettings, "password_file"): file_path,
    (S.DatabaseSettings, "name"): db_name,
    (S.DatabaseSettings, "dsn"): dsn,
    (S.DatabaseSettings, "replicas"): dsn_list,
    (S.DatabaseSettings, "state_schema"): sql_name,
    (S.LeadershipSettings, "database"): pg_database,
}
CHECKS.update({(S.IndexingSchedules, f.name): cron for f in dataclasses.fields(S.IndexingSchedules)})
CHECKS.update(RANGES)  # every number, duration and size: indexd.config.bounds
CHECKS.update(ITEM_RANGES)

# Fields whose text needs more than their type says.
CONVERTERS: dict[tuple[type, str], Callable[[Any], Any]] = {(S.WindowSettings, "days"): convert.to_days}

NOT_KEYS = {(S.Settings, "source")}  # dataclass fields that are not keys of the file


def http_exposure(http: S.HttpSettings) -> list[tuple[str, str]]:
    """Endpoints other hosts can reach need a token: /health names database users, hosts and the config path."""
    if not http.enabled or http.token_file or parse_listen(http.listen).is_loopback:
        return []
    return [("listen", f"{http.listen} is reachable from other hosts, and /health and /metrics would answer them "
                       "without a token; bind to a loopback address such as 127.0.0.1:9470, or set http.token_file")]


def probe_ratios(throttle: S.ThrottleSettings) -> list[tuple[str, str]]:
    """A build is cancelled above the critical ratio and not started above the max one: critical >= max."""
    if throttle.probe_critical_ratio >= throttle.probe_max_ratio:
        return []
    return [("probe_critical_ratio", f"must be at least probe_max_ratio ({throttle.probe_max_ratio:g}): a running "
                                     "build is cancelled only when latency is worse than what stops a new one")]


# Rules over several keys of one built section: (key, problem) pairs, reported at that key's line.
SECTION_RULES: dict[type, Callable[[Any], list[tuple[str, str]]]] = {S.HttpSettings: http_exposure,
                                                                     S.ThrottleSettings: probe_ratios}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_hint(cls: type, name: str) -> Any:
    return _hints(cls)[name]


def is_section(hint: Any) -> bool:
    return dataclasses.is_dataclass(hint)


def is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def keys_of(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if (cls, f.name) not in NOT_KEYS]


def unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
    return f"unknown key {key!r} ({hint})"


def build(cls: type, node: Node, path: str, problems: Problems) -> Any:
    """An instance of dataclass `cls` from a mapping node (null = all defaults), or INVALID."""
    value = {} if node.value is None else node.value
    if not isinstance(value, dict):
        _report(problems, path, node, f"expected a mapping of settings, got {convert.describe(node.plain())}")
        return INVALID
    known = keys_of(cls)
    for key, child in value.items():
        if key not in known:
            _report(problems, join(path, key), child, unknown_key(key, known))
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in known:
            continue
        if f.name in value:
            kwargs[f.name] = field_value(cls, f.name, value[f.name], join(path, f.name), problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _report(problems, path, node, f"missing required key {f.name!r}")
            kwargs[f.name] = INVALID
    if any(v is INVALID for v in kwargs.values()) or any(k not in known for k in value):
        return INVALID
    built = cls(**kwargs)
    broken = SECTION_RULES[cls](built) if cls in SECTION_RULES else []
    for key, message in broken:
        _report(problems, join(path, key), value.get(key, node), message)
    return INVALID if broken else built


def field_value(owner: type, name: str, node: Node, path: str, problems: Problems) -> Any:
    special = CONVERTERS.get((owner, name))
    check = CHECKS.get((owner, name))
    try:
        value = special(node.plain()) if special else _typed(_hints(owner)[name], node, path, problems)
    except convert.OutOfRange as exc:  # too large to hold at all: the field's range says what fits
        bounds = check.message if isinstance(check, Range) else str(exc)
        _report(problems, path, node, f"{bounds} (got {convert.describe(node.plain())})")
        return INVALID
    except ValueError as exc:
        _report(problems, path, node, str(exc))
        return INVALID
    if value is INVALID or value is None:
        return value
    message = check(value) if check else None
    if isinstance(check, Range) and message:
        message += f" (got {convert.describe(node.plain())})"
    if message:
        _report(problems, path, node, message)
        return INVALID
    return value


def _typed(hint: Any, node: Node, path: str, problems: Problems) -> Any:
    """Convert by type hint; raises ValueError for a scalar problem, returns INVALID for nested ones."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if node.value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _typed(hint, node, path, problems)
    if dataclasses.is_dataclass(hint):
        return build(hint, node, path, problems)  # type: ignore[arg-type]
    if origin is Literal:
        return _literal(args, node.value)
    if origin is tuple:
        return _tuple(args[0], node, path, problems)
    if hint in _SCALARS:
        return _SCALARS[hint](node.value)
    raise TypeError(f"no converter for {hint!r} at {path}")  # a schema bug, not a user error


def _literal(allowed: tuple[Any, ...], value: Any) -> Any:
    if value in allowed:
        return value
    if isinstance(value, str):
        same = [a for a in allowed if isinstance(a, str) and a.lower() == value.strip().lower()]
        if len(same) == 1:
            return same[0]
    choices = ", ".join(str(a) for a in allowed)
    raise ValueError(f"must be one of {choices} (got {convert.describe(value)})")


def _tuple(item_hint: Any, node: Node, path: str, problems: Problems) -> Any:
    if isinstance(node.value, str) and item_hint in _SCALARS:
        items = [Node(part.strip(), node.line, node.env, node.inherited) for part in node.value.split(",")]
    elif isinstance(node.value, list):
        items = node.value
    else:
        raise ValueError(f"expected a list, got {convert.describe(node.plain())}")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(_typed(item_hint, item, join(path, i), problems))
        except ValueError as exc:
            _report(problems, join(path, i), item, str(exc))
            out.append(INVALID)
    return INVALID if any(v is INVALID for v in out) else tuple(out)


def _report(problems: Problems, path: str, node: Node, message: str) -> None:
    """Record a problem, unless the value was inherited from a global section (reported there already)."""
    if not node.inherited:
        problems.add(path, node, message)
