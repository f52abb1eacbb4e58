"""Database access: pools, retries and the circuit breaker, DSNs, and indexd's own state schema."""
