"""Encryption of secrets at rest (signing secrets, tokens, passwords) with AES-256-GCM.

The key is 32 bytes, given base64-encoded in `HOOKD_SECRET_KEY` or in a file named by
`security.secret_key_file` (so a systemd credential can carry it). Encrypted values are stored as
``enc:v1:<base64 of 12-byte nonce + ciphertext + tag>``; values without that prefix are plaintext
(written before a key was configured) and are read as they are.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hookd.errors import HookdError

PREFIX = "enc:v1:"
ENV_VAR = "HOOKD_SECRET_KEY"


class SecretKeyError(HookdError, ValueError):
    """The encryption key is missing, malformed, or not the key these values were written with."""


class MissingSecretKey(SecretKeyError):
    """An encrypted value was read but no key is configured."""


def generate_key() -> str:
    """A new random key, base64-encoded (for `hookd keygen`)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def load_key(key_file: str | None) -> bytes | None:
    """The key from `key_file` (if given) or `HOOKD_SECRET_KEY`; None when neither is set.

    Raises:
        SecretKeyError: unreadable file, bad base64, or not 32 bytes.
    """
    text: str | None = None
    where = ENV_VAR
    if key_file:
        where = key_file
        try:
            with open(key_file, encoding="ascii") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretKeyError(
                f"security.secret_key_file: cannot read {key_file}: {exc}"
            ) from None
    elif os.environ.get(ENV_VAR):
        text = os.environ[ENV_VAR].strip()
    if text is None:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{where}: the key is not valid base64") from None
    if len(key) != 32:
        raise SecretKeyError(f"{where}: the key must be 32 bytes (base64 of 32 random bytes)")
    return key


class SecretBox:
    """Encrypts and decrypts secret strings; with no key it stores plaintext."""

    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(key) if key is not None else None

    @property
    def encrypting(self) -> bool:
        """True when a key is configured."""
        return self._aead is not None

    def seal(self, value: str) -> str:
        """Encrypt `value` (returned unchanged when no key is configured)."""
        if self._aead is None:
            return value
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, value.encode(), None)
        return PREFIX + base64.b64encode(sealed).decode("ascii")

    def open(self, value: str) -> str:
        """Decrypt a stored value; plaintext values pass through.

        Raises:
            MissingSecretKey: an encrypted value and no key.
            SecretKeyError: the wrong key, or a corrupt value.
        """
        if not value.startswith(PREFIX):
            return value
        if self._aead is None:
            raise MissingSecretKey(
                "an encrypted secret was found but no key is configured: set"
                " security.secret_key_file (in the file given with --config) or HOOKD_SECRET_KEY"
            )
        try:
            raw = base64.b64decode(value[len(PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise SecretKeyError("a stored secret is corrupt (not valid base64)") from None
        if len(raw) < 12 + 16:
            raise SecretKeyError("a stored secret is corrupt (too short for nonce and tag)")
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode()
        except InvalidTag:
            raise SecretKeyError(
                "a stored secret does not decrypt with the configured key"
            ) from None
