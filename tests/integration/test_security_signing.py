"""Signatures as receivers check them, and key rotation (issue 4, points 1 and 2).

Real daemon, real PostgreSQL, receivers on loopback. Every delivered request is verified by
independent implementations: the Python `standardwebhooks` package (in the recording Receiver),
the JavaScript `standardwebhooks` package (Node, both as an HTTP receiver hookd delivers to and on
recorded requests), `svix`, and for Ed25519 the `cryptography` package.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from hookd.signing import generate_secret, public_key
from hookd.store import Store

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.js import (
    JsRequest,
    NodeVerifier,
    node_verifier_fixture,  # noqa: F401 (provides the node_verifier fixture)
)
from support.proc import run_cli, write_config
from support.receiver import Receiver, RecordedRequest

# The SSRF guard on (the coming default), with loopback opened on purpose for the receivers.
GUARD_LOOPBACK: dict[str, dict[str, Any]] = {
    "security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.0/8", "::1/128"]}
}


def py_ok(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    try:
        StandardWebhook(secret).verify(body, dict(headers), json_parse=False)
    except Exception:  # the reference verifier raises several types for "rejected"
        return False
    return True


def svix_ok(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    try:
        SvixWebhook(secret).verify(body, dict(headers))
    except Exception:
        return False
    return True


def signatures(rec: RecordedRequest) -> list[str]:
    return rec.headers["webhook-signature"].split(" ")


def hdrs(rec: RecordedRequest) -> dict[str, str]:
    return {k.lower(): v for k, v in rec.headers.items()}


async def js_ok_all(
    node: NodeVerifier, items: list[tuple[str, Mapping[str, str], bytes]]
) -> list[bool]:
    """One node run for many (secret, headers, body) checks."""
    results = await node.verify([JsRequest([s], h, b) for s, h, b in items])
    return [r[0].ok for r in results]


async def install_id(db: asyncpg.Connection) -> str:
    value: str = await db.fetchval("SELECT install_id FROM hookd.meta")
    return value


# -- point 1 -------------------------------------------------------------------------------------


async def test_three_verifiers_accept_every_request_and_reject_alterations(
    dsn: str, db: asyncpg.Connection, node_verifier: NodeVerifier
) -> None:
    payloads = [
        {"id": 1},
        {"text": 'ünïcödé ✓ \u2028 \\ " end', "n": [1.5, -2, None, True]},
        {"big": "x" * 20000, "nested": {"a": {"b": {"c": [{}]}}}},
    ]
    async with Receiver() as rx:
        _, secret = await add_endpoint(dsn, rx.url_for("/py"))
        rx.secrets["/py"] = secret
        for i, p in enumerate(payloads):
            await publish(db, f"order.v{i}", p)
        async with running_daemon(dsn, GUARD_LOOPBACK):
            recs = await rx.wait_for(len(payloads), path="/py", timeout_s=10)
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                len(payloads),
            )
    assert [r.json["data"] for r in sorted(recs, key=lambda r: r.json["type"])] == payloads
    assert all(r.verified for r in recs), [r.verify_error for r in recs]

    items: list[tuple[str, Mapping[str, str], bytes]] = []
    expected: list[bool] = []
    for rec in recs:
        h = hdrs(rec)
        assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", h["webhook-signature"])
        assert abs(int(h["webhook-timestamp"]) - time.time()) < 60
        ts = int(h["webhook-timestamp"])
        variants = {
            "original": (h, rec.body, True),
            "body changed": (h, rec.body.replace(b'"data":', b'"data" :', 1), False),
            "body truncated": (h, rec.body[:-1], False),
            "timestamp +1": ({**h, "webhook-timestamp": str(ts + 1)}, rec.body, False),
            "timestamp -1": ({**h, "webhook-timestamp": str(ts - 1)}, rec.body, False),
            "other id": ({**h, "webhook-id": h["webhook-id"] + "1"}, rec.body, False),
        }
        for name, (vh, vb, want) in variants.items():
            assert py_ok(secret, vh, vb) is want, f"standardwebhooks, {name}"
            assert svix_ok(secret, vh, vb) is want, f"svix, {name}"
            items.append((secret, vh, vb))
            expected.append(want)
        # Another endpoint's secret never verifies.
        items.append((generate_secret(), h, rec.body))
        expected.append(False)
    assert await js_ok_all(node_verifier, items) == expected


async def test_node_receiver_verifies_what_hookd_sends(
    dsn: str, db: asyncpg.Connection, node_verifier: NodeVerifier
) -> None:
    secret = generate_secret()
    async with node_verifier.serve({"/js": [secret], "/js-wrong": [generate_secret()]}) as node:
        await add_endpoint(dsn, node.url + "/js", secret=secret)
        await add_endpoint(dsn, node.url + "/js-wrong", secret=secret)
        for i in range(3):
            await publish(db, "user.created", {"i": i, "name": "Zoë"})
        async with running_daemon(dsn, GUARD_LOOPBACK):
            # 3 to /js; /js-wrong answers 401 and is retried (4 attempts each).
            await wait_until(
                db, "SELECT count(*) = 3 FROM hookd.deliveries WHERE state = 'delivered'"
            )
            hits = await node.wait_for(3 + 3)
        good = [h for h in hits if h.path == "/js"]
        bad = [h for h in hits if h.path == "/js-wrong"]
        assert len(good) == 3 and all(h.ok for h in good), good
        assert bad and not any(h.ok for h in bad)
        assert all("No matching signature" in (h.results[0].error or "") for h in bad)


async def test_each_attempt_has_a_fresh_timestamp_and_signature(
    dsn: str, db: asyncpg.Connection
) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    assert pool is not None
    async with Receiver() as rx:
        secret = generate_secret()
        try:
            # Over a second between attempts, so the integer timestamps must differ.
            await Store(pool).add_endpoint(
                rx.url_for("/retry"), secret, settings={"retry_schedule_s": [0.0, 1.1, 1.1]}
            )
        finally:
            await pool.close()
        rx.secrets["/retry"] = secret
        rx.script("/retry", [500, 503, 204])
        event_id = await publish(db, "order.paid", {"id": 1})
        async with running_daemon(dsn, GUARD_LOOPBACK):
            recs = await rx.wait_for(3, path="/retry", timeout_s=15)
    assert all(r.verified for r in recs), [r.verify_error for r in recs]
    assert len({r.webhook_id for r in recs}) == 1
    assert recs[0].webhook_id == f"msg_{await install_id(db)}_{event_id}"
    stamps = [int(r.headers["webhook-timestamp"]) for r in recs]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3, stamps
    assert len({r.headers["webhook-signature"] for r in recs}) == 3
    assert len({r.body for r in recs}) == 1, "every attempt sends the same bytes"


# -- point 2 -------------------------------------------------------------------------------------


async def _deliver_one(
    db: asyncpg.Connection, rx: Receiver, path: str, prefix: str, n: int
) -> RecordedRequest:
    event_id = await publish(db, "rotation.check", {"n": n})
    want = f"msg_{prefix}_{event_id}"
    recs = await rx.wait_for(
        lambda r: any(x.webhook_id == want for x in r.requests_for(path)), timeout_s=10
    )
    return next(x for x in recs if x.path == path and x.webhook_id == want)


async def _publish_until(
    db: asyncpg.Connection,
    rx: Receiver,
    path: str,
    prefix: str,
    done: Callable[[RecordedRequest], bool],
    timeout_s: float = 15.0,
) -> RecordedRequest:
    """Publish one event at a time until its request satisfies `done` (the daemon re-reads
    endpoints every couple of seconds, so a change shows up within a bounded time)."""
    n = 0
    async with asyncio.timeout(timeout_s):
        while True:
            n += 1
            rec = await _deliver_one(db, rx, path, prefix, n)
            if done(rec):
                return rec


async def test_rotation_signs_with_both_secrets_during_grace_then_only_the_new(
    dsn: str, db: asyncpg.Connection, tmp_path: Path, node_verifier: NodeVerifier
) -> None:
    cfg = write_config(tmp_path / "hookd.toml", {"security": {"allow_http": True}})
    async with Receiver() as rx:
        added = await run_cli(
            "endpoint", "add", "--dsn", dsn, "--config", str(cfg), "--url", rx.url_for("/r")
        )
        assert added.returncode == 0, added.describe()
        ep_id = int(re.search(r"^endpoint (\d+)$", added.stdout, re.M).group(1))  # type: ignore[union-attr]
        old = re.search(r"^secret (whsec_\S+)$", added.stdout, re.M).group(1)  # type: ignore[union-attr]
        prefix = await install_id(db)
        async with running_daemon(dsn, GUARD_LOOPBACK):
            before = await _deliver_one(db, rx, "/r", prefix, 0)
            assert len(signatures(before)) == 1
            assert py_ok(old, hdrs(before), before.body)

            rotated = await run_cli(
                "endpoint", "rotate-secret", str(ep_id), "--grace", "1h", "--dsn", dsn
            )
            assert rotated.returncode == 0, rotated.describe()
            new = re.search(r"new secret (whsec_\S+)", rotated.stdout).group(1)  # type: ignore[union-attr]
            assert new != old

            first_two = await _publish_until(
                db, rx, "/r", prefix, lambda r: len(signatures(r)) == 2
            )
            during = [first_two] + [
                await _deliver_one(db, rx, "/r", prefix, 100 + i) for i in range(2)
            ]
            checks: list[tuple[str, Mapping[str, str], bytes]] = []
            for rec in during:
                sigs = signatures(rec)
                assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs), sigs
                for secret in (new, old):
                    assert py_ok(secret, hdrs(rec), rec.body)
                    assert svix_ok(secret, hdrs(rec), rec.body)
                    checks.append((secret, hdrs(rec), rec.body))
                assert not py_ok(generate_secret(), hdrs(rec), rec.body)
            assert all(await js_ok_all(node_verifier, checks))

            # The grace period ends (moved into the past in the database): only the new secret.
            await db.execute(
                "UPDATE hookd.endpoints SET previous_secret_until = now() - interval '1 second'"
                " WHERE id = $1",
                ep_id,
            )
            after_first = await _publish_until(
                db, rx, "/r", prefix, lambda r: len(signatures(r)) == 1
            )
            after = [after_first] + [
                await _deliver_one(db, rx, "/r", prefix, 200 + i) for i in range(2)
            ]
            checks = []
            for rec in after:
                assert len(signatures(rec)) == 1
                assert py_ok(new, hdrs(rec), rec.body) and svix_ok(new, hdrs(rec), rec.body)
                assert not py_ok(old, hdrs(rec), rec.body)
                assert not svix_ok(old, hdrs(rec), rec.body)
                checks += [(new, hdrs(rec), rec.body), (old, hdrs(rec), rec.body)]
            assert await js_ok_all(node_verifier, checks) == [True, False] * len(after)


async def test_short_grace_expires_by_database_time(dsn: str, db: asyncpg.Connection) -> None:
    async with Receiver() as rx:
        ep_id, old = await add_endpoint(dsn, rx.url_for("/g"))
        new = generate_secret()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        try:
            assert await Store(pool).rotate_secret(ep_id, new, grace_s=1.0)
        finally:
            await pool.close()
        row = await db.fetchrow(
            "SELECT previous_secret_until - now() AS left FROM hookd.endpoints WHERE id = $1", ep_id
        )
        assert row is not None and 0 < row["left"].total_seconds() <= 1.0
        await wait_until(
            db,
            "SELECT now() > previous_secret_until FROM hookd.endpoints WHERE id = $1",
            ep_id,
            timeout_s=5,
        )
        prefix = await install_id(db)
        async with running_daemon(dsn, GUARD_LOOPBACK):
            recs = [await _deliver_one(db, rx, "/g", prefix, i) for i in range(3)]
    for rec in recs:
        assert len(signatures(rec)) == 1
        assert py_ok(new, hdrs(rec), rec.body) and svix_ok(new, hdrs(rec), rec.body)
        assert not py_ok(old, hdrs(rec), rec.body)


async def test_rotate_secret_cli_refuses_bad_input(dsn: str) -> None:
    ep_id, _ = await add_endpoint(dsn, "https://receiver.example/hook")
    for args, needle in [
        (["--grace", "soon"], "--grace"),
        (["--secret", "whsec_short"], "--secret"),
        (["--secret", "plain-text"], "--secret"),
    ]:
        result = await run_cli("endpoint", "rotate-secret", str(ep_id), *args, "--dsn", dsn)
        assert result.returncode == 2, result.describe()
        assert result.stderr.startswith("hookd: error: ") and needle in result.stderr
    missing = await run_cli("endpoint", "rotate-secret", "999", "--dsn", dsn)
    assert missing.returncode == 2 and "no endpoint with id 999" in missing.stderr


def _v1a_ok(pk: str, headers: Mapping[str, str], body: bytes) -> bool:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pk.removeprefix("whpk_")))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for entry in headers["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1a":
            try:
                key.verify(base64.b64decode(sig), content)
                return True
            except InvalidSignature:
                continue
    return False


async def test_ed25519_endpoint_signs_v1a_verified_with_the_public_key(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "hookd.toml", {"security": {"allow_http": True}})
    async with Receiver() as rx:
        added = await run_cli(
            "endpoint", "add", "--dsn", dsn, "--config", str(cfg), "--url", rx.url_for("/ed"),
            "--kind", "ed25519", "--json",
        )  # fmt: skip
        assert added.returncode == 0, added.describe()
        out = orjson.loads(added.stdout)
        sk, pk = out["secret"], out["public_key"]
        assert sk.startswith("whsk_") and pk == public_key(sk)
        prefix = await install_id(db)
        async with running_daemon(dsn, GUARD_LOOPBACK):
            rec = await _deliver_one(db, rx, "/ed", prefix, 1)
            sigs = signatures(rec)
            assert len(sigs) == 1 and sigs[0].startswith("v1a,")
            assert _v1a_ok(pk, hdrs(rec), rec.body)
            assert not _v1a_ok(pk, hdrs(rec), rec.body + b" ")
            ts = int(rec.headers["webhook-timestamp"])
            assert not _v1a_ok(pk, {**hdrs(rec), "webhook-timestamp": str(ts + 1)}, rec.body)

            # Rotation keeps the kind: a new whsk_ key, and both sign during the grace period.
            rotated = await run_cli(
                "endpoint", "rotate-secret", str(out["id"]), "--grace", "1h", "--dsn", dsn
            )
            assert rotated.returncode == 0, rotated.describe()
            new_pk = re.search(r"public_key (whpk_\S+)", rotated.stdout).group(1)  # type: ignore[union-attr]
            both = await _publish_until(db, rx, "/ed", prefix, lambda r: len(signatures(r)) == 2)
            assert all(s.startswith("v1a,") for s in signatures(both))
            assert _v1a_ok(pk, hdrs(both), both.body) and _v1a_ok(new_pk, hdrs(both), both.body)
