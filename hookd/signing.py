"""Standard Webhooks 1.0 signing: secrets, and the `webhook-signature` header value.

Source: Standard Webhooks specification 1.0, "Signature scheme" section. The signed content is
``{webhook-id}.{webhook-timestamp}.{body}`` over the exact body bytes sent; the signature is
HMAC-SHA256 keyed with the base64-decoded part of a ``whsec_`` secret, sent as ``v1,<base64>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
"""Random bytes in a generated secret (the spec asks for 24 to 64)."""


class InvalidSecret(ValueError):
    """The secret is not `whsec_` followed by base64 of 24 to 64 bytes."""


def generate_secret() -> str:
    """Return a new secret: `whsec_` + base64 of 32 bytes from the OS's cryptographic source."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """Return the key bytes of a `whsec_...` secret.

    Raises:
        InvalidSecret: wrong prefix, bad base64, or a key shorter than 24 or longer than 64 bytes.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("secret is not valid base64 after 'whsec_'") from exc
    if not 24 <= len(key) <= 64:
        raise InvalidSecret(f"secret key is {len(key)} bytes; it must be 24 to 64")
    return key


class Signer:
    """Signs request bodies for one endpoint.

    The keyed HMAC state is built once and copied per signature, which saves the key schedule on
    every attempt.
    """

    __slots__ = ("_mac",)

    def __init__(self, secret: str) -> None:
        """Raises InvalidSecret for a malformed secret."""
        self._mac = hmac.new(decode_secret(secret), digestmod=hashlib.sha256)

    def sign(self, webhook_id: str, timestamp_s: int, body: bytes) -> str:
        """Return the `webhook-signature` value (`v1,<base64>`) for one attempt.

        `timestamp_s` is the integer Unix time sent as `webhook-timestamp`.
        """
        mac = self._mac.copy()
        mac.update(f"{webhook_id}.{timestamp_s}.".encode())
        mac.update(body)
        return "v1," + base64.b64encode(mac.digest()).decode("ascii")
