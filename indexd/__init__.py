"""indexd: keeps PostgreSQL databases fast and safe to operate."""

__version__ = "0.1.0"
