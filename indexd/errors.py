"""The error hierarchy: one root, a few branches; the CLI maps them to exit codes."""

from __future__ import annotations


class IndexdError(Exception):
    """Root of every error indexd raises on purpose."""

    exit_code = 1


class ConfigError(IndexdError):
    """The configuration is invalid; carries every problem found, each with its key path and line."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(IndexdError):
    """The command line asks for something impossible (unknown database, missing argument)."""

    exit_code = 2


class StateMissing(IndexdError):
    """A database has no indexd state schema yet: 'indexd migrate' creates it. A failure of that database (exit
    1), not of the command line: the other databases of the same command go on."""


class ConnectionFailed(IndexdError):
    """A database could not be reached, or refused us (wrong password, breaker open, retries exhausted)."""


class GuardRefusal(IndexdError):
    """A safety guard (pause, window, load, rate limit, leadership) refused a mutation."""

    exit_code = 3


class BuildError(IndexdError):
    """An index build or drop failed."""


class BackupError(IndexdError):
    """A backup, verification or restore failed."""


def first_line(error: BaseException | str, default: str | None = None) -> str:
    """The first line of an error's message: psycopg2 and libpq put DETAIL, HINT and context on the lines after
    it. An empty message gives `default`, else the error's class name."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return default if default is not None else type(error).__name__
