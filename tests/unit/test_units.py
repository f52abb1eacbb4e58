from __future__ import annotations

import pytest

from indexd.units import human_rate, human_size


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
