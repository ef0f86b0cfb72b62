"""The operator API through HTTP, against a real daemon: who may call it, and what they see.

The OpenAPI document (served without a token, its schemas valid, every operation declaring the
problems it can meet), 401 for a missing, unknown or non-bearer token on every /v1 operation,
tenant tokens that see and change only their own tenant's objects, and tokens made with the CLI
and read again when the file changes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from jsonschema import Draft202012Validator

from hookd.openapi import DOCUMENT
from hookd.validation import Contract

from support.api import OPERATOR, ApiClient, _deliveries, _endpoint, _until_state, api_daemon
from support.daemon import publish
from support.proc import run_cli
from support.receiver import Receiver

CONTRACT = Contract(DOCUMENT)


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
