"""A synthetic shop workload for demos, tests and benchmarks: `setup` loads skewed data, `drive` runs a mixed
read/write workload of parameterised statements and reports per-shape client timings, `time_alone` times each
shape with nothing else running."""

from __future__ import annotations

from indexd.simulate.data import setup, table_counts
from indexd.simulate.scenario import SCENARIOS, SCHEMA, Scenario, scenario
from indexd.simulate.shapes import SHAPES, Shape
from indexd.simulate.workload import ShapeStats, WorkloadStats, drive, time_alone

__all__ = [
    "SCENARIOS", "SCHEMA", "SHAPES", "Scenario", "Shape", "ShapeStats", "WorkloadStats",
    "drive", "scenario", "setup", "table_counts", "time_alone",
]
