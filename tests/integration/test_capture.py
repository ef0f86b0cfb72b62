"""Capture: events from table changes, published by triggers in the writing transaction.

Real tables in the test's database, captured with the real CLI (`hookd capture ...` as a
subprocess), a real daemon and a real receiver that verifies signatures. What is judged: the
events stored in the outbox, the requests the receiver got, and what the application's
statements see (errors, rows).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
import pytest

from support.daemon import add_endpoint, running_daemon, wait_until
from support.proc import CliResult, run_cli
from support.receiver import Receiver

ORDERS = """
CREATE TABLE public.orders (
    id bigint PRIMARY KEY,
    account_id text,
    status text NOT NULL DEFAULT 'new',
    total numeric,
    note text
)
"""


async def capture(dsn: str, *args: str) -> CliResult:
    """Run `hookd capture ARGS --dsn DSN`; assert it succeeded."""
    result = await run_cli("capture", *args, "--dsn", dsn)
    assert result.returncode == 0, result.describe()
    return result


async def events(db: asyncpg.Connection, after_id: int = 0) -> list[dict[str, Any]]:
    """The outbox after `after_id`, oldest first: type, tenant, ordering key, parsed payload."""
    rows = await db.fetch(
        "SELECT id, event_type, tenant, ordering_key, payload::text AS payload"
        " FROM hookd.events WHERE id > $1 ORDER BY id",
        after_id,
    )
    return [
        {
            "id": r["id"],
            "type": r["event_type"],
            "tenant": r["tenant"],
            "key": r["ordering_key"],
            "data": orjson.loads(r["payload"]),
        }
        for r in rows
    ]


def shapes(evs: list[dict[str, Any]]) -> list[tuple[str, str | None, Any]]:
    return [(e["type"], e["key"], e["data"]) for e in evs]


# -- what each change publishes -------------------------------------------------------------------


async def test_insert_update_status_change_and_delete_reach_a_receiver(
    dsn: str, db: asyncpg.Connection
) -> None:
    await db.execute(ORDERS)
    out = await capture(
        dsn, "add", "--table", "public.orders", "--columns", "id,total", "--status-column", "status"
    )
    assert "order.created, order.updated, order.status_changed, order.deleted" in out.stdout

    async with Receiver() as rx:
        _, secret = await add_endpoint(dsn, rx.url_for("/orders"))
        rx.secrets["/orders"] = secret
        async with running_daemon(dsn):
            await db.execute("INSERT INTO orders (id, total, note) VALUES (1, 10, 'x')")
            await db.execute("UPDATE orders SET status = 'paid', total = 12 WHERE id = 1")
            before = await db.fetchval("SELECT count(*) FROM hookd.events")
            # Only an uncaptured column changes, or a captured one to the same value: nothing.
            await db.execute("UPDATE orders SET note = 'y', total = 12 WHERE id = 1")
            assert await db.fetchval("SELECT count(*) FROM hookd.events") == before
            await db.execute("DELETE FROM orders WHERE id = 1")
            got = await rx.wait_for(4, path="/orders", timeout_s=10)

    expected = [
        ("order.created", {"id": 1, "status": "new", "total": 10}),
        ("order.updated", {"id": 1, "status": "paid", "total": 12,
                           "previous": {"status": "new", "total": 10}}),
        ("order.status_changed", {"id": 1, "status": "paid", "total": 12,
                                  "from": "new", "to": "paid"}),
        ("order.deleted", {"id": 1, "status": "paid", "total": 12}),
    ]  # fmt: skip
    assert [(r.json["type"], r.json["data"]) for r in got] == expected
    assert all(r.verified for r in got), [r.verify_error for r in got]
    # Every delivery carries its position (the event id) and the row's ordering key.
    stored = await events(db)
    assert len(stored) == 4  # so no fifth request can come
    assert [r.json["position"] for r in got] == [e["id"] for e in stored]
    assert {r.json["ordering_key"] for r in got} == {"order:1"}


async def test_the_readme_example_status_changes_reach_a_tenant_receiver(
    dsn: str, db: asyncpg.Connection
) -> None:
    # README, "Capturing table changes", as written there.
    await db.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, account_id text NOT NULL,"
        " status text NOT NULL, total numeric NOT NULL)"
    )
    out = await capture(
        dsn, "add", "--table", "public.orders", "--status-column", "status",
        "--tenant-column", "account_id",
    )  # fmt: skip
    assert out.stdout == (
        "capturing public.orders: order.created, order.updated, order.status_changed,"
        " order.deleted; key id; tenant column account_id; columns id,account_id,status,total\n"
    )
    async with Receiver() as rx:
        await add_endpoint(dsn, rx.url_for("/orders"), ("order.status_changed",), tenant="acme")
        async with running_daemon(dsn):
            await db.execute("INSERT INTO orders VALUES (42, 'acme', 'paid', 99.50)")
            await db.execute("UPDATE orders SET status = 'shipped' WHERE id = 42")
            (got,) = await rx.wait_for(1, path="/orders", timeout_s=10)
            await wait_until(db, "SELECT count(*) = 1 FROM hookd.deliveries")
    assert got.json["type"] == "order.status_changed"
    assert got.json["ordering_key"] == "order:42"
    assert got.body.endswith(
        b'"data":{"id": 42, "to": "shipped", "from": "paid", "total": 99.50,'
        b' "status": "shipped", "account_id": "acme"}}'
    )


async def test_a_rolled_back_transaction_publishes_nothing(
    dsn: str, db: asyncpg.Connection
) -> None:
    await db.execute(ORDERS)
    await capture(dsn, "add", "--table", "orders")
    tx = db.transaction()
    await tx.start()
    await db.execute("INSERT INTO orders (id, total) VALUES (1, 10), (2, 20)")
    await db.execute("UPDATE orders SET total = total + 1")
    await db.execute("DELETE FROM orders WHERE id = 2")
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 5
    await tx.rollback()
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0


async def test_a_1000_row_update_publishes_1000_updated_events(
    dsn: str, db: asyncpg.Connection
) -> None:
    await db.execute(ORDERS)
    await capture(dsn, "add", "--table", "orders", "--events", "update")
    await db.execute("INSERT INTO orders (id, total) SELECT g, g FROM generate_series(1, 1000) g")
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0  # insert not captured
    await db.execute("UPDATE orders SET total = total * 2")
    evs = await events(db)
    assert len(evs) == 1000
    assert {e["type"] for e in evs} == {"order.updated"}
    assert sorted(e["key"] for e in evs) == sorted(f"order:{i}" for i in range(1, 1001))
    for e in evs:
        n = e["data"]["id"]
        assert e["data"]["total"] == 2 * n
        assert e["data"]["previous"] == {"total": n}


async def test_a_changed_key_is_a_delete_and_a_create(dsn: str, db: asyncpg.Connection) -> None:
    await db.execute(ORDERS)
    await capture(dsn, "add", "--table", "orders", "--columns", "id,total")
    await db.execute("INSERT INTO orders (id, total) VALUES (1, 10), (2, 20)")
    start = await db.fetchval("SELECT max(id) FROM hookd.events")
    await db.execute("UPDATE orders SET id = 3, total = 11 WHERE id = 1")
    assert shapes(await events(db, start)) == [
        ("order.deleted", "order:1", {"id": 1, "total": 10}),
        ("order.created", "order:3", {"id": 3, "total": 11}),
    ]


async def test_tenant_column_routes_events_to_that_tenants_endpoints(
    dsn: str, db: asyncpg.Connection
) -> None:
    await db.execute(ORDERS)
    await capture(dsn, "add", "--table", "orders", "--tenant-column", "account_id")
    async with Receiver() as rx:
        await add_endpoint(dsn, rx.url_for("/acme"), tenant="acme")
        await add_endpoint(dsn, rx.url_for("/beta"), tenant="beta")
        await add_endpoint(dsn, rx.url_for("/none"))
        async with running_daemon(dsn):
            await db.execute(
                "INSERT INTO orders (id, account_id) VALUES (1, 'acme'), (2, 'beta'), (3, NULL)"
            )
            await db.execute("UPDATE orders SET account_id = 'beta' WHERE id = 1")
            await rx.wait_for(4, timeout_s=10)
            await wait_until(
                db, "SELECT count(*) = 4 FROM hookd.deliveries WHERE state = 'delivered'"
            )
    seen = {p: [(r.json["type"], r.json["data"]["id"]) for r in rx.requests_for(p)]
            for p in ("/acme", "/beta", "/none")}  # fmt: skip
    # The update moved order 1 to tenant beta: its event goes to beta's endpoint.
    assert seen == {
        "/acme": [("order.created", 1)],
        "/beta": [("order.created", 2), ("order.updated", 1)],
        "/none": [("order.created", 3)],
    }
    tenants = await db.fetch("SELECT DISTINCT tenant FROM hookd.events ORDER BY 1")
    assert [r["tenant"] for r in tenants] == ["acme", "beta", None]


async def test_capture_sql_applied_by_hand_works_like_add(dsn: str, db: asyncpg.Connection) -> None:
    await db.execute(ORDERS.replace("public.orders", "public.shop_a"))
    await db.execute(ORDERS.replace("public.orders", "public.shop_b"))
    options = ["--columns", "id,total", "--status-column", "status"]
    await capture(dsn, "add", "--table", "shop_a", "--type-prefix", "a", *options)
    ddl = (await capture(dsn, "sql", "--table", "shop_b", "--type-prefix", "b", *options)).stdout
    assert "CREATE TRIGGER hookd_capture_update AFTER UPDATE ON public.shop_b" in ddl
    assert await db.fetchval("SELECT count(*) FROM hookd.captures") == 1  # sql changed nothing
    await db.execute(ddl)  # as a migration tool would

    for table in ("shop_a", "shop_b"):
        await db.execute(f"INSERT INTO {table} (id, total) VALUES (1, 5), (2, 6)")
        await db.execute(f"UPDATE {table} SET status = 'paid' WHERE id = 2")
        await db.execute(f"DELETE FROM {table} WHERE id = 1")
    evs = await events(db)
    a = [(e["type"].removeprefix("a."), e["key"].removeprefix("a:"), e["data"])
         for e in evs if e["type"].startswith("a.")]  # fmt: skip
    b = [(e["type"].removeprefix("b."), e["key"].removeprefix("b:"), e["data"])
         for e in evs if e["type"].startswith("b.")]  # fmt: skip
    assert len(a) == 5  # 2 created, updated, status_changed, deleted
    assert a == b
    listed = (await capture(dsn, "list")).stdout
    assert "public.shop_a: a.created" in listed
    assert "public.shop_b: b.created" in listed


async def test_remove_stops_events_and_drops_what_add_installed(
    dsn: str, db: asyncpg.Connection
) -> None:
    await db.execute(ORDERS)
    await capture(dsn, "add", "--table", "orders")
    await db.execute("INSERT INTO orders (id) VALUES (1)")
    await capture(dsn, "remove", "--table", "orders")
    await db.execute("INSERT INTO orders (id) VALUES (2)")
    await db.execute("UPDATE orders SET total = 1")
    await db.execute("DELETE FROM orders")
    assert [e["key"] for e in await events(db)] == ["order:1"]
    assert await db.fetchval("SELECT count(*) FROM hookd.captures") == 0
    assert await db.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass"
    ) == 0  # fmt: skip
    left = await db.fetchval(
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'hookd'::regnamespace"
        " AND proname LIKE 'capture_orders%'"
    )
    assert left == 0
    assert (await capture(dsn, "list")).stdout == ""


async def test_identifiers_that_need_quotes(dsn: str, db: asyncpg.Connection) -> None:
    # A space and capitals in the table name, a capital in the status column, and a column whose
    # name holds a quote and the function's own dollar-quote tag.
    await db.execute(
        'CREATE TABLE "Order Items" (id int PRIMARY KEY, "Status" text, "we""ird $hookd$" int)'
    )
    out = await capture(dsn, "add", "--table", '"Order Items"', "--status-column", "Status")
    assert "order_item.created" in out.stdout
    await db.execute("INSERT INTO \"Order Items\" VALUES (7, 'open', 1)")
    await db.execute('UPDATE "Order Items" SET "Status" = \'closed\', "we""ird $hookd$" = 2')
    assert shapes(await events(db)) == [
        ("order_item.created", "order_item:7", {"id": 7, "Status": "open", 'we"ird $hookd$': 1}),
        ("order_item.updated", "order_item:7",
         {"id": 7, "Status": "closed", 'we"ird $hookd$': 2,
          "previous": {"Status": "open", 'we"ird $hookd$': 1}}),
        ("order_item.status_changed", "order_item:7",
         {"id": 7, "Status": "closed", 'we"ird $hookd$': 2, "from": "open", "to": "closed"}),
    ]  # fmt: skip


# -- what capture refuses, and how ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "needles"),
    [
        (
            "INSERT INTO orders (id, note) VALUES (42, repeat('x', 300000))",
            ["public.orders", "over the 262144-byte cap", "key '42'"],
        ),
        (
            "INSERT INTO orders (id, account_id) VALUES (43, '')",
            ["public.orders", "tenant must be 1-200 characters", "key '43'"],
        ),
    ],
)
async def test_an_event_that_breaks_a_publish_rule_fails_the_statement_clearly(
    dsn: str, db: asyncpg.Connection, statement: str, needles: list[str]
) -> None:
    await db.execute(ORDERS)
    await capture(dsn, "add", "--table", "orders", "--tenant-column", "account_id")
    with pytest.raises(asyncpg.InvalidParameterValueError) as err:
        await db.execute(statement)
    for needle in needles:
        assert needle in str(err.value)
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0


async def test_a_captured_column_cannot_be_dropped_from_under_the_trigger(
    dsn: str, db: asyncpg.Connection
) -> None:
    await db.execute(ORDERS)
    await capture(dsn, "add", "--table", "orders", "--columns", "id,total")
    await db.execute("ALTER TABLE orders DROP COLUMN note")  # not captured: fine
    with pytest.raises(asyncpg.DependentObjectsStillExistError, match="total"):
        await db.execute("ALTER TABLE orders DROP COLUMN total")
    await db.execute("INSERT INTO orders (id, total) VALUES (1, 1)")  # writes still work
    assert len(await events(db)) == 1


async def test_an_application_role_without_hookd_grants_is_captured(
    dsn: str, db: asyncpg.Connection
) -> None:
    # The trigger function runs with its owner's rights: the application needs none on hookd.
    await db.execute(ORDERS)
    await capture(dsn, "add", "--table", "orders")
    role = f"hookd_app_{uuid.uuid4().hex[:12]}"
    await db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await db.execute(f"GRANT INSERT, UPDATE, SELECT ON orders TO {role}")
        await db.execute(f"SET ROLE {role}")
        await db.execute("INSERT INTO orders (id) VALUES (1)")
        await db.execute("UPDATE orders SET total = 3")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute("SELECT count(*) FROM hookd.events")
        await db.execute("RESET ROLE")
        assert [e["type"] for e in await events(db)] == ["order.created", "order.updated"]
    finally:
        await db.execute("RESET ROLE")
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--table", "no_such_table"], ["no table no_such_table"]),
        (["--table", "keyless"], ["--key-column", "primary key"]),
        (["--table", "orders", "--columns", "id,nope"], ["no column nope"]),
        (["--table", "orders", "--key-column", "note"], ["key_column", "unique index"]),
        (["--table", "orders", "--events", "insert,upsert"], ["events", "upsert"]),
        (["--table", "orders", "--type-prefix", "bad prefix"], ["--type-prefix"]),
    ],
)
async def test_capture_mistakes_are_one_clear_line(
    dsn: str, db: asyncpg.Connection, args: list[str], needles: list[str]
) -> None:
    await db.execute(ORDERS)
    await db.execute("CREATE TABLE keyless (a int)")
    result = await run_cli("capture", "add", *args, "--dsn", dsn)
    assert result.returncode == 2, result.describe()
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hookd: error: capture: "), result.describe()
    for needle in needles:
        assert needle in lines[0], result.describe()
    assert await db.fetchval("SELECT count(*) FROM hookd.captures") == 0
