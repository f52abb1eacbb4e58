"""Configuration: typed settings (schema) and the loader that builds them from YAML and the environment."""

from indexd.config.schema import (
    BackupSettings,
    ByteSize,
    DatabaseSettings,
    IndexingSettings,
    Settings,
    WindowSettings,
)

__all__ = [
    "BackupSettings",
    "ByteSize",
    "DatabaseSettings",
    "IndexingSettings",
    "Settings",
    "WindowSettings",
]
