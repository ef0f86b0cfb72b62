"""The operating service's pure input checks (hookd/service.py): text, tenant, description,
metadata, event-type filters, settings and settings patches, endpoint URL form (`check_url`),
time and id filters, page requests and pagination, payload filter messages, and operator-only
and catalogue-name checks. Each raises InvalidInput (or Forbidden) naming the field; none
touches the database or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from hookd.catalogue import name_problem
from hookd.endpoints import SETTING_TYPES, parse_event_types, validate_settings, validate_url
from hookd.errors import InvalidEndpoint, InvalidPayloadFilter
from hookd.service_types import (
    MAX_DESCRIPTION_LENGTH,
    MAX_ID,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_PAGE_SIZE,
    MAX_TENANT_LENGTH,
    Forbidden,
    InvalidInput,
    Page,
    PageRequest,
    Scope,
)


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


_R = TypeVar("_R", bound=_HasId)


def _page(rows: list[_R], limit: int) -> Page[_R]:
    items = rows[:limit]
    return Page(items, items[-1].id if len(rows) > limit and items else None)


def _invalid(exc: Exception, default_field: str) -> InvalidInput:
    """InvalidInput from a validator's message: "settings.x: expected ..." names its own field."""
    message = str(exc)
    head, sep, rest = message.partition(": ")
    if sep and " " not in head and (head == default_field or head.startswith(default_field + ".")):
        return InvalidInput(head, rest)
    return InvalidInput(default_field, message)


def _text(field_name: str, value: object, max_length: int, *, empty_ok: bool = False) -> str:
    """A string PostgreSQL can store: no NUL, valid UTF-8, within `max_length` characters."""
    if not isinstance(value, str):
        raise InvalidInput(field_name, "expected a string")
    if not value and not empty_ok:
        raise InvalidInput(field_name, "must not be empty")
    if len(value) > max_length:
        raise InvalidInput(field_name, f"is {len(value)} characters; at most {max_length} allowed")
    if "\0" in value:
        raise InvalidInput(field_name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field_name, "is not valid Unicode text") from None
    return value


def _tenant(value: object) -> str | None:
    if value is None:
        return None
    return _text("tenant", value, MAX_TENANT_LENGTH)


def _description(value: object) -> str | None:
    if value is None:
        return None
    return _text("description", value, MAX_DESCRIPTION_LENGTH, empty_ok=True)


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput("metadata", "expected an object of string keys and values")
    if len(value) > MAX_METADATA_KEYS:
        raise InvalidInput("metadata", f"has {len(value)} keys; at most {MAX_METADATA_KEYS}")
    out: dict[str, str] = {}
    for key, item in value.items():
        k = _text("metadata", key, MAX_METADATA_KEY_LENGTH)
        out[k] = _text(f"metadata.{k}", item, MAX_METADATA_VALUE_LENGTH, empty_ok=True)
    return out


def _event_types(value: object) -> tuple[str, ...]:
    """A filter from "a.*,b" or a list of entries (names, 'prefix.*' or '*')."""
    try:
        if isinstance(value, str):
            return parse_event_types(value)
        if not isinstance(value, Sequence) or not value:
            raise InvalidInput("event_types", "give at least one (or '*' for all)")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or "," in item:
                raise InvalidInput(
                    "event_types", f"{item!r} is not an event type, a 'prefix.*' pattern or '*'"
                )
            out.extend(parse_event_types(item))
        if not out:
            raise InvalidInput("event_types", "give at least one (or '*' for all)")
        return tuple(dict.fromkeys(out))
    except InvalidInput:
        raise
    except InvalidEndpoint as exc:
        message = str(exc).removeprefix("event types: ")
        raise InvalidInput("event_types", message) from None


def _settings(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput("settings", "expected an object of overrides")
    try:
        return validate_settings(value)
    except InvalidEndpoint as exc:
        raise _invalid(exc, "settings") from None


def _setting_changes(value: object) -> tuple[dict[str, Any], list[str]]:
    """(overrides to set, keys to remove) from a settings patch where None removes a key."""
    if not isinstance(value, Mapping):
        raise InvalidInput("settings", "expected an object of overrides")
    unset = [k for k, v in value.items() if v is None]
    for key in unset:
        if key not in SETTING_TYPES:
            raise InvalidInput(
                f"settings.{key}", f"unknown key (known: {', '.join(SETTING_TYPES)})"
            )
    return _settings({k: v for k, v in value.items() if v is not None}), unset


def check_url(value: object, *, allow_http: bool) -> str:
    """The form of an endpoint URL (hookd.endpoints.validate_url), without the SSRF guard's
    look at its destination; what callers can check before they reach the database.

    Raises InvalidInput("url", ...); a plain-http URL refused names `security.allow_http`.
    """
    url = _text("url", value, 4096)
    try:
        return validate_url(url, allow_http=allow_http)
    except InvalidEndpoint as exc:
        message = str(exc)
        if not allow_http and urlsplit(url).scheme == "http":
            message += " (set security.allow_http = true to allow plain http)"
        raise InvalidInput("url", message) from None


_FILTER_HINTS = {
    "22038": "not a predicate: write a comparison such as $.total > 100, or exists($.field) to"
    " test that a field is there",
    "42704": "a filter cannot use variables",
}
"""What to add to PostgreSQL's message, by SQLSTATE: 22038 singleton_sql_json_item_required
(the path yields values, not one boolean), 42704 undefined_object (a $variable)."""


def _filter_problem(exc: InvalidPayloadFilter) -> str:
    hint = _FILTER_HINTS.get(exc.sqlstate)
    return f"{exc} ({hint})" if hint else str(exc)


def _aware(field_name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(field_name, "give a time zone (e.g. 2026-01-01T00:00:00Z)")
    return value


def _filter_id(field_name: str, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_ID:
        raise InvalidInput(field_name, f"not a valid id: {value}")
    return value


def _operator(scope: Scope, action: str) -> None:
    if scope.tenant is not None:
        raise Forbidden(f"only an operator may {action} (it is installation-wide)")


def _catalogue_name(name: object) -> str:
    if problem := name_problem(name):
        raise InvalidInput("name", problem)
    assert isinstance(name, str)
    return name


def _check_page(page: PageRequest) -> int | None:
    """Validate a page request; return the `before_id` to query with."""
    if isinstance(page.limit, bool) or not isinstance(page.limit, int):
        raise InvalidInput("limit", "expected an integer")
    if not 1 <= page.limit <= MAX_PAGE_SIZE:
        raise InvalidInput("limit", f"expected 1 to {MAX_PAGE_SIZE}")
    before = page.before_id
    if before is None:
        return None
    if isinstance(before, bool) or not isinstance(before, int) or before < 1:
        raise InvalidInput("before_id", "expected a positive id")
    return None if before > MAX_ID else before
