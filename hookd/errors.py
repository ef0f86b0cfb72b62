"""The exception tree. Every class is one line plus a docstring that doubles as its message."""

from __future__ import annotations


class HookdError(Exception):
    """hookd failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(HookdError):
    """The configuration is invalid."""


class DatabaseUnavailable(HookdError):
    """The database cannot be reached."""


class SchemaMissing(HookdError):
    """The hookd schema is missing or out of date: run `hookd migrate`."""


class InvalidEndpoint(HookdError):
    """The endpoint definition is invalid."""


class NotFound(HookdError):
    """No such object."""
