"""Unit tests for hookd.secretbox: secrets encrypted at rest with AES-256-GCM (issue 4, point 6)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hookd.config import SecurityConfig
from hookd.errors import ConfigError
from hookd.secretbox import ENV_VAR, PREFIX, SecretBox, SecretKeyError, generate_key, load_key

PLANTED = "whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFrLTEyMzQ1"


def _key() -> bytes:
    return base64.b64decode(generate_key())


def test_generated_keys_are_32_random_bytes() -> None:
    keys = {generate_key() for _ in range(64)}
    assert len(keys) == 64
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)


def test_seal_and_open_round_trip() -> None:
    box = SecretBox(_key())
    assert box.encrypting
    sealed = box.seal(PLANTED)
    assert sealed.startswith(PREFIX)
    assert PLANTED not in sealed
    assert PLANTED.removeprefix("whsec_") not in sealed
    assert box.open(sealed) == PLANTED


def test_each_seal_uses_a_fresh_nonce() -> None:
    box = SecretBox(_key())
    sealed = {box.seal(PLANTED) for _ in range(32)}
    assert len(sealed) == 32
    nonces = {base64.b64decode(s.removeprefix(PREFIX))[:12] for s in sealed}
    assert len(nonces) == 32


def test_format_is_nonce_then_aes_gcm_ciphertext_and_tag() -> None:
    key = _key()
    raw = base64.b64decode(SecretBox(key).seal("hello").removeprefix(PREFIX))
    assert len(raw) == 12 + len("hello") + 16
    assert AESGCM(key).decrypt(raw[:12], raw[12:], None) == b"hello"


def test_non_ascii_values_survive() -> None:
    box = SecretBox(_key())
    assert box.open(box.seal("pässwörd ✓")) == "pässwörd ✓"


def test_without_a_key_values_are_stored_as_they_are() -> None:
    box = SecretBox(None)
    assert not box.encrypting
    assert box.seal(PLANTED) == PLANTED
    assert box.open(PLANTED) == PLANTED


def test_plaintext_written_before_a_key_still_reads() -> None:
    assert SecretBox(_key()).open(PLANTED) == PLANTED


def test_wrong_key_is_refused_without_showing_anything() -> None:
    sealed = SecretBox(_key()).seal(PLANTED)
    with pytest.raises(SecretKeyError, match="does not decrypt") as info:
        SecretBox(_key()).open(sealed)
    assert PLANTED not in str(info.value)


def test_encrypted_value_without_a_key_is_refused() -> None:
    sealed = SecretBox(_key()).seal(PLANTED)
    with pytest.raises(SecretKeyError, match="no key is configured"):
        SecretBox(None).open(sealed)


def test_tampered_ciphertext_is_refused() -> None:
    key = _key()
    raw = bytearray(base64.b64decode(SecretBox(key).seal(PLANTED).removeprefix(PREFIX)))
    raw[20] ^= 1
    with pytest.raises(SecretKeyError):
        SecretBox(key).open(PREFIX + base64.b64encode(bytes(raw)).decode())


@pytest.mark.parametrize(
    "value",
    [
        PREFIX,
        PREFIX + "!!!",
        PREFIX + "not base64 at all",
        PREFIX + base64.b64encode(b"short").decode(),
    ],
)
def test_corrupt_values_raise_secret_key_error(value: str) -> None:
    # Callers handle SecretKeyError; a corrupt column must not surface as another exception.
    with pytest.raises(SecretKeyError, match="corrupt"):
        SecretBox(_key()).open(value)


# -- loading the key ----------------------------------------------------------------------------


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv(ENV_VAR, f"  {key}\n")
    assert load_key(None) == base64.b64decode(key)


def test_no_key_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert load_key(None) is None
    assert not SecurityConfig().box().encrypting


def test_key_file_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_key, env_key = generate_key(), generate_key()
    path = tmp_path / "hookd.key"
    path.write_text(file_key + "\n")
    monkeypatch.setenv(ENV_VAR, env_key)
    assert load_key(str(path)) == base64.b64decode(file_key)
    assert SecurityConfig(secret_key_file=str(path)).box().encrypting


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(bytes(16)).decode(), "must be 32 bytes"),
        (base64.b64encode(bytes(33)).decode(), "must be 32 bytes"),
        ("", "must be 32 bytes"),
    ],
)
def test_bad_key_file_is_a_clear_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hookd.key"
    path.write_text(text)
    with pytest.raises(SecretKeyError, match=message):
        load_key(str(path))
    with pytest.raises(ConfigError, match=message):
        SecurityConfig(secret_key_file=str(path)).box()


def test_bad_key_in_environment_does_not_echo_it(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = base64.b64encode(b"sixteen-byte-key").decode()
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(SecretKeyError) as info:
        load_key(None)
    assert bad not in str(info.value)
    assert ENV_VAR in str(info.value)


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(ConfigError, match=r"absent\.key"):
        SecurityConfig(secret_key_file=str(path)).box()
