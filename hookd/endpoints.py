"""Validation of endpoint definitions: URLs and event-type filters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from hookd.classify import check_final_statuses
from hookd.errors import InvalidEndpoint

MAX_URL_LENGTH = 2048
"""Longest accepted endpoint URL, in characters."""

_TYPE_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$")


def validate_url(url: str, *, allow_http: bool = True) -> str:
    """Return `url` if it can be an endpoint URL.

    Raises:
        InvalidEndpoint: not http(s) (or http when not allowed), no host, credentials inside the
            URL, a fragment, whitespace or control characters, or longer than MAX_URL_LENGTH.
    """
    if len(url) > MAX_URL_LENGTH:
        raise InvalidEndpoint(f"URL is {len(url)} characters; at most {MAX_URL_LENGTH} allowed")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidEndpoint("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidEndpoint(f"URL is malformed: {exc}") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidEndpoint(
            f"URL scheme must be {' or '.join(schemes)}, got {parts.scheme or 'none'!r}"
        )
    if not parts.hostname:
        raise InvalidEndpoint("URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidEndpoint("URL must not contain credentials")
    if parts.fragment:
        raise InvalidEndpoint("URL must not contain a fragment")
    if port == 0:
        raise InvalidEndpoint("URL port must be 1-65535")
    return url


def parse_event_types(spec: str) -> tuple[str, ...]:
    """Parse a comma-separated filter such as 'order.*,user.created' or '*'.

    Raises:
        InvalidEndpoint: an empty list or an entry that is not a type name, 'prefix.*' or '*'.
    """
    items = tuple(s.strip() for s in spec.split(",") if s.strip())
    if not items:
        raise InvalidEndpoint("event types: give at least one (or '*' for all)")
    for item in items:
        if len(item) > 200 or not _TYPE_PATTERN.match(item):
            raise InvalidEndpoint(
                f"event types: {item!r} is not an event type, a 'prefix.*' pattern or '*'"
            )
    return items


# Per-endpoint overrides stored in hookd.endpoints.settings, with their types.
SETTING_TYPES: dict[str, type] = {
    "connect_timeout_s": float,
    "total_timeout_s": float,
    "max_concurrency": int,
    "retry_schedule_s": list,
    "retry_max_attempts": int,
    "retry_max_age_s": float,
    "retry_jitter": float,
    "final_statuses": tuple,
}
"""`final_statuses` (a list of HTTP statuses, maybe empty) replaces `http.final_statuses` for the
endpoint: hookd/classify.py `check_final_statuses` says which statuses may be final."""


def validate_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check per-endpoint overrides; return them normalised (floats as floats, lists of floats).

    Raises:
        InvalidEndpoint: an unknown key, a wrong type, or a value out of range.
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kind = SETTING_TYPES.get(key)
        if kind is None:
            raise InvalidEndpoint(
                f"settings: unknown key {key!r} (known: {', '.join(SETTING_TYPES)})"
            )
        if kind is tuple:
            if not isinstance(value, list | tuple):
                raise InvalidEndpoint(f"settings.{key}: expected a list of HTTP statuses")
            try:
                out[key] = list(check_final_statuses(value))
            except ValueError as exc:
                raise InvalidEndpoint(f"settings.{key}: {exc}") from None
        elif kind is list:
            if not isinstance(value, list) or not value or not all(_number(v) for v in value):
                raise InvalidEndpoint(f"settings.{key}: expected a non-empty list of seconds")
            out[key] = [float(v) for v in value]
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidEndpoint(f"settings.{key}: expected an integer >= 1, got {value!r}")
            out[key] = value
        else:
            if not _number(value) or value < 0:
                raise InvalidEndpoint(f"settings.{key}: expected a number >= 0, got {value!r}")
            out[key] = float(value)
    for key in ("connect_timeout_s", "total_timeout_s"):
        if key in out and out[key] <= 0:
            raise InvalidEndpoint(f"settings.{key}: must be greater than 0")
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
