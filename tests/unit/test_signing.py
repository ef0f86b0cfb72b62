"""Unit tests for hookd.signing: secrets, keys and `webhook-signature` values (issue 4, points 1-2).

Signatures are checked by verifiers that share no code with hookd: the `standardwebhooks`
reference package, `svix`, a verifier written here from the specification's text, and, for
Ed25519, the `cryptography` package. (The JavaScript verifier runs in the integration tests.)

Note: `svix.webhooks.Webhook` maps its own header names and then delegates to the Python
`standardwebhooks` package, so on the HMAC path it is not independent code; the verifier from the
specification below is what makes the Python side two independent implementations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from hookd import signing
from hookd.signing import (
    InvalidSecret,
    Signer,
    decode_secret,
    generate_secret,
    public_key,
)

MSG_ID = "msg_test_42"
BODY = b'{"type":"order.paid","timestamp":"2026-01-01T00:00:00.000000Z","data":{"id":1}}'


def spec_verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Standard Webhooks 1.0 verification, written from the specification's text.

    Raises ValueError when no `v1` signature matches or the timestamp is off by over 5 minutes.
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    ts = headers["webhook-timestamp"]
    if abs(time.time() - int(ts)) > 300:
        raise ValueError("timestamp outside tolerance")
    content = f"{headers['webhook-id']}.{ts}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for entry in headers["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return
    raise ValueError("no matching v1 signature")


def _standardwebhooks(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    StandardWebhook(secret).verify(body, dict(headers), json_parse=False)


def _svix(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    SvixWebhook(secret).verify(body, dict(headers))


VERIFIERS: dict[str, Callable[[str, Mapping[str, str], bytes], None]] = {
    "standardwebhooks": _standardwebhooks,
    "svix": _svix,
    "spec": spec_verify,
}


def verifies(name: str, secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    try:
        VERIFIERS[name](secret, headers, body)
    # The reference verifiers raise more than WebhookVerificationError on malformed input.
    except Exception:
        return False
    return True


def headers_for(signer: Signer, body: bytes, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(ts),
        "webhook-signature": signer.sign(MSG_ID, ts, body),
    }


# -- secrets -----------------------------------------------------------------------------------


def test_generated_secret_is_whsec_and_base64_of_at_least_24_random_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert 24 <= len(raw) <= 64
    assert decode_secret(secret) == raw


def test_generated_secrets_are_distinct_and_look_random() -> None:
    raws = [decode_secret(generate_secret()) for _ in range(256)]
    assert len(set(raws)) == len(raws)
    data = b"".join(raws)
    ones = sum(bin(b).count("1") for b in data)
    # 65,536 bits: a fair source is within a few hundredths of one half (sigma is 0.002).
    assert 0.47 < ones / (8 * len(data)) < 0.53
    # 8,192 bytes: every byte value shows up (a miss has probability about 256 * e^-32).
    assert len(set(data)) == 256


def test_secrets_come_from_the_secrets_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = secrets.token_bytes

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(signing.secrets, "token_bytes", counting)
    generate_secret("hmac")
    generate_secret("ed25519")
    assert calls and all(n >= 24 for n in calls)


def test_ed25519_secret_and_public_key_formats() -> None:
    sk = generate_secret("ed25519")
    assert sk.startswith("whsk_")
    seed = base64.b64decode(sk.removeprefix("whsk_"), validate=True)
    assert len(seed) == 32
    pk = public_key(sk)
    assert pk is not None and pk.startswith("whpk_")
    expected = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    assert base64.b64decode(pk.removeprefix("whpk_")) == expected
    assert public_key(generate_secret()) is None


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown secret kind"):
        generate_secret("rsa")


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "must start with"),
        ("sk_" + base64.b64encode(bytes(32)).decode(), "must start with"),
        ("whpk_" + base64.b64encode(bytes(32)).decode(), "must start with"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(bytes(23)).decode(), "23 bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "65 bytes"),
        ("whsec_" + base64.b64encode(bytes(32)).decode().rstrip("="), "not valid base64"),
        ("whsk_" + base64.b64encode(bytes(31)).decode(), "31 bytes"),
        ("whsk_" + base64.b64encode(bytes(64)).decode(), "64 bytes"),
    ],
)
def test_malformed_secrets_are_refused(secret: str, message: str) -> None:
    with pytest.raises(InvalidSecret, match=message):
        decode_secret(secret)
    with pytest.raises(InvalidSecret):
        Signer(secret)


def test_invalid_secret_message_does_not_echo_the_secret() -> None:
    secret = "whsec_" + base64.b64encode(b"a-very-distinctive-secret").decode()[:-1]
    with pytest.raises(InvalidSecret) as info:
        decode_secret(secret)
    assert secret.removeprefix("whsec_") not in str(info.value)


def test_signer_needs_a_secret() -> None:
    with pytest.raises(InvalidSecret, match="no secret"):
        Signer([])


# -- HMAC (v1) ---------------------------------------------------------------------------------


def test_known_answer_from_the_reference_libraries() -> None:
    # The example the Standard Webhooks reference libraries test with (24-byte key).
    signer = Signer("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("verifier", list(VERIFIERS))
def test_signature_verifies(verifier: str) -> None:
    secret = generate_secret()
    headers = headers_for(Signer(secret), BODY)
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    assert verifies(verifier, secret, headers, BODY)


@pytest.mark.parametrize("verifier", list(VERIFIERS))
@pytest.mark.parametrize(
    "tamper",
    ["body", "body whitespace", "timestamp +1", "timestamp -1", "id", "other secret"],
)
def test_any_alteration_fails_every_verifier(verifier: str, tamper: str) -> None:
    secret = generate_secret()
    headers = headers_for(Signer(secret), BODY)
    body = BODY
    if tamper == "body":
        body = BODY.replace(b'"id":1', b'"id":2')
    elif tamper == "body whitespace":
        body = BODY + b"\n"
    elif tamper.startswith("timestamp"):
        delta = 1 if tamper.endswith("+1") else -1
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + delta)
    elif tamper == "id":
        headers["webhook-id"] = MSG_ID + "0"
    else:
        secret = generate_secret()
    assert verifies(verifier, secret, headers, body) is False


@pytest.mark.parametrize("verifier", list(VERIFIERS))
def test_old_timestamp_fails_even_with_a_valid_signature(verifier: str) -> None:
    secret = generate_secret()
    headers = headers_for(Signer(secret), BODY, ts=int(time.time()) - 3600)
    assert verifies(verifier, secret, headers, BODY) is False


@settings(max_examples=50, deadline=None)
@given(body=st.text(max_size=300).map(str.encode), msg_n=st.integers(0, 2**62))
def test_signature_is_over_the_exact_bytes(body: bytes, msg_n: int) -> None:
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    ts = int(time.time())
    msg_id = f"msg_x_{msg_n}"
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": Signer(secret).sign(msg_id, ts, body),
    }
    assert verifies("standardwebhooks", secret, headers, body)
    assert verifies("spec", secret, headers, body)


# -- rotation: several secrets -------------------------------------------------------------------


@pytest.mark.parametrize("verifier", list(VERIFIERS))
def test_two_secrets_give_two_space_separated_signatures(verifier: str) -> None:
    new, old = generate_secret(), generate_secret()
    headers = headers_for(Signer([new, old]), BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    assert entries[0] == Signer(new).sign(MSG_ID, int(headers["webhook-timestamp"]), BODY)
    assert verifies(verifier, new, headers, BODY)
    assert verifies(verifier, old, headers, BODY)
    assert not verifies(verifier, generate_secret(), headers, BODY)


def test_signer_reuse_gives_the_same_signature_each_time() -> None:
    # The keyed HMAC is copied per signature: signing must not accumulate state.
    signer = Signer(generate_secret())
    first = signer.sign(MSG_ID, 1700000000, BODY)
    assert signer.sign(MSG_ID, 1700000000, b"other") != first
    assert signer.sign(MSG_ID, 1700000000, BODY) == first


# -- Ed25519 (v1a) -------------------------------------------------------------------------------


def verify_v1a(pk: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Verify any v1a entry with the `cryptography` package and the whpk_ public key."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pk.removeprefix("whpk_")))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for entry in headers["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(sig), content)
        except InvalidSignature:
            continue
        return True
    return False


def test_ed25519_signature_verifies_with_the_public_key() -> None:
    sk = generate_secret("ed25519")
    pk = public_key(sk)
    assert pk is not None
    headers = headers_for(Signer(sk), BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 1 and entries[0].startswith("v1a,")
    assert len(base64.b64decode(entries[0].removeprefix("v1a,"))) == 64
    assert verify_v1a(pk, headers, BODY)
    assert not verify_v1a(pk, headers, BODY + b" ")
    tampered = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
    assert not verify_v1a(pk, tampered, BODY)
    other = public_key(generate_secret("ed25519"))
    assert other is not None and not verify_v1a(other, headers, BODY)


def test_mixed_rotation_hmac_and_ed25519() -> None:
    hmac_secret, sk = generate_secret(), generate_secret("ed25519")
    pk = public_key(sk)
    assert pk is not None
    headers = headers_for(Signer([hmac_secret, sk]), BODY)
    versions = [e.split(",", 1)[0] for e in headers["webhook-signature"].split(" ")]
    assert versions == ["v1", "v1a"]
    assert verify_v1a(pk, headers, BODY)
    for name in VERIFIERS:
        assert verifies(name, hmac_secret, headers, BODY), name
