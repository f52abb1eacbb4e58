"""Converters from what a YAML file or an environment variable holds to the settings' types.

Each converter takes the raw value (YAML scalar or string) and returns the typed value, or raises ValueError
with a message fit to show the operator after the key path. Strings are accepted everywhere because values
from `${VAR}` interpolation and `INDEXD_*` variables arrive as text.
"""

from __future__ import annotations

import contextlib
import math
import re
from datetime import time, timedelta
from typing import Any

from indexd.config.schema import DAYS, ByteSize

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}

# Sizes follow PostgreSQL's convention: kB, MB, GB and TB are powers of 1024 (so are KiB, MiB, ...).
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1024**4, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

_DURATION_UNITS = {
    "ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d|w)", re.IGNORECASE)
_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")

_DAY_ALIASES = {
    "daily": DAYS,
    "everyday": DAYS,
    "weekdays": DAYS[:5],
    "weekend": DAYS[5:],
    "weekends": DAYS[5:],
}


# timedelta's own limit is 999999999 days; anything near it is out of every range, which the caller states.
MAX_SECONDS = 999_999_999 * 86400.0


class OutOfRange(ValueError):
    """A value of the right kind that is too large to hold; the field's own range makes the message."""


def describe(value: Any) -> str:
    """A short description of a wrong value for an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {describe(value)}")


def to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ValueError(f"expected a whole number, got {describe(value)}")


def to_float(value: Any) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = _as_float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None or math.isnan(number):
        raise ValueError(f"expected a number, got {describe(value)}")
    if math.isinf(number):
        raise OutOfRange(f"{describe(value)} is not a finite number")
    return number


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond any float
        return math.inf if value > 0 else -math.inf


def to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a text value, got {describe(value)} (quote it if it is meant as text)")


def to_size(value: Any) -> ByteSize:
    """512MB, 2GiB, '10 MB', 1.5GB or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return ByteSize(value)
    m = _SIZE.match(value) if isinstance(value, str) else None
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 512MB, 2GiB or a number of bytes, got {describe(value)}")
    amount = float(m.group(1)) * _SIZE_UNITS[unit]
    if math.isinf(amount):
        raise OutOfRange(f"{describe(value)} is far too large")
    return ByteSize(int(amount))


def to_duration(value: Any) -> timedelta:
    """90s, 500ms, 15m, 2h, 7d, 1w, 1h30m, or a number of seconds."""
    seconds = _seconds(value)
    if seconds is None:
        raise ValueError(
            f"expected a duration such as 90s, 500ms, 15m, 2h, 7d, 1w or a number of seconds, got {describe(value)}"
        )
    if math.isnan(seconds):
        raise ValueError(f"expected a duration, got {describe(value)}")
    if abs(seconds) > MAX_SECONDS:
        raise OutOfRange(f"{describe(value)} is far too long")
    return timedelta(seconds=seconds)


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _as_float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        parts = _DURATION_PART.findall(text)
        if parts and re.sub(r"\s+", "", _DURATION_PART.sub("", text)) == "":
            return sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in parts)
    return None


def to_time(value: Any) -> time:
    """'01:00' or '01:00:30' (24-hour clock)."""
    if isinstance(value, time):
        return value
    m = _TIME.match(value) if isinstance(value, str) else None
    if m:
        hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise ValueError(f"expected a time of day such as 01:00 or 23:30, got {describe(value)}")


def _day_token(token: str) -> tuple[str, ...]:
    token = token.strip().lower()
    if token in _DAY_ALIASES:
        return _DAY_ALIASES[token]
    if "-" in token:
        first, _, last = token.partition("-")
        first, last = first.strip()[:3], last.strip()[:3]
        if first in DAYS and last in DAYS:
            i, j = DAYS.index(first), DAYS.index(last)
            return DAYS[i : j + 1] if i <= j else DAYS[i:] + DAYS[: j + 1]
    elif token[:3] in DAYS and (len(token) == 3 or _full_day_name(token)):
        return (token[:3],)
    raise ValueError(
        f"unknown day {token!r}: use mon, tue, wed, thu, fri, sat, sun, a range such as mon-fri, "
        "or daily, weekdays, weekend"
    )


def _full_day_name(token: str) -> bool:
    return token in {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}


def to_days(value: Any) -> tuple[str, ...]:
    """Window days: a list or comma-separated text of days, ranges (mon-fri) or daily/weekdays/weekend."""
    if isinstance(value, str):
        tokens: list[Any] = [t for t in value.split(",") if t.strip()]
    elif isinstance(value, list | tuple):
        tokens = list(value)
    else:
        raise ValueError(f"expected days such as [mon, tue] or mon-fri, got {describe(value)}")
    chosen: set[str] = set()
    for token in tokens:
        if not isinstance(token, str):
            raise ValueError(f"expected day names, got {describe(token)}")
        chosen.update(_day_token(token))
    if not chosen:
        raise ValueError("no days given: a window needs at least one day")
    return tuple(d for d in DAYS if d in chosen)
