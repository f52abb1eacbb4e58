"""Statements of a workload and their parse trees: plain data and pure helpers shared by workload and advisor."""
