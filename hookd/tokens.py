"""API bearer tokens: generated once, stored only as SHA-256 hashes in a tokens file.

File format (`[api] tokens_file`), one token per line, `#` starts a comment:

    NAME sha256:HEX [tenant=TENANT]

NAME is a label for logs (letters, digits, `_`, `-`, `.`); a line with `tenant=` limits the token to
that tenant's objects. Tokens are 32 random bytes (base64url) behind the prefix "hkd_", so a plain
SHA-256 is enough (no password stretching needed); presented tokens are compared with
`hmac.compare_digest` against every stored hash, so the time taken does not depend on which bytes
match. The file is read again when its modification time changes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from hookd.errors import ConfigError

TOKEN_PREFIX = "hkd_"

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HASH = re.compile(r"^sha256:([0-9a-f]{64})$")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One configured token: its `name` and, if limited, its `tenant`."""

    name: str
    tenant: str | None
    digest: bytes


def generate() -> str:
    """A new random token, e.g. "hkd_3q2...": show it once, store only `line_for(...)`."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest_of(token: str) -> bytes:
    """SHA-256 of a token's UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def line_for(name: str, token: str, tenant: str | None = None) -> str:
    """The tokens-file line for `token` (no newline). Raises ConfigError for a bad name/tenant."""
    if not _NAME.match(name):
        raise ConfigError(f"token name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    if tenant is not None and (not tenant or len(tenant) > 200 or any(c.isspace() for c in tenant)):
        raise ConfigError("tenant: must be 1-200 characters without spaces")
    line = f"{name} sha256:{digest_of(token).hex()}"
    return f"{line} tenant={tenant}" if tenant else line


def parse(text: str, where: str) -> list[ApiToken]:
    """Tokens from a tokens file's text. Raises ConfigError naming `where` and the line."""
    out: list[ApiToken] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        bad = ConfigError(f"{where}:{number}: expected 'NAME sha256:HEX [tenant=TENANT]'")
        if len(parts) not in (2, 3) or not _NAME.match(parts[0]):
            raise bad
        m = _HASH.match(parts[1])
        if m is None:
            raise bad
        tenant = None
        if len(parts) == 3:
            if not parts[2].startswith("tenant=") or len(parts[2]) == len("tenant="):
                raise bad
            tenant = parts[2][len("tenant=") :]
        out.append(ApiToken(parts[0], tenant, bytes.fromhex(m.group(1))))
    return out


class TokenFile:
    """The tokens of one file, re-read when the file changes.

    Raises ConfigError from `load()` for a missing, unreadable or malformed file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime_ns: int | None = None
        self._tokens: list[ApiToken] = []

    def load(self) -> list[ApiToken]:
        """Read the file if it changed since the last read; return its tokens."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime != self._mtime_ns:
                self._tokens = parse(Path(self.path).read_text(encoding="utf-8"), self.path)
                self._mtime_ns = mtime
        except OSError as exc:
            raise ConfigError(
                f"api.tokens_file: cannot read {self.path}: {exc.strerror or exc}"
            ) from None
        return self._tokens

    def verify(self, presented: str) -> ApiToken | None:
        """The token `presented` matches, or None. Every stored hash is compared (constant time
        per hash), whichever matches."""
        digest = digest_of(presented)
        found = None
        for token in self.load():
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found
