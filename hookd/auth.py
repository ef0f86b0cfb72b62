"""How hookd authenticates to an endpoint: HTTP Basic, a bearer token, static headers, OAuth 2.0
client credentials (RFC 6749 section 4.4), and TLS client certificates / a custom CA bundle.

Credentials are a JSON object stored encrypted in `hookd.endpoints.credentials`:

    {"basic": {"username": "u", "password": "p"}}
    {"bearer": "token"}
    {"headers": {"X-Api-Key": "k"}}                        (may be combined with the others)
    {"oauth2": {"token_url": "https://...", "client_id": "id", "client_secret": "s",
                "scope": "optional"}}
    {"tls": {"client_cert": "/path/cert.pem", "client_key": "/path/key.pem",
             "ca_bundle": "/path/ca.pem"}}                 (each optional; may be combined)
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from hookd.endpoints import validate_url
from hookd.errors import InvalidEndpoint

RESERVED_HEADERS = frozenset(
    {"host", "content-type", "content-length", "transfer-encoding", "connection", "user-agent"}
)
"""Header names hookd sets itself (with every `webhook-*` name): custom headers may not use them."""

TOKEN_REFRESH_MARGIN_S = 30.0
"""A cached OAuth token is refreshed this many seconds before it expires."""

_AUTH_KINDS = ("basic", "bearer", "oauth2")


def _text(where: str, value: object, max_len: int = 4096) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidEndpoint(f"{where}: expected a non-empty string")
    if any(c in value for c in "\r\n\0"):
        raise InvalidEndpoint(f"{where}: must not contain line breaks or NUL")
    return value


def _token_url(value: object, allow_http: bool) -> str:
    url = _text("credentials.oauth2.token_url", value)
    try:
        return validate_url(url, allow_http=allow_http)
    except InvalidEndpoint as exc:
        raise InvalidEndpoint(f"credentials.oauth2.token_url: {exc}") from None


def validate_credentials(raw: Mapping[str, Any], *, allow_http: bool = True) -> dict[str, Any]:
    """Check a credentials object; return it normalised.

    `allow_http` False refuses a plain-http OAuth token URL (the client secret would travel in
    clear); callers pass `security.allow_http`.

    Raises:
        InvalidEndpoint: unknown keys, more than one of basic/bearer/oauth2, a reserved or
            malformed header name, line breaks in values, or an invalid token URL.
    """
    unknown = set(raw) - {*_AUTH_KINDS, "headers", "tls"}
    if unknown:
        raise InvalidEndpoint(f"credentials: unknown key(s) {', '.join(sorted(unknown))}")
    if sum(k in raw for k in _AUTH_KINDS) > 1:
        raise InvalidEndpoint("credentials: use only one of basic, bearer and oauth2")
    out: dict[str, Any] = {}
    if "basic" in raw:
        b = raw["basic"]
        if not isinstance(b, Mapping):
            raise InvalidEndpoint("credentials.basic: expected username and password")
        user = _text("credentials.basic.username", b.get("username"))
        if ":" in user:
            raise InvalidEndpoint("credentials.basic.username: must not contain ':' (RFC 7617)")
        out["basic"] = {
            "username": user,
            "password": _text("credentials.basic.password", b.get("password")),
        }
    if "bearer" in raw:
        out["bearer"] = _text("credentials.bearer", raw["bearer"])
    if "oauth2" in raw:
        o = raw["oauth2"]
        if not isinstance(o, Mapping):
            raise InvalidEndpoint(
                "credentials.oauth2: expected token_url, client_id, client_secret"
            )
        oauth = {
            "token_url": _token_url(o.get("token_url"), allow_http),
            "client_id": _text("credentials.oauth2.client_id", o.get("client_id")),
            "client_secret": _text("credentials.oauth2.client_secret", o.get("client_secret")),
        }
        if o.get("scope"):
            oauth["scope"] = _text("credentials.oauth2.scope", o["scope"])
        out["oauth2"] = oauth
    if "headers" in raw:
        headers = raw["headers"]
        if not isinstance(headers, Mapping):
            raise InvalidEndpoint("credentials.headers: expected an object of name: value")
        clean = {}
        for name, value in headers.items():
            lname = str(name).lower()
            if lname in RESERVED_HEADERS or lname.startswith("webhook-"):
                raise InvalidEndpoint(
                    f"credentials.headers: {name!r} is set by hookd and cannot be overridden"
                )
            if lname == "authorization" and any(k in raw for k in _AUTH_KINDS):
                raise InvalidEndpoint(
                    "credentials.headers: Authorization conflicts with basic/bearer/oauth2"
                )
            # RFC 9110 section 5.1: a field name is a token of ASCII tchars.
            if not name or not all(
                (c.isascii() and c.isalnum()) or c in "!#$%&'*+-.^_`|~" for c in str(name)
            ):
                raise InvalidEndpoint(f"credentials.headers: {name!r} is not a valid header name")
            clean[str(name)] = _text(f"credentials.headers.{name}", value)
        out["headers"] = clean
    if "tls" in raw:
        t = raw["tls"]
        if not isinstance(t, Mapping) or set(t) - {"client_cert", "client_key", "ca_bundle"}:
            raise InvalidEndpoint("credentials.tls: only client_cert, client_key and ca_bundle")
        if ("client_cert" in t) != ("client_key" in t):
            raise InvalidEndpoint("credentials.tls: give client_cert and client_key together")
        out["tls"] = {k: _text(f"credentials.tls.{k}", v) for k, v in t.items()}
    return out


def static_headers(creds: Mapping[str, Any] | None) -> dict[str, str]:
    """Headers sent with every request: Basic or Bearer Authorization and custom headers."""
    if not creds:
        return {}
    headers = dict(creds.get("headers", {}))
    if "basic" in creds:
        pair = f"{creds['basic']['username']}:{creds['basic']['password']}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    elif "bearer" in creds:
        headers["Authorization"] = "Bearer " + creds["bearer"]
    return headers


def ssl_context(creds: Mapping[str, Any] | None) -> ssl.SSLContext | None:
    """A verifying TLS context with the endpoint's CA bundle and client certificate, or None
    for the default (system CAs, no client certificate). Certificates are always verified.

    Raises:
        InvalidEndpoint: the files cannot be read or do not match.
    """
    tls = (creds or {}).get("tls")
    if not tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=tls.get("ca_bundle"))
        if "client_cert" in tls:
            ctx.load_cert_chain(tls["client_cert"], tls["client_key"])
    except (OSError, ssl.SSLError) as exc:
        raise InvalidEndpoint(f"credentials.tls: {exc}") from None
    return ctx


class TokenError(Exception):
    """The OAuth token endpoint did not give a usable access token."""


class OAuthClient:
    """Fetches and caches an OAuth 2.0 client-credentials access token for one endpoint.

    One fetch at a time (concurrent attempts share it); the token is reused until
    TOKEN_REFRESH_MARGIN_S before `expires_in` runs out, and dropped by `invalidate()` (after a
    401 from the receiver).
    """

    def __init__(self, settings: Mapping[str, str]) -> None:
        self._settings = settings
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def form(self) -> tuple[str, bytes, dict[str, str]]:
        """(token URL, form body, headers) of the token request (RFC 6749 section 4.4.2, with
        client authentication in the body as section 2.3.1 allows)."""
        fields = {
            "grant_type": "client_credentials",
            "client_id": self._settings["client_id"],
            "client_secret": self._settings["client_secret"],
        }
        if "scope" in self._settings:
            fields["scope"] = self._settings["scope"]
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        return self._settings["token_url"], urlencode(fields).encode(), headers

    def cached(self) -> str | None:
        """The cached token if still fresh."""
        if self._token is not None and time.monotonic() < self._expires_at:
            return self._token
        return None

    def invalidate(self, token: str) -> None:
        """Forget `token` (the receiver refused it)."""
        if self._token == token:
            self._token = None

    def accept(self, status: int, body: bytes) -> str:
        """Store the token from a token-endpoint response and return it.

        Raises:
            TokenError: a non-2xx status, a body that is not JSON, or no access_token.
        """
        if not 200 <= status < 300:
            raise TokenError(f"token endpoint answered HTTP {status}")
        try:
            data = orjson.loads(body)
            token = data["access_token"]
            expires_in = float(data.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise TokenError("token endpoint answer has no access_token") from None
        if not isinstance(token, str) or not token:
            raise TokenError("token endpoint answer has no access_token")
        self._token = token
        self._expires_at = time.monotonic() + max(0.0, expires_in - TOKEN_REFRESH_MARGIN_S)
        self.fetches += 1
        return token

    @property
    def lock(self) -> asyncio.Lock:
        """Held while a token is being fetched."""
        return self._lock
