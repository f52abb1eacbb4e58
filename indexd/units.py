"""How indexd writes sizes and rates for people: one rule everywhere."""

from __future__ import annotations

import math

SIZE_UNITS = ("kB", "MB", "GB", "TB")  # powers of 1024, as PostgreSQL writes them


def human_size(n: float) -> str:
    """A byte count as PostgreSQL-style units: "512 B", "1.5 kB", "1.0 MB" (never "1000.0 kB")."""
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
