"""Every value in the configuration has a range or a shape, and a value outside it is a clear error with its key
path and line: numbers, durations and sizes (each key, both ends), and one case per other value type."""

from __future__ import annotations

import dataclasses
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from indexd.config import schema
from indexd.config.bounds import RANGES, Range
from indexd.config.build import CHECKS, NOT_KEYS
from indexd.config.load import load_settings
from indexd.errors import ConfigError

DSN = "postgresql://indexd@127.0.0.1:5432/app"
KINDS = {int: "number", float: "number", timedelta: "duration", schema.ByteSize: "size"}


def _sections(cls: type, path: tuple[str, ...]) -> dict[type, tuple[str, ...]]:
    """Where each settings class sits in the file (the first place it appears)."""
    found = {cls: path}
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint) and hint not in found:
            found.update({k: v for k, v in _sections(hint, (*path, f.name)).items() if k not in found})
    return found


WHERE = {**_sections(schema.DatabaseSettings, ("databases", "0")), **_sections(schema.Settings, ())}


def _numeric_fields() -> list[tuple[type, str, Any]]:
    out = []
    for cls in WHERE:
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            if hint in KINDS and (cls, f.name) not in NOT_KEYS:
                out.append((cls, f.name, hint))
    return out


def _load(tmp_path: Path, cls: type, key: str, value: Any, env: dict[str, str] | None = None) -> list[str]:
    """The problems of a file that sets `key` of section `cls` to `value` (and is otherwise valid)."""
    doc: dict[str, Any] = {"databases": [{"name": "main", "dsn": DSN}]}
    node: Any = doc
    for part in WHERE[cls]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[key] = value
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    try:
        load_settings(str(config), env=env or {})
    except ConfigError as exc:
        return exc.problems
    return []


def _label(cls: type, key: str) -> str:
    path = ".".join(WHERE[cls]).replace("databases.0", "databases.main")
    return f"{path}.{key}" if path else key


def test_every_number_duration_and_size_has_a_range_of_its_kind() -> None:
    missing = []
    for cls, name, hint in _numeric_fields():
        check = CHECKS.get((cls, name))
        if not isinstance(check, Range) or check.kind != KINDS[hint]:
            missing.append(f"{cls.__name__}.{name}")
    assert missing == []


def test_every_default_is_inside_its_range() -> None:
    for (cls, name), bounds in RANGES.items():
        default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
        assert bounds(default) is None, (cls.__name__, name, default)


def _outside(bounds: Range) -> list[float]:
    above = bounds.high * 10 + 1
    below = bounds.low - 1 if bounds.low >= 1 or bounds.low == 0 else bounds.low / 2
    return [below, above]


@pytest.mark.parametrize(("cls", "key"), list(RANGES), ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_each_ranged_key_refuses_values_beyond_both_ends(tmp_path: Path, cls: type, key: str) -> None:
    bounds = RANGES[(cls, key)]
    hint = typing.get_type_hints(cls)[key]
    for amount in _outside(bounds):
        value: Any = int(amount) if hint in (int, schema.ByteSize) and amount == int(amount) else amount
        (problem,) = _load(tmp_path, cls, key, value)
        assert problem.startswith(f"{_label(cls, key)} (line "), problem
        assert f": {bounds.message} (got " in problem, problem


@pytest.mark.parametrize("value", ["99999999999d", "1e400", 10**400, float("inf"), "9" * 400 + "w"])
def test_durations_far_too_long_are_range_errors_not_overflow_tracebacks(tmp_path: Path, value: Any) -> None:
    (problem,) = _load(tmp_path, schema.TimeoutSettings, "lock", value)
    if value == "1e400":  # not a duration at all
        assert "expected a duration such as 90s" in problem
        return
    assert problem.startswith("databases.main.timeouts.lock (line ")
    assert ": must be between 10ms and 1h (got " in problem


def test_a_huge_size_and_a_huge_number(tmp_path: Path) -> None:
    (size,) = _load(tmp_path, schema.IndexingSettings, "storage_budget", "9" * 400 + "TB")
    assert size.startswith("indexing.storage_budget (line ") and "must be between 0B and 1024TB (got '999" in size
    (count,) = _load(tmp_path, schema.PoolSettings, "size", 10**400)
    assert count.startswith("databases.main.pool.size (line ") and "must be between 1 and 1000 (got 1000" in count
    (ratio,) = _load(tmp_path, schema.WriteGuardSettings, "min_benefit_ratio", float("inf"))
    assert ratio.startswith("indexing.write_guard.min_benefit_ratio (line ") and "must be between 0 and 1000" in ratio


def test_a_range_error_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    (problem,) = _load(tmp_path, schema.RetrySettings, "attempts", 3, env={"INDEXD_RETRY__MAX_DELAY": "30d"})
    assert problem == "retry.max_delay (from $INDEXD_RETRY__MAX_DELAY): must be between 10ms and 1h (got '30d')"


# One wrong value for every other type of value, with the key path, the line and what is expected.
WRONG = [
    (schema.TimeoutSettings, "statement", "soon", "expected a duration such as 90s"),
    (schema.IndexingSettings, "storage_budget", "big", "expected a size such as 512MB"),
    (schema.PoolSettings, "size", 2.5, "expected a whole number, got 2.5"),
    (schema.RetrySettings, "multiplier", "double", "expected a number, got 'double'"),
    (schema.RetrySettings, "multiplier", float("nan"), "expected a number, got nan"),
    (schema.ThrottleSettings, "max_cpu_pct", 101, "must be between 1 and 100 (got 101)"),
    (schema.VerifySettings, "min_gain_pct", -1, "must be between 0 and 100 (got -1)"),
    (schema.WindowSettings, "start", "25:00", "expected a time of day such as 01:00"),
    (schema.WindowSettings, "days", "funday", "unknown day 'funday'"),
    (schema.WindowSettings, "timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    (schema.HttpSettings, "listen", ":9470", "the host is missing"),
    (schema.HttpSettings, "listen", "127.0.0.1:0.0.0.0:5520", "more than one ':'"),
    (schema.IndexingSettings, "mode", "turbo", "must be one of advise, approve, auto (got 'turbo')"),
    (schema.BackupSettings, "format", "zip", "must be one of custom, directory (got 'zip')"),
    (schema.BackupSettings, "dir", "", "must not be empty"),
    (schema.LoggingSettings, "file", ["a.log"], "expected a text value, got a list"),
    (schema.HttpSettings, "token_file", "  ", "must not be empty"),
    (schema.DatabaseSettings, "password_file", {"path": "x"}, "expected a text value, got a mapping"),
    (schema.DropUnusedSettings, "enabled", "maybe", "expected true or false, got 'maybe'"),
    (schema.BypassSettings, "enabled", 2, "expected true or false, got 2"),
    (schema.BackupSettings, "schedule", "every hour", "not a valid cron schedule 'every hour'"),
]


@pytest.mark.parametrize(("cls", "key", "value", "expected"), WRONG,
                         ids=[f"{c.__name__}.{k}={v!r}" for c, k, v, _ in WRONG])
def test_wrong_values_of_every_type(tmp_path: Path, cls: type, key: str, value: Any, expected: str) -> None:
    if cls is schema.WindowSettings:
        window = {"days": "mon-fri", "start": "01:00", "end": "05:00", key: value}
        problems = _load(tmp_path, schema.IndexingSettings, "windows", [window])
        label = "indexing.windows[0]." + key
    else:
        problems = _load(tmp_path, cls, key, value)
        label = _label(cls, key)
    (problem,) = problems
    assert problem.startswith(f"{label} (line "), problem
    assert expected in problem, problem
