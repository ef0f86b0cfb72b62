"""The web console's sessions (hookd/console.py): the session cookie and its check against the
tokens file, the CSRF token of a session, the signed login nonces and flash messages, and the
cookies that carry them. Everything here is keyed either by the session's API token (the CSRF
token, so it holds across daemons) or by a key this process drew at start (flash messages and
login nonces, so losing one at a restart costs a reload).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson
from aiohttp import web

from hookd.service import Scope
from hookd.tokens import ApiToken, TokenFile

PREFIX = "/console"
SESSION_COOKIE = "hookd_session"
FLASH_COOKIE = "hookd_flash"
LOGIN_COOKIE = "hookd_login"
MAX_TOKEN_CHARS = 512
"""Longer form input is not a token; it is refused without hashing it."""

_CSRF_CONTEXT = b"hookd console csrf v1"


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: its token, what the tokens file says about it, and its CSRF token."""

    token: ApiToken
    csrf: str

    @property
    def scope(self) -> Scope:
        return Scope(self.token.tenant)


@dataclass(frozen=True, slots=True)
class Flash:
    """A one-time message shown on the next page: `level` "ok" or "error"."""

    level: str
    text: str


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the session's API token, hex."""
    key = session_token.encode("utf-8", "surrogatepass")
    return hmac.new(key, _CSRF_CONTEXT, hashlib.sha256).hexdigest()


class ConsoleSessions:
    """The console's sessions and cookies: part of Console (hookd/console.py), which sets these
    attributes."""

    tokens: TokenFile
    secure_cookies: bool
    _key: bytes

    def _session(self, request: web.Request) -> Session | None:
        """The request's session, or None. Raises ConfigError if the tokens file is unreadable."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw or len(raw) > MAX_TOKEN_CHARS:
            return None
        token = self.tokens.verify(raw)
        if token is None:
            return None
        return Session(token, csrf_token(raw))

    def _set_cookie(
        self, response: web.StreamResponse, name: str, value: str, *, max_age: int | None = None
    ) -> None:
        response.set_cookie(
            name,
            value,
            path=PREFIX,
            max_age=max_age,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies,
        )

    def _clear_cookie(self, response: web.StreamResponse, name: str) -> None:
        response.del_cookie(
            name, path=PREFIX, httponly=True, samesite="Strict", secure=self.secure_cookies
        )

    def _flash_value(self, flash: Flash) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps([flash.level, flash.text])).decode()
        return f"{body}.{self._sign('flash', body)}"

    def _read_flash(self, request: web.Request) -> Flash | None:
        raw = request.cookies.get(FLASH_COOKIE, "")
        body, _, mac = raw.partition(".")
        if not body or not hmac.compare_digest(mac, self._sign("flash", body)):
            return None
        try:
            level, text = orjson.loads(base64.urlsafe_b64decode(body))
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            return None
        return Flash(str(level), str(text))

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def _new_nonce(self) -> str:
        value = secrets.token_urlsafe(18)
        return f"{value}.{self._sign('login', value)}"

    def _nonce_ok(self, nonce: object, cookie: str) -> bool:
        """The form's nonce equals the cookie's, and this process made it."""
        if not isinstance(nonce, str) or not cookie or not hmac.compare_digest(nonce, cookie):
            return False
        value, _, mac = nonce.partition(".")
        return hmac.compare_digest(mac, self._sign("login", value))
