"""The operator API through HTTP, against a real daemon and loopback receivers: the traffic.

Events, deliveries and attempts listed and filtered, pagination that skips and repeats nothing
while rows arrive, and the actions: signed test events, retry of dead letters, resend with the
same webhook id, and replay whose dry run counts exactly what the replay does.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from standardwebhooks.webhooks import Webhook

from support.api import OPERATOR, _deliveries, _endpoint, _until_delivery, _until_state, api_daemon
from support.daemon import publish
from support.receiver import Receiver

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
