"""The event catalogue, payload filters and final statuses through the operator API, against a
real daemon, PostgreSQL and a loopback receiver; /catalogue.json served without a token."""

from __future__ import annotations

from pathlib import Path

import orjson

from support.api import OPERATOR, api_daemon
from support.proc import run_cli
from support.receiver import Receiver

ENTRY = "/v1/catalogue/event-types/order.paid"
SCHEMA = {
    "type": "object",
    "required": ["id"],
    "properties": {"id": {"type": "integer"}, "total": {"type": "number"}},
}
EXAMPLE = {"id": 42, "total": 99.5}


async def test_catalogue_entries_strict_mode_and_the_public_document(
    dsn: str, tmp_path: Path
) -> None:
    async with api_daemon(dsn, tmp_path) as (_, c):
        ops, acme, anonymous = c[OPERATOR], c["acme"], c["anonymous"]
        assert (await ops.get("/v1/catalogue/event-types")).ok() == {"data": []}
        body = {"description": "An order was paid.", "schema": SCHEMA, "example": EXAMPLE}
        created = await ops.call("PUT", ENTRY, body)
        entry = created.ok(201)
        assert created.headers["Location"] == ENTRY
        assert (entry["name"], entry["schema"], entry["example"]) == ("order.paid", SCHEMA, EXAMPLE)
        # PUT replaces the whole entry: what it leaves out goes back to its default.
        replaced = (await ops.call("PUT", ENTRY, {"schema": SCHEMA})).ok(200)
        assert (replaced["description"], replaced["example"]) == ("", None)
        (await ops.call("PUT", ENTRY, body)).ok(200)

        errors = (
            await ops.call("PUT", ENTRY, {"schema": SCHEMA, "example": {"id": "x"}})
        ).field_errors()
        assert errors == {
            "/example": "does not match the schema at $.id: 'x' is not of type 'integer'"
        }
        errors = (await ops.call("PUT", ENTRY, {"schema": {"type": "objekt"}})).field_errors()
        assert errors["/schema"].startswith("not a valid JSON Schema at $.type:"), errors
        bad_name = await ops.call("PUT", "/v1/catalogue/event-types/order..paid", {})
        assert list(bad_name.field_errors()) == ["name"]

        # Tenants read the catalogue; only operators change it.
        assert [e["name"] for e in (await acme.get("/v1/catalogue/event-types")).ok()["data"]] == [
            "order.paid"
        ]
        assert (await acme.get(ENTRY)).ok()["example"] == EXAMPLE
        forbidden = (await acme.call("PUT", ENTRY, {})).problem(403)
        assert "only an operator may change the event catalogue" in forbidden["detail"]
        (await acme.call("DELETE", ENTRY)).problem(403)
        (await acme.call("PUT", "/v1/catalogue/strict", {"strict": True})).problem(403)

        assert (await ops.get("/v1/catalogue/strict")).ok() == {"strict": False}
        done = (await ops.call("PUT", "/v1/catalogue/strict", {"strict": True})).ok()
        assert done == {"strict": True, "unknown_seen": []}
        assert (await acme.get("/v1/catalogue/strict")).ok() == {"strict": True}
        (await ops.call("PUT", "/v1/catalogue/strict", {"strict": False})).ok()

        # The document receivers read: no token needed, the same as `hookd event-type export`.
        (await ops.call("PUT", "/v1/catalogue/event-types/account.created", {})).ok(201)
        public = await anonymous.get("/catalogue.json")
        doc = public.ok()
        assert public.headers["Content-Type"].startswith("application/json")
        assert [t["name"] for t in doc["event_types"]] == ["account.created", "order.paid"]
        assert doc["event_types"][1] == {
            "name": "order.paid",
            "description": "An order was paid.",
            "schema": SCHEMA,
            "example": EXAMPLE,
            "updated_at": doc["event_types"][1]["updated_at"],
        }
        exported = await run_cli("event-type", "export", "--dsn", dsn)
        assert exported.returncode == 0, exported.describe()
        assert orjson.loads(exported.stdout) == doc

        (await ops.call("DELETE", ENTRY)).ok(204)
        (await ops.call("DELETE", ENTRY)).problem(404)
        (await ops.get(ENTRY)).problem(404)


async def test_endpoint_filter_final_statuses_and_a_catalogue_test_event(
    dsn: str, tmp_path: Path
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        bad = await ops.post("/v1/endpoints", {"url": rx.url_for("/h"), "filter": "$.total >"})
        assert bad.field_errors() == {"/filter": "syntax error at end of jsonpath input"}
        bad = await ops.post(
            "/v1/endpoints",
            {"url": rx.url_for("/h"), "settings": {"final_statuses": [413, 429]}},
        )
        assert bad.field_errors()["/settings/final_statuses"].startswith(
            "429 cannot be final: 429 Too Many Requests"
        )
        created = (
            await ops.post(
                "/v1/endpoints",
                {
                    "url": rx.url_for("/h"),
                    "filter": '$.currency == "EUR"',
                    "settings": {"final_statuses": [422]},
                },
            )
        ).ok(201)
        rx.secrets["/h"] = created["secret"]
        assert created["filter"] == '($."currency" == "EUR")'
        assert created["settings"] == {"final_statuses": [422]}
        path = f"/v1/endpoints/{created['id']}"
        assert (await ops.get(path)).ok()["filter"] == '($."currency" == "EUR")'
        changed = (await ops.call("PATCH", path, {"filter": None})).ok()
        assert changed["filter"] is None

        (await ops.call("PUT", ENTRY, {"schema": SCHEMA, "example": EXAMPLE})).ok(201)
        result = (await ops.post(f"{path}/test", {"wait_s": 10, "event_type": "order.paid"})).ok()
        assert result["attempt"]["status"] == 204
        (request,) = rx.requests_for("/h")
        assert request.verified is True
        assert (request.json["type"], request.json["data"]) == ("order.paid", EXAMPLE)
        errors = (
            await ops.post(f"{path}/test", {"wait_s": 0, "event_type": "order.shipped"})
        ).field_errors()
        assert errors["/event_type"].startswith("order.shipped is not in the event catalogue")
