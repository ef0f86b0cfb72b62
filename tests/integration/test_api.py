"""The operator API through HTTP, against a real daemon, PostgreSQL and loopback receivers.

Authentication and tenancy, every resource and action, problem details that name the bad field,
pagination while rows arrive, replay counts, signed test events and resends.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from jsonschema import Draft202012Validator
from standardwebhooks.webhooks import Webhook

from hookd.daemon import Daemon
from hookd.errors import ConfigError
from hookd.openapi import DOCUMENT, MAX_BODY_BYTES
from hookd.validation import Contract

from support.api import OPERATOR, ApiClient, api_daemon
from support.daemon import publish, running_daemon
from support.proc import run_cli
from support.receiver import Receiver
from support.tcpproxy import TcpProxy

CONTRACT = Contract(DOCUMENT)


async def _endpoint(client: ApiClient, url: str, **fields: Any) -> dict[str, Any]:
    reply = await client.post("/v1/endpoints", {"url": url, **fields})
    created = reply.ok(201)
    assert reply.headers["Location"] == f"/v1/endpoints/{created['id']}"
    return dict(created)


async def _until_delivery(
    client: ApiClient, delivery_id: int, ready: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """GET the delivery until `ready` holds (bounded); outcomes are written in batches."""
    last: Any = None
    try:
        async with asyncio.timeout(10.0):
            while True:
                last = (await client.get(f"/v1/deliveries/{delivery_id}")).ok()
                if ready(last):
                    return dict(last)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"delivery {delivery_id} not {what} in 10 s: {last}") from None


async def _until_state(client: ApiClient, delivery_id: int, state: str) -> dict[str, Any]:
    return await _until_delivery(client, delivery_id, lambda d: d["state"] == state, state)


async def _deliveries(client: ApiClient, **filters: Any) -> list[dict[str, Any]]:
    return [d for page in await client.pages("/v1/deliveries", 500, **filters) for d in page]


# -- the document and authentication -------------------------------------------------------------


async def test_openapi_document_is_served_without_a_token_and_its_schemas_are_valid(
    dsn: str, tmp_path: Path
) -> None:
    async with api_daemon(dsn, tmp_path) as (_, c):
        doc = (await c["anonymous"].get("/openapi.json")).ok()
    assert doc["openapi"].startswith("3.1")
    assert doc == DOCUMENT
    for name, schema in doc["components"]["schemas"].items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # the metaschema's error names the keyword
            raise AssertionError(f"components.schemas.{name}: {exc}") from None
    # Every operation declares the problems every /v1 request can meet.
    for op in CONTRACT.operations.values():
        responses = doc["paths"][op.path][op.method.lower()]["responses"]
        if op.secured:
            assert {"401", "422", "503"} <= set(responses), op.operation_id
        if op.body is not None:
            assert {"400", "413", "415"} <= set(responses), op.operation_id


async def test_every_v1_operation_refuses_a_missing_or_unknown_token_with_401(
    dsn: str, tmp_path: Path
) -> None:
    async with api_daemon(dsn, tmp_path) as (_, c):
        anonymous = c["anonymous"]
        wrong = ApiClient(anonymous.session, anonymous.base, "hkd_not-a-configured-token")
        basic = ApiClient(anonymous.session, anonymous.base, None)
        secured = [op for op in CONTRACT.operations.values() if op.secured]
        assert len(secured) >= 18
        for op in secured:
            path = op.path.replace("{id}", "1")
            body = {"url": "http://127.0.0.1:9/x"} if op.body is not None else None
            r = await anonymous.call(op.method, path, body)
            assert r.problem(401), op.operation_id
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), op.operation_id
            r = await wrong.call(op.method, path, body)
            r.problem(401)
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"], op.operation_id
            r = await basic.call(op.method, path, body, headers={"Authorization": "Basic b3BzOng="})
            r.problem(401)
        # An unknown path under /v1 does not tell a caller without a token whether it exists.
        (await anonymous.get("/v1/nothing-here")).problem(401)
        # Nothing was created by the refused calls.
        assert (await c[OPERATOR].get("/v1/endpoints")).ok()["data"] == []


async def test_a_tenant_token_sees_and_changes_only_its_tenant(
    dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops, acme, globex = c[OPERATOR], c["acme"], c["globex"]
        mine = await _endpoint(acme, rx.url_for("/acme"), tenant="acme")
        # A tenant token creates in its own tenant whatever it says, and cannot name another.
        implicit = await _endpoint(acme, rx.url_for("/acme2"))
        assert implicit["tenant"] == "acme"
        assert (
            "/tenant"
            in (
                await acme.post("/v1/endpoints", {"url": rx.url_for("/x"), "tenant": "globex"})
            ).field_errors()
        )
        theirs = await _endpoint(ops, rx.url_for("/globex"), tenant="globex")
        ev_mine = await publish(db, "order.created", {"n": 1}, tenant="acme")
        ev_theirs = await publish(db, "order.created", {"n": 2}, tenant="globex")
        await rx.wait_for(1, path="/acme")
        await rx.wait_for(1, path="/globex")
        (their_delivery,) = await _deliveries(ops, endpoint_id=theirs["id"])
        await _until_state(ops, their_delivery["id"], "delivered")

        listed = {e["id"] for e in (await acme.get("/v1/endpoints")).ok()["data"]}
        assert listed == {mine["id"], implicit["id"]}
        assert {e["tenant"] for e in (await ops.get("/v1/endpoints")).ok()["data"]} == {
            "acme",
            "globex",
        }
        assert [e["id"] for e in (await acme.get("/v1/events")).ok()["data"]] == [ev_mine]
        assert {d["tenant"] for d in await _deliveries(acme)} == {"acme"}

        t, d, e = theirs["id"], their_delivery["id"], ev_theirs
        for method, path, body in [
            ("GET", f"/v1/endpoints/{t}", None),
            ("PATCH", f"/v1/endpoints/{t}", {"description": "mine now"}),
            ("GET", f"/v1/endpoints/{t}/secret", None),
            ("POST", f"/v1/endpoints/{t}/secret/rotate", {"grace_s": 0}),
            ("GET", f"/v1/endpoints/{t}/stats", None),
            ("POST", f"/v1/endpoints/{t}/test", {"wait_s": 0}),
            ("DELETE", f"/v1/endpoints/{t}", None),
            ("GET", f"/v1/events/{e}", None),
            ("GET", f"/v1/deliveries/{d}", None),
            ("GET", f"/v1/deliveries/{d}/attempts", None),
            ("POST", f"/v1/deliveries/{d}/resend", None),
            ("POST", "/v1/retry", {"ids": [d]}),
            ("POST", "/v1/replay", {"endpoint_id": t, "states": ["delivered"]}),
            ("GET", f"/v1/deliveries?endpoint_id={t}", None),
            ("GET", f"/v1/deliveries?event_id={e}", None),
        ]:
            reply = await acme.call(method, path, body)
            reply.problem(404)
        # The other tenant's objects are untouched, and the operator still sees them.
        after = (await ops.get(f"/v1/endpoints/{t}")).ok()
        assert after["description"] is None and after["enabled"]
        assert (await ops.get(f"/v1/deliveries/{d}")).ok()["attempts"] == 1
        assert len(rx.requests_for("/globex")) == 1
        assert [x["id"] for x in (await globex.get("/v1/endpoints")).ok()["data"]] == [t]


async def test_api_tokens_from_the_cli_work_and_are_read_again_when_the_file_changes(
    dsn: str, tmp_path: Path
) -> None:
    async with api_daemon(dsn, tmp_path, tenants=()) as (daemon, c):
        tokens_file = daemon.cfg.api.tokens_file
        added = await run_cli(
            "api-token", "add", "--file", tokens_file, "--name", "late", "--tenant", "t1"
        )
        assert added.returncode == 0, added.describe()
        token = added.stdout.strip()
        assert token.startswith("hkd_")
        stored = await asyncio.to_thread(Path(tokens_file).read_text, encoding="utf-8")
        assert token not in stored
        late = ApiClient(c[OPERATOR].session, c[OPERATOR].base, token)
        assert (await late.get("/v1/endpoints")).ok()["data"] == []
        listed = await run_cli("api-token", "list", "--file", tokens_file)
        assert listed.returncode == 0, listed.describe()
        assert listed.stdout.splitlines() == ["ops  (all tenants)", "late  t1"]
        assert "sha256" not in listed.stdout
        dup = await run_cli("api-token", "add", "--file", tokens_file, "--name", "late")
        assert dup.returncode == 2 and "hookd: error: --name" in dup.stderr, dup.describe()
    fresh = tmp_path / "new-tokens"
    made = await run_cli("api-token", "add", "--file", str(fresh), "--name", "first")
    assert made.returncode == 0, made.describe()
    assert fresh.stat().st_mode & 0o777 == 0o600


# -- endpoints ------------------------------------------------------------------------------------


async def test_endpoint_create_get_patch_secret_stats_and_delete(dsn: str, tmp_path: Path) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        created = await _endpoint(
            ops,
            rx.url_for("/a"),
            event_types=["order.*"],
            description="orders",
            metadata={"team": "billing"},
            settings={"total_timeout_s": 3, "retry_schedule_s": [0, 1]},
            credentials={"bearer": "s3cret-bearer", "headers": {"X-Key": "k-value"}},
        )
        secret = created["secret"]
        assert secret.startswith("whsec_") and created["public_key"] is None
        assert created["credentials"] == ["bearer", "headers"]
        ep_id = created["id"]

        got = (await ops.get(f"/v1/endpoints/{ep_id}")).ok()
        assert "secret" not in got
        assert got["event_types"] == ["order.*"] and got["metadata"] == {"team": "billing"}
        assert got["settings"] == {"total_timeout_s": 3.0, "retry_schedule_s": [0.0, 1.0]}
        listing = await ops.get("/v1/endpoints")
        for text in (listing.text, (await ops.get(f"/v1/endpoints/{ep_id}")).text):
            for hidden in (secret, "s3cret-bearer", "k-value"):
                assert hidden not in text

        # PATCH changes only what it names; a setting set to null goes back to the default.
        patched = (
            await ops.call(
                "PATCH",
                f"/v1/endpoints/{ep_id}",
                {"description": None, "settings": {"total_timeout_s": None, "max_concurrency": 2}},
            )
        ).ok()
        assert patched["description"] is None
        assert patched["settings"] == {"retry_schedule_s": [0.0, 1.0], "max_concurrency": 2}
        assert patched["url"] == created["url"] and patched["event_types"] == ["order.*"]
        assert patched["metadata"] == {"team": "billing"}
        assert patched["credentials"] == ["bearer", "headers"]
        cleared = (await ops.call("PATCH", f"/v1/endpoints/{ep_id}", {"credentials": None})).ok()
        assert cleared["credentials"] == []
        off = (await ops.call("PATCH", f"/v1/endpoints/{ep_id}", {"enabled": False})).ok()
        assert off["enabled"] is False
        empty = await ops.call("PATCH", f"/v1/endpoints/{ep_id}", {})
        assert "give at least one of" in empty.field_errors()[""]

        revealed = (await ops.get(f"/v1/endpoints/{ep_id}/secret")).ok()
        assert revealed == {
            "endpoint_id": ep_id,
            "secret": secret,
            "public_key": None,
            "previous_secret_until": None,
        }
        rotated = (await ops.post(f"/v1/endpoints/{ep_id}/secret/rotate", {"grace_s": 3600})).ok()
        assert rotated["secret"] != secret and rotated["secret"].startswith("whsec_")
        assert rotated["previous_secret_until"] is not None
        assert (await ops.get(f"/v1/endpoints/{ep_id}/secret")).ok()["secret"] == rotated["secret"]
        missing_grace = await ops.post(f"/v1/endpoints/{ep_id}/secret/rotate", {})
        assert missing_grace.field_errors() == {"/grace_s": "required"}

        ed = await _endpoint(ops, rx.url_for("/ed"), kind="ed25519")
        assert ed["secret"].startswith("whsk_") and ed["public_key"].startswith("whpk_")
        assert ed["secret_kind"] == "ed25519"

        stats = (await ops.get(f"/v1/endpoints/{ep_id}/stats")).ok()
        assert stats["endpoint_id"] == ep_id and stats["last_hour"]["attempts"] == 0

        (await ops.call("DELETE", f"/v1/endpoints/{ep_id}")).ok(204)
        (await ops.get(f"/v1/endpoints/{ep_id}")).problem(404)
        (await ops.call("DELETE", f"/v1/endpoints/{ep_id}")).problem(404)


async def test_test_event_is_signed_delivered_to_that_endpoint_only_and_its_attempt_returned(
    dsn: str, tmp_path: Path
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        target = await _endpoint(ops, rx.url_for("/target"))
        await _endpoint(ops, rx.url_for("/other"))
        rx.secrets["/target"] = target["secret"]
        result = (await ops.post(f"/v1/endpoints/{target['id']}/test", {"wait_s": 10})).ok()
        (request,) = await rx.wait_for(1, path="/target")
        # The receiver checked the signature with the standardwebhooks reference verifier.
        assert request.verified is True, request.verify_error
        Webhook(target["secret"]).verify(request.body, dict(request.headers.items()))
        assert request.webhook_id == result["webhook_id"]
        assert request.json["type"] == "hookd.ping"
        assert result["attempt"] is not None and result["attempt"]["status"] == 204
        assert result["delivery"]["endpoint_id"] == target["id"]
        assert result["delivery"]["event_type"] == "hookd.ping"
        assert rx.requests_for("/other") == []
        # No body at all is fine (wait_s has a default); a disabled endpoint is a conflict.
        no_body = await ops.call("POST", f"/v1/endpoints/{target['id']}/test")
        assert no_body.ok()["delivery"]["event_type"] == "hookd.ping"
        await ops.call("PATCH", f"/v1/endpoints/{target['id']}", {"enabled": False})
        (await ops.post(f"/v1/endpoints/{target['id']}/test", {"wait_s": 0})).problem(409)
        assert (
            "/wait_s"
            in (await ops.post(f"/v1/endpoints/{target['id']}/test", {"wait_s": 31})).field_errors()
        )


# -- events, deliveries, attempts ---------------------------------------------------------------


async def test_events_deliveries_and_attempts_are_listed_and_filtered(
    dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        rx.script("/flaky", [500, 204])
        ep = await _endpoint(ops, rx.url_for("/flaky"))
        first = await publish(db, "user.created", {"n": 1}, idempotency_key="k1")
        second = await publish(db, "order.created", {"n": 2})
        await rx.wait_for(3, path="/flaky")
        assert (await ops.get("/v1/event-types")).ok() == {
            "data": ["order.created", "user.created"]
        }
        event = (await ops.get(f"/v1/events/{first}")).ok()
        assert event["payload"] == {"n": 1} and event["idempotency_key"] == "k1"
        assert event["created_at"].endswith("Z")
        by_type = (await ops.get("/v1/events", event_type="order.created")).ok()["data"]
        assert [e["id"] for e in by_type] == [second]
        (await ops.get("/v1/events/999999")).problem(404)

        deliveries = await _deliveries(ops, endpoint_id=ep["id"])
        assert {d["event_id"] for d in deliveries} == {first, second}
        for d in deliveries:
            await _until_state(ops, d["id"], "delivered")
        (of_first,) = await _deliveries(ops, event_id=first)
        attempts = (await ops.get(f"/v1/deliveries/{of_first['id']}/attempts")).ok()["data"]
        statuses = [a["status"] for a in attempts]
        assert statuses in ([500, 204], [204]), attempts
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert all(a["duration_s"] >= 0 for a in attempts)
        assert await _deliveries(ops, state="failed") == []
        assert len(await _deliveries(ops, state="delivered")) == 2
        future = "2999-01-01T00:00:00Z"
        assert await _deliveries(ops, since=future) == []
        assert len(await _deliveries(ops, until=future)) == 2
        (await ops.get("/v1/deliveries/999999/attempts")).problem(404)


async def test_pages_skip_and_repeat_nothing_while_rows_arrive(
    dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        await _endpoint(ops, rx.url_for("/p"))
        for _ in range(7):
            await publish(db, "page.test", {})
        await rx.wait_for(7, path="/p")
        published = 7
        for path in ("/v1/events", "/v1/deliveries"):
            everything = (await ops.get(path, limit=500)).ok()
            assert everything["next_cursor"] is None
            expected = [row["id"] for row in everything["data"]]
            page = (await ops.get(path, limit=3)).ok()
            seen = [row["id"] for row in page["data"]]
            # Rows that arrive between pages (events now, their deliveries as the daemon fans
            # them out) have higher ids, so they shift nothing in the later pages.
            for _ in range(2):
                await publish(db, "page.test", {"late": True})
            published += 2
            while page["next_cursor"] is not None:
                page = (await ops.get(path, limit=3, cursor=page["next_cursor"])).ok()
                assert len(page["data"]) <= 3
                seen += [row["id"] for row in page["data"]]
            assert seen == expected, f"{path}: pages gave {seen}, the list was {expected}"
            assert seen == sorted(seen, reverse=True), f"{path}: not newest first"
            await rx.wait_for(published, path="/p")
        assert len((await ops.get("/v1/events", limit=500)).ok()["data"]) == published
        for bad in ("0", "501", "x"):
            assert "limit" in (await ops.get("/v1/events", limit=bad)).field_errors()
        assert "cursor" in (await ops.get("/v1/events", cursor="bm90LWEtY3Vyc29y")).field_errors()


# -- actions ---------------------------------------------------------------------------------------


async def test_retry_revives_dead_letters_only_and_an_empty_selection_says_what_to_give(
    dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        rx.script("/down", [500, 500, 500, 500, 204])
        down = await _endpoint(ops, rx.url_for("/down"))
        up = await _endpoint(ops, rx.url_for("/up"))
        await publish(db, "x.happened", {})
        await rx.wait_for(1, path="/down")
        await rx.wait_for(1, path="/up")
        (dead,) = await _deliveries(ops, endpoint_id=down["id"])
        (fine,) = await _deliveries(ops, endpoint_id=up["id"])
        await _until_state(ops, dead["id"], "failed")
        await _until_state(ops, fine["id"], "delivered")

        empty = (await ops.post("/v1/retry", {})).field_errors()
        assert "ids" in empty[""] and "endpoint_id" in empty[""] and "since" in empty[""]
        assert (await ops.post("/v1/retry", {"ids": [fine["id"]]})).ok()["count"] == 0
        done = (await ops.post("/v1/retry", {"endpoint_id": down["id"]})).ok()
        assert (done["count"], done["ids"], done["dry_run"]) == (1, [dead["id"]], False)
        await _until_state(ops, dead["id"], "delivered")
        assert len(rx.requests_for("/down")) == 5 and len(rx.requests_for("/up")) == 1
        (await ops.post("/v1/retry", {"ids": [123456789]})).problem(404)


async def test_resend_makes_a_new_attempt_with_the_same_webhook_id(
    dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        ep = await _endpoint(ops, rx.url_for("/r"))
        await publish(db, "x.sent", {"v": 1})
        (first,) = await rx.wait_for(1, path="/r")
        (delivery,) = await _deliveries(ops, endpoint_id=ep["id"])
        await _until_state(ops, delivery["id"], "delivered")
        resent = (await ops.post(f"/v1/deliveries/{delivery['id']}/resend")).ok()
        assert resent["id"] == delivery["id"] and resent["state"] in ("pending", "delivered")
        _, second = await rx.wait_for(2, path="/r")
        assert second.webhook_id == first.webhook_id and second.body == first.body
        await _until_state(ops, delivery["id"], "delivered")
        attempts = (await ops.get(f"/v1/deliveries/{delivery['id']}/attempts")).ok()["data"]
        assert len(attempts) == 2
        # A pending delivery (waiting an hour for its retry) cannot be resent, nor a paused one.
        rx.script("/later", [500])
        later = await _endpoint(
            ops, rx.url_for("/later"), event_types=["y.*"], settings={"retry_schedule_s": [0, 3600]}
        )
        await publish(db, "y.sent", {})
        await rx.wait_for(1, path="/later")
        (waiting,) = await _deliveries(ops, endpoint_id=later["id"])
        await _until_delivery(
            ops, waiting["id"], lambda d: d["last_status"] == 500, "answered 500 once"
        )
        assert (
            "pending"
            in (await ops.post(f"/v1/deliveries/{waiting['id']}/resend")).problem(409)["detail"]
        )
        await ops.call("PATCH", f"/v1/endpoints/{later['id']}", {"enabled": False})
        await _until_state(ops, waiting["id"], "paused")
        (await ops.post(f"/v1/deliveries/{waiting['id']}/resend")).problem(409)
        assert len(rx.requests_for("/later")) == 1


async def test_replay_dry_run_counts_exactly_what_the_replay_does_and_touches_nothing_else(
    dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        a = await _endpoint(ops, rx.url_for("/a"))
        b = await _endpoint(ops, rx.url_for("/b"))
        for i in range(5):
            await publish(db, "order.paid" if i % 2 else "order.created", {"i": i})
        await rx.wait_for(5, path="/a")
        await rx.wait_for(5, path="/b")
        for d in await _deliveries(ops):
            await _until_state(ops, d["id"], "delivered")
        b_before = await _deliveries(ops, endpoint_id=b["id"])

        selection = {"endpoint_id": a["id"], "states": ["delivered"], "event_type": "order.created"}
        dry = (await ops.post("/v1/replay", {**selection, "dry_run": True})).ok()
        assert dry["dry_run"] is True and dry["count"] == 3
        assert len(rx.requests_for("/a")) == 5, "a dry run sends nothing"
        real = (await ops.post("/v1/replay", selection)).ok()
        assert real["count"] == dry["count"] and sorted(real["ids"]) == sorted(dry["ids"])
        await rx.wait_for(5 + 3, path="/a")
        for delivery_id in real["ids"]:
            await _until_state(ops, delivery_id, "delivered")
        assert await _deliveries(ops, endpoint_id=b["id"]) == b_before
        assert len(rx.requests_for("/b")) == 5
        missing = (await ops.post("/v1/replay", {"states": ["delivered"]})).field_errors()
        assert missing == {"/endpoint_id": "required"}
        bad_state = await ops.post("/v1/replay", {"endpoint_id": a["id"], "states": ["pending"]})
        assert "/states/0" in bad_state.field_errors()


# -- problems ---------------------------------------------------------------------------------------


async def test_bad_requests_get_problem_details_naming_the_field(dsn: str, tmp_path: Path) -> None:
    async with api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        errors = (
            await ops.post(
                "/v1/endpoints",
                {
                    "url": "http://127.0.0.1:9/x",
                    "event_types": ["bad..type"],
                    "settings": {"total_timeout_s": 0, "nope": 1},
                    "colour": "blue",
                },
            )
        ).field_errors()
        assert set(errors) == {
            "/event_types/0",
            "/settings/total_timeout_s",
            "/settings/nope",
            "/colour",
        }
        assert "unknown field" in errors["/colour"] and "url" in errors["/colour"]
        assert (await ops.post("/v1/endpoints", {})).field_errors() == {"/url": "required"}
        scheme = (await ops.post("/v1/endpoints", {"url": "ftp://example.com/"})).field_errors()
        assert "/url" in scheme
        # Query parameters are named as parameters; a time without a zone is refused.
        naive = (await ops.get("/v1/deliveries", since="2024-05-01T12:00:00")).field_errors()
        assert "zone" in naive["since"]
        assert "endpoint_id" in (await ops.get("/v1/deliveries", endpoint_id="x")).field_errors()
        assert "state" in (await ops.get("/v1/deliveries", state="lost")).field_errors()
        unknown = (await ops.get("/v1/deliveries", endpoint="1")).field_errors()
        assert "endpoint_id" in unknown["endpoint"]
        assert "id" in (await ops.get("/v1/endpoints/abc")).field_errors()
        assert "id" in (await ops.get(f"/v1/endpoints/{2**63}")).field_errors()

        malformed = await ops.call(
            "POST", "/v1/endpoints", data=b'{"url": ', headers={"Content-Type": "application/json"}
        )
        assert "JSON" in malformed.problem(400)["detail"]
        form = await ops.call(
            "POST", "/v1/endpoints", data=b"url=x", headers={"Content-Type": "text/plain"}
        )
        assert "application/json" in form.problem(415)["detail"]
        huge = await ops.post("/v1/endpoints", {"url": "x" * (MAX_BODY_BYTES + 1)})
        huge.problem(413)
        (await ops.get("/v1/nope")).problem(404)
        (await ops.get("/elsewhere")).problem(404)
        wrong = await ops.call("PUT", "/v1/endpoints")
        wrong.problem(405)
        assert set(wrong.headers["Allow"].split(",")) >= {"GET", "POST"}


# -- the daemon's side --------------------------------------------------------------------------------


async def test_daemon_start_errors_name_the_api_setting(dsn: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-file")
    with pytest.raises(ConfigError, match=r"^api\.tokens_file: cannot read .*no-such-file"):
        async with running_daemon(dsn, {"api": {"port": 0, "tokens_file": missing}}):
            pass
    malformed = tmp_path / "bad-tokens"
    malformed.write_text("ops not-a-hash\n")
    with pytest.raises(ConfigError, match=r"bad-tokens:1: expected"):
        async with running_daemon(dsn, {"api": {"port": 0, "tokens_file": str(malformed)}}):
            pass
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "t").write_text("")
        with pytest.raises(ConfigError, match=rf"^api\.port: cannot listen on 127\.0\.0\.1:{port}"):
            async with running_daemon(
                dsn, {"api": {"port": port, "tokens_file": str(tmp_path / "t")}}
            ):
                pass


async def test_without_a_tokens_file_the_api_is_off(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="hookd"):
        async with running_daemon(dsn) as daemon:
            assert isinstance(daemon, Daemon) and daemon.api is None
    off = [r for r in caplog.records if "operator API off" in r.getMessage()]
    assert len(off) == 1, [r.getMessage() for r in caplog.records]


async def test_the_api_answers_503_with_retry_after_while_the_database_is_away(
    dsn: str, tmp_path: Path
) -> None:
    with socket.socket() as closed:  # bound, never listening: connecting to it is refused
        closed.bind(("127.0.0.1", 0))
        async with TcpProxy.to_postgres(dsn) as proxy:
            database = proxy.upstream
            through = proxy.dsn_through(dsn)
            # The LISTEN connection goes direct: only the pool the API uses loses its database.
            overrides = {"database": {"listen_dsn": dsn, "connect_timeout_s": 1.0}}
            async with api_daemon(through, tmp_path, overrides=overrides) as (_, c):
                ops = c[OPERATOR]
                assert (await ops.get("/v1/endpoints")).ok()["data"] == []
                proxy.retarget(closed.getsockname())
                await proxy.cut()
                away = await ops.get("/v1/endpoints")
                assert "database" in away.problem(503)["detail"]
                assert away.headers["Retry-After"].isdigit()
                proxy.retarget(database)
                async with asyncio.timeout(10):
                    while True:  # the pool reconnects on its next use; no signal to wait on
                        if (await ops.get("/v1/endpoints")).status == 200:
                            break
                        await asyncio.sleep(0.1)


async def test_the_api_stops_answering_when_the_daemon_stops(dsn: str, tmp_path: Path) -> None:
    async with api_daemon(dsn, tmp_path) as (daemon, c):
        base = c[OPERATOR].base
        assert (await c[OPERATOR].get("/v1/endpoints")).ok()["data"] == []
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(base + "/openapi.json")
    assert daemon.api is not None
