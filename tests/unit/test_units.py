from __future__ import annotations

from datetime import timedelta

import pytest

from indexd.config.convert import to_duration
from indexd.units import human_duration, human_rate, human_size


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 kB"), (1536, "1.5 kB"),
    (1000 * 1024, "1.0 MB"),  # never "1000.0 kB"
    (1023 * 1024, "1.0 MB"), (999 * 1024, "999.0 kB"), (5 * 1024**3, "5.0 GB"), (3 * 1024**4, "3.0 TB"),
])
def test_sizes(n: int, text: str) -> None:
    assert human_size(n) == text


@pytest.mark.parametrize(("rate", "text"), [
    (0, "0.000 ms/s"), (0.0811, "0.0811 ms/s"), (1, "1.00 ms/s"), (12.5, "12.5 ms/s"), (4321.7, "4322 ms/s"),
])
def test_rates_have_one_precision_rule(rate: float, text: str) -> None:
    assert human_rate(rate) == text


def test_unknown_size_is_a_dash() -> None:
    assert human_size(None) == "-"


@pytest.mark.parametrize(("value", "text"), [
    (0, "0s"), (0.45, "450ms"), (12.46, "12.5s"), (30, "30s"), (60, "1m"), (63, "1m3s"), (3600, "1h"),
    (5400, "1h30m"), (timedelta(days=7), "7d"), (timedelta(days=1, hours=3, seconds=59), "1d3h"),
    (timedelta(hours=2, seconds=30), "2h"),  # two units at most, rounded down
    (-90, "-1m30s"), (None, "-"),
])
def test_durations_read_like_the_configuration(value: float | timedelta | None, text: str) -> None:
    assert human_duration(value) == text


@pytest.mark.parametrize("text", ["450ms", "12.5s", "1m3s", "1h30m", "7d", "1d3h"])
def test_a_written_duration_reads_back_as_itself(text: str) -> None:
    assert human_duration(to_duration(text)) == text
