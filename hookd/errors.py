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


class StoreUnavailable(DatabaseUnavailable):
    """The database is unreachable or refused the work for now; retry later.

    Raised by the store for connection loss, SQLSTATE classes 08 (connection), 53 (insufficient
    resources) and 57P (operator intervention, e.g. a server shutting down), 40001 (serialization
    failure), 40P01 (deadlock), 57014 (statement timeout) and 25006 (a server that became a read-only
    standby after a failover); the driver's error is kept on `__cause__`. Any other database error is
    a bug in a query and propagates unchanged.
    """


class PermissionDenied(HookdError):
    """The database role lacks a privilege hookd needs: as the schema owner, run `hookd migrate
    --daemon-role ROLE` (SQLSTATE 42501, insufficient_privilege)."""


class InvalidPayloadFilter(HookdError):
    """PostgreSQL refused a payload filter; `sqlstate` says why (42601 syntax, 22038 not a
    predicate, 42704 an unknown variable, ...)."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class Busy(HookdError):
    """Another transaction holds a lock this change needs; try again (SQLSTATE 55P03)."""


class InvalidCapture(HookdError):
    """The capture definition is invalid (`hookd capture`)."""
