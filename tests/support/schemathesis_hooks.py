"""schemathesis hooks for tests/integration/test_api_schema.py (loaded via SCHEMATHESIS_HOOKS).

Generated endpoint URLs (and OAuth token URLs) would send the daemon's deliveries anywhere: every
one that could be a valid http(s) URL is pointed at the test's loopback receiver
(`HOOKD_TEST_SINK`, host:port) before the request is sent, keeping its path and query. Values
the schema refuses anyway (too long, control characters, not a string) are left as generated, so
invalid cases stay invalid. The daemon under test also refuses every non-loopback address.

Generated payload filters are nearly never valid SQL/JSON path predicates, so PostgreSQL would
refuse almost every endpoint generated with one: a filter the schema accepts is replaced by a
valid predicate, so those calls go on to create and change endpoints. (Refused filters are
tested in tests/integration/test_payload_filters.py.)
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import schemathesis

_SINK = os.environ["HOOKD_TEST_SINK"]
_MAX_URL = 2048
_MAX_FILTER = 2000
_VALID_FILTER = "$.i >= 0"


def to_sink(url: Any) -> Any:
    """`url` with its scheme and authority replaced by the sink's, if it could be valid."""
    if not isinstance(url, str) or len(url) > _MAX_URL:
        return url
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return url
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return url
    if parts.scheme not in ("http", "https"):
        return url
    return urlunsplit(("http", _SINK, parts.path, parts.query, ""))


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if "url" in body:
        body["url"] = to_sink(body["url"])
    payload_filter = body.get("filter")
    valid_text = isinstance(payload_filter, str) and "\0" not in payload_filter
    if valid_text and 0 < len(payload_filter) <= _MAX_FILTER:
        body["filter"] = _VALID_FILTER
    creds = body.get("credentials")
    oauth = creds.get("oauth2") if isinstance(creds, dict) else None
    if isinstance(oauth, dict) and "token_url" in oauth:
        oauth["token_url"] = to_sink(oauth["token_url"])
