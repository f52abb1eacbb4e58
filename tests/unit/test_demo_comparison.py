"""The demo's before/after table, without a server: each shape timed alone is what it compares."""

from __future__ import annotations

from indexd.cli.service import _print_demo
from indexd.demo import DemoResult
from indexd.simulate import ShapeStats, WorkloadStats


def stats(**shapes: tuple[int, float, list[float]]) -> WorkloadStats:
    return WorkloadStats(duration_s=10.0, clients=2, shapes={
        name: ShapeStats(name, "report", calls=calls, total_ms=total, samples=samples)
        for name, (calls, total, samples) in shapes.items()})


def test_comparison_uses_the_shapes_timed_alone_and_their_median() -> None:
    # in the closed-loop runs the report looks slower after (it shared the cores with 3x more lookups) ...
    result = DemoResult("small", before=stats(report=(100, 500.0, []), lookup=(1000, 2000.0, [])),
                        after=stats(report=(90, 720.0, []), lookup=(3000, 600.0, [])))
    assert {r["shape"]: r["speedup"] for r in result.comparison()} == {"report": 0.62, "lookup": 10.0}
    # ... timed alone it is as fast as before; one slow call (a burst elsewhere) does not move the median
    result.before_alone = stats(report=(3, 15.0, [5.0, 5.0, 5.0]), lookup=(3, 6.0, [2.0, 2.0, 2.0]))
    result.after_alone = stats(report=(3, 25.0, [5.0, 5.0, 15.0]), lookup=(3, 0.6, [0.2, 0.2, 0.2]))
    rows = {r["shape"]: r for r in result.comparison()}
    assert rows["report"]["speedup"] == 1.0 and rows["report"]["ms_after"] == 5.0
    assert rows["lookup"]["speedup"] == 10.0
    assert [r["shape"] for r in result.comparison()] == ["lookup", "report"]  # heaviest in the workload run first
    assert result.throughput() == (110.0, 309.0)


def test_the_table_says_how_it_was_measured(capsys) -> None:
    result = DemoResult("small", before=stats(report=(1, 5.0, [])), after=stats(report=(1, 5.0, [])),
                        before_alone=stats(report=(1, 5.0, [5.0])), after_alone=stats(report=(1, 2.5, [2.5])))
    _print_demo(result)
    out = capsys.readouterr().out
    assert "each shape timed alone" in out and "2.0x" in out
