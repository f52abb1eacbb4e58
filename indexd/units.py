"""How indexd writes sizes, durations and rates for people: one rule everywhere."""

from __future__ import annotations

import math
from datetime import timedelta

SIZE_UNITS = ("kB", "MB", "GB", "TB")  # powers of 1024, as PostgreSQL writes them


_SPANS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
MISSING = "-"  # what a table shows for a size or duration that is not known


def human_size(n: float | None) -> str:
    """A byte count as PostgreSQL-style units: "512 B", "1.5 kB", "1.0 MB" (never "1000.0 kB"); None as "-"."""
    if n is None:
        return MISSING
    if n < 1024:
        return f"{n:.0f} B"
    value = n / 1024
    for unit in SIZE_UNITS:
        if round(value, 1) < 1000 or unit == SIZE_UNITS[-1]:
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(ms_per_s: float) -> str:
    """Milliseconds of work per second to three significant digits, never in exponent form.

    "0.0811 ms/s", "1.00 ms/s", "1235 ms/s"; zero as "0.000 ms/s", like the small values next to it.
    """
    if ms_per_s == 0:
        return "0.000 ms/s"
    decimals = max(0, 2 - math.floor(math.log10(abs(ms_per_s))))
    return f"{ms_per_s:.{decimals}f} ms/s"


def human_duration(value: float | timedelta | None) -> str:
    """A duration as the configuration writes one: "450ms", "12.5s", "5m3s", "1h30m", "7d"; None as "-".

    Below a minute, seconds to one decimal; from a minute on, the two largest whole units (zeros left out),
    rounded down, so the text reads back as the same or a slightly shorter duration.
    """
    if value is None:
        return MISSING
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if 0 < seconds < 1:
        return f"{sign}{seconds * 1000:.0f}ms"
    if round(seconds, 1) < 60:
        return f"{sign}{round(seconds, 1):g}s"
    rest = int(seconds)
    parts: list[str] = []
    for unit, size in _SPANS:
        count, rest = divmod(rest, size)
        if count or parts:
            parts.append(f"{count}{unit}" if count else "")
        if len(parts) == 2:
            break
    return sign + "".join(parts)
