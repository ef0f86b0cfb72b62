"""Validation of endpoint definitions: URLs and event-type filters."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

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
