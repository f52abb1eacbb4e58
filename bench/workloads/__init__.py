"""Workload generators for the benchmarks (code only; the data is generated at run time, never committed)."""
