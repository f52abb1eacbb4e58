"""Public workloads for `python -m bench.public_workloads`: TPC-H from DuckDB's extension, pgbench, and the index
selection algorithms of the public evaluation platform, all fetched or generated at run time."""
