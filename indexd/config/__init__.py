"""Configuration: typed settings (schema) and the loader that builds them from YAML and the environment."""

from indexd.config.schema import (
    BackupSettings,
    ByteSize,
    DatabaseSettings,
    IndexingSettings,
    LoggingSettings,
    Settings,
    WindowSettings,
)

__all__ = [
    "BackupSettings",
    "ByteSize",
    "DatabaseSettings",
    "IndexingSettings",
    "LoggingSettings",
    "Settings",
    "WindowSettings",
    "find_config",
    "load_settings",
    "settings_for_dsn",
]


def __getattr__(name: str) -> object:
    # The loader imports the DSN helpers (and through them psycopg2); load it only when asked for.
    if name in ("find_config", "load_settings", "settings_for_dsn"):
        from indexd.config import load

        return getattr(load, name)
    raise AttributeError(name)
