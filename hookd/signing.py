"""Standard Webhooks 1.0 signing: secrets, keys, and the `webhook-signature` header value.

Source: Standard Webhooks specification 1.0, "Signature scheme" section. The signed content is
``{webhook-id}.{webhook-timestamp}.{body}`` over the exact body bytes sent.

* Symmetric: HMAC-SHA256 keyed with the base64-decoded part of a ``whsec_`` secret, sent as
  ``v1,<base64>``.
* Asymmetric: Ed25519 with the 32-byte seed in a ``whsk_`` secret key (its public key is
  ``whpk_`` + base64 of the 32-byte public key), sent as ``v1a,<base64>``.

During a key rotation the header carries one signature per secret, separated by spaces, as the
specification allows; receivers holding either secret verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SECRET_PREFIX = "whsec_"
PRIVATE_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
SECRET_BYTES = 32
"""Random bytes in a generated HMAC secret (the specification asks for 24 to 64)."""


class InvalidSecret(ValueError):
    """The secret is neither `whsec_` + base64 of 24-64 bytes nor `whsk_` + base64 of 32 bytes."""


def generate_secret(kind: str = "hmac") -> str:
    """Return a new secret from the OS's cryptographic source.

    `kind` "hmac" gives `whsec_` + base64 of 32 random bytes; "ed25519" gives a `whsk_` key.
    Raises ValueError for another kind.
    """
    if kind == "hmac":
        return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")
    if kind == "ed25519":
        return PRIVATE_KEY_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    raise ValueError(f"unknown secret kind {kind!r} (hmac or ed25519)")


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret(f"{what} is not valid base64") from exc


def decode_secret(secret: str) -> bytes:
    """Return the key bytes of a `whsec_...` secret or the seed of a `whsk_...` key.

    Raises:
        InvalidSecret: unknown prefix, bad base64, or a key of the wrong length.
    """
    if secret.startswith(SECRET_PREFIX):
        key = _b64(secret[len(SECRET_PREFIX) :], "secret after 'whsec_'")
        if not 24 <= len(key) <= 64:
            raise InvalidSecret(f"secret key is {len(key)} bytes; it must be 24 to 64")
        return key
    if secret.startswith(PRIVATE_KEY_PREFIX):
        seed = _b64(secret[len(PRIVATE_KEY_PREFIX) :], "key after 'whsk_'")
        if len(seed) != 32:
            raise InvalidSecret(f"whsk_ key is {len(seed)} bytes; it must be 32")
        return seed
    raise InvalidSecret("secret must start with 'whsec_' (HMAC) or 'whsk_' (Ed25519)")


def public_key(secret: str) -> str | None:
    """The `whpk_` public key for a `whsk_` secret key; None for an HMAC secret.

    Raises InvalidSecret for a malformed secret.
    """
    seed = decode_secret(secret)
    if not secret.startswith(PRIVATE_KEY_PREFIX):
        return None
    raw = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


class Signer:
    """Signs request bodies for one endpoint with one or more secrets (several during rotation).

    HMAC state is keyed once and copied per signature, which saves the key schedule on every
    attempt.
    """

    __slots__ = ("_ed25519", "_macs")

    def __init__(self, secrets_: str | Sequence[str]) -> None:
        """Raises InvalidSecret for a malformed secret (or an empty list)."""
        items = [secrets_] if isinstance(secrets_, str) else list(secrets_)
        if not items:
            raise InvalidSecret("no secret given")
        self._macs: list[hmac.HMAC] = []
        self._ed25519: list[Ed25519PrivateKey] = []
        for s in items:
            key = decode_secret(s)
            if s.startswith(SECRET_PREFIX):
                self._macs.append(hmac.new(key, digestmod=hashlib.sha256))
            else:
                self._ed25519.append(Ed25519PrivateKey.from_private_bytes(key))

    def sign(self, webhook_id: str, timestamp_s: int, body: bytes) -> str:
        """Return the `webhook-signature` value for one attempt: `v1,<b64>` / `v1a,<b64>` entries
        separated by spaces. `timestamp_s` is the integer Unix time sent as `webhook-timestamp`."""
        prefix = f"{webhook_id}.{timestamp_s}.".encode()
        out = []
        for base in self._macs:
            mac = base.copy()
            mac.update(prefix)
            mac.update(body)
            out.append("v1," + base64.b64encode(mac.digest()).decode("ascii"))
        if self._ed25519:
            content = prefix + body
            for key in self._ed25519:
                out.append("v1a," + base64.b64encode(key.sign(content)).decode("ascii"))
        return " ".join(out)
