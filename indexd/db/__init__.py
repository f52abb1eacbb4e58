"""Database access: pools, connection attempts and their libpq arguments, retries and the circuit breaker."""
