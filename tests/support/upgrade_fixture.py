"""The upgrade fixture: a hookd database filled by hookd at schema version 30 (the release before
migration 031 partitions events, deliveries and attempts), kept as data in
tests/fixtures/upgrade_v30/ and made by scripts/make-upgrade-fixture (its header says how).

The files there:

* `fixture.json`, the manifest: the schema version, when the data was made (`generated_at`), each
  data file with its columns and row count, the identity sequences' positions, the user table's
  DDL, the captures, the expected figures (`counts`) and what a version-30 daemon delivered from
  the restored data (`daemon_v30`);
* one CSV file per table (`hookd.events.csv`, ...; `public.shipments.csv` for the captured user
  table), as `COPY ... (FORMAT csv, HEADER)` writes it with TimeZone UTC and DateStyle ISO: plain
  data that loads on every supported PostgreSQL (15 and later), with no server-specific settings.

`dump` writes them (for the generator), `restore` loads them into a fresh database, `counts`
reads the figures with plain SQL that any schema keeping these tables and columns answers, and
`deliver_waiting` runs the real daemon against loopback receivers on a restored database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from hookd import migrate
from hookd.store import Store

from support.daemon import running_daemon, wait_until
from support.receiver import Receiver

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "upgrade_v30"
"""Where the fixture lives (inside the repository)."""

SCHEMA_VERSION = 30
"""The schema version the fixture was made at, and `restore` migrates to before loading."""

MANIFEST = "fixture.json"

HOOKD_TABLES: tuple[tuple[str, str], ...] = (
    ("meta", "singleton"),
    ("endpoints", "id"),
    ("event_types", "name"),
    ("events", "id"),
    ("deliveries", "id"),
    ("attempts", "delivery_id, attempt, started_at"),
)
"""The hookd tables the fixture holds, in load order (a delivery names its event), each with the
ORDER BY that makes the dump stable. hookd.captures is not copied: `restore` re-creates each
capture with hookd.capture_ddl, which also writes its row (see `dump`)."""

_SESSION = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'"
"""Text forms of timestamps that read back the same on any server (for one transaction)."""

NOTHING_DUE = """
SELECT NOT EXISTS (SELECT 1 FROM hookd.events WHERE fanned_out_at IS NULL)
   AND NOT EXISTS (
        SELECT 1 FROM hookd.deliveries d JOIN hookd.endpoints ep ON ep.id = d.endpoint_id
        WHERE d.state = 'pending' AND ep.enabled
          AND d.next_attempt_at < now() + interval '5 minutes'
          AND NOT (d.ordering_key IS NOT NULL AND EXISTS (
                SELECT 1 FROM hookd.deliveries h
                WHERE h.endpoint_id = d.endpoint_id AND h.ordering_key = d.ordering_key
                  AND h.event_id < d.event_id AND h.state IN ('pending', 'paused'))))
"""
"""True once every event is fanned out and no delivery of an enabled endpoint is due within five
minutes (a backoff of an hour is not waited for), leaving out those that wait behind an earlier
open delivery of their ordering key (parked again and again while it backs off)."""


async def _session(conn: asyncpg.Connection) -> None:
    await conn.execute(_SESSION)


# -- figures ---------------------------------------------------------------------------------------


async def counts(conn: asyncpg.Connection) -> dict[str, Any]:
    """The fixture's figures as the database holds them now: rows per table, deliveries per state,
    attempts, events with an idempotency key, with an ordering key, and not fanned out yet.

    Plain counts over hookd.events, hookd.deliveries, hookd.attempts, hookd.endpoints,
    hookd.event_types and hookd.captures, so they hold for a partitioned schema as well.
    """
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM hookd.events) AS events,
               (SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL)
                   AS events_not_fanned_out,
               (SELECT count(*) FROM hookd.events WHERE idempotency_key IS NOT NULL)
                   AS idempotency_keys,
               (SELECT count(*) FROM hookd.events WHERE ordering_key IS NOT NULL)
                   AS events_with_ordering_key,
               (SELECT count(*) FROM hookd.deliveries) AS deliveries,
               (SELECT count(*) FROM hookd.attempts) AS attempts,
               (SELECT count(*) FROM hookd.endpoints) AS endpoints,
               (SELECT count(*) FROM hookd.endpoints WHERE NOT enabled) AS endpoints_disabled,
               (SELECT count(*) FROM hookd.event_types) AS event_types,
               (SELECT count(*) FROM hookd.captures) AS captures
        """
    )
    assert row is not None
    figures: dict[str, Any] = dict(row)
    by_state = await conn.fetch(
        "SELECT state, count(*) AS n FROM hookd.deliveries GROUP BY state ORDER BY state"
    )
    figures["deliveries_by_state"] = {r["state"]: r["n"] for r in by_state}
    return figures


def manifest(fixture_dir: Path = FIXTURE_DIR) -> dict[str, Any]:
    """The parsed fixture.json of `fixture_dir`."""
    loaded: dict[str, Any] = json.loads((fixture_dir / MANIFEST).read_text(encoding="utf-8"))
    return loaded


# -- writing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserTable:
    """A table of the application's that the fixture carries (a captured one): its qualified
    name, the DDL that creates it, and the ORDER BY of its dump."""

    name: str
    ddl: str
    order_by: str


async def _dump_table(
    conn: asyncpg.Connection, qualified: str, order_by: str, out_dir: Path
) -> dict[str, Any]:
    query = f"SELECT * FROM {qualified} ORDER BY {order_by}"
    columns = [a.name for a in (await conn.prepare(query)).get_attributes()]
    path = out_dir / f"{qualified}.csv"
    status = await conn.copy_from_query(query, output=path, format="csv", header=True)
    return {"file": path.name, "columns": columns, "rows": int(status.split()[-1])}


async def dump(
    conn: asyncpg.Connection, out_dir: Path, user_tables: tuple[UserTable, ...]
) -> dict[str, Any]:
    """Write the hookd tables and `user_tables` as CSV files into the directory `out_dir`; return
    the manifest's data part (`write_manifest` writes it, with what the caller adds).

    The database must be at SCHEMA_VERSION with no daemon running (no delivery leased). One
    snapshot for every table (a repeatable-read transaction). `generated_at` is the server's
    now(): `restore` moves timestamps by the time since.

    Raises:
        AssertionError: another schema version, or a delivery still leased.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await _session(conn)
        return await _dump(conn, out_dir, user_tables)


async def _dump(
    conn: asyncpg.Connection, out_dir: Path, user_tables: tuple[UserTable, ...]
) -> dict[str, Any]:
    version = await migrate.current_version(conn)
    assert version == SCHEMA_VERSION, f"schema at version {version}, not {SCHEMA_VERSION}"
    leased = await conn.fetchval(
        "SELECT count(*) FROM hookd.deliveries WHERE lease_owner IS NOT NULL"
    )
    assert leased == 0, f"{leased} deliveries still leased: stop every daemon before the dump"
    tables = {
        f"hookd.{name}": await _dump_table(conn, f"hookd.{name}", order_by, out_dir)
        for name, order_by in HOOKD_TABLES
    }
    users = []
    for table in user_tables:
        users.append(
            {"name": table.name, "ddl": table.ddl}
            | await _dump_table(conn, table.name, table.order_by, out_dir)
        )
    sequences: dict[str, Any] = {}
    for r in await conn.fetch(
        "SELECT c.relname::text AS tbl, a.attname::text AS col,"
        " pg_get_serial_sequence(format('hookd.%I', c.relname), a.attname) AS seq"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'hookd'"
        " WHERE a.attidentity <> '' AND c.relkind = 'r' ORDER BY 1, 2"
    ):
        # pg_get_serial_sequence gives the sequence's name quoted as needed.
        seq = await conn.fetchrow(f"SELECT last_value, is_called FROM {r['seq']}")
        assert seq is not None
        sequences[f"{r['tbl']}.{r['col']}"] = dict(seq)
    captures = [
        dict(r)
        for r in await conn.fetch(
            "SELECT table_name, events, columns, type_prefix, key_column, status_column,"
            " tenant_column, created_at::text AS created_at FROM hookd.captures ORDER BY table_name"
        )
    ]
    generated_at: datetime = await conn.fetchval("SELECT now()")
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": generated_at.isoformat(),
        "server_version": await conn.fetchval("SHOW server_version"),
        "tables": tables,
        "user_tables": users,
        "sequences": sequences,
        "captures": captures,
    }
    return data


def write_manifest(out_dir: Path, data: dict[str, Any]) -> None:
    """Write `data` as out_dir/fixture.json (sorted keys, one field a line: diffs stay small)."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    (out_dir / MANIFEST).write_text(text, encoding="utf-8")


# -- reading ---------------------------------------------------------------------------------------


async def _load_table(conn: asyncpg.Connection, fixture_dir: Path, name: str, entry: Any) -> None:
    schema, table = name.split(".", 1)
    await conn.copy_to_table(
        table,
        schema_name=schema,
        source=fixture_dir / entry["file"],
        columns=entry["columns"],
        format="csv",
        header=True,
    )


async def restore(
    conn: asyncpg.Connection, fixture_dir: Path = FIXTURE_DIR, *, rebase: bool = True
) -> dict[str, Any]:
    """Fill the fresh, empty database of `conn` with the fixture; return its manifest.

    Applies the migrations up to SCHEMA_VERSION (none after it), loads every hookd table (the
    row hookd.meta got from migration 001 is replaced: the install id names the webhook-ids),
    sets each identity sequence where the fixture's was, creates the user tables with their rows
    and then their captures (with hookd.capture_ddl, as `hookd capture add` does, and the
    recorded created_at). With `rebase`, every timestamp of the hookd tables moves forward by the
    time since `generated_at`, so what was due in an hour then is due in an hour now, and the
    history ends now.

    Raises:
        AssertionError: the database already holds a hookd schema.
    """
    data = manifest(fixture_dir)
    assert await migrate.current_version(conn) is None, "restore needs an empty database"
    await migrate.apply(conn, target=data["schema_version"])
    async with conn.transaction():
        await _session(conn)
        await conn.execute("DELETE FROM hookd.meta")
        for table, _ in HOOKD_TABLES:  # in this order: fixture.json's keys are sorted
            name = f"hookd.{table}"
            await _load_table(conn, fixture_dir, name, data["tables"][name])
        for key, seq in data["sequences"].items():
            table, column = key.rsplit(".", 1)
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)",
                f"hookd.{table}",
                column,
                seq["last_value"],
                seq["is_called"],
            )
        shift = await conn.fetchval(
            "SELECT CASE WHEN $2 THEN now() - $1::text::timestamptz ELSE interval '0' END",
            data["generated_at"],
            rebase,
        )
        for name in data["tables"] if rebase else ():
            schema, table = name.split(".", 1)
            cols = await conn.fetch(
                "SELECT column_name::text AS c FROM information_schema.columns"
                " WHERE table_schema = $1 AND table_name = $2"
                " AND data_type = 'timestamp with time zone' ORDER BY ordinal_position",
                schema,
                table,
            )
            if cols:
                sets = ", ".join(f'"{r["c"]}" = "{r["c"]}" + $1' for r in cols)
                await conn.execute(f"UPDATE {name} SET {sets}", shift)
        for user in data["user_tables"]:
            await conn.execute(user["ddl"])
            await _load_table(conn, fixture_dir, user["name"], user)
        for cap in data["captures"]:
            ddl = await conn.fetchval(
                "SELECT hookd.capture_ddl($1, $2, $3, $4, $5, $6, $7)",
                cap["table_name"],
                cap["events"],
                cap["columns"],
                cap["type_prefix"],
                cap["status_column"],
                cap["tenant_column"],
                cap["key_column"],
            )
            await conn.execute(ddl)
            await conn.execute(
                "UPDATE hookd.captures SET created_at = $2::text::timestamptz + $3"
                " WHERE table_name = $1",
                cap["table_name"],
                cap["created_at"],
                shift,
            )
    return data


# -- running the daemon on it ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    """What the receivers got while `deliver_waiting` ran.

    `pairs`: (endpoint id, event id) of each request, in arrival order (a repeat would show
    twice). `unverified`: requests whose signature did not verify, described in one line each.
    `foreign`: requests whose webhook-id is not of this installation.
    """

    pairs: list[tuple[int, int]]
    unverified: list[str]
    foreign: list[str]


async def deliver_waiting(dsn: str, *, timeout_s: float = 20.0) -> Delivered:
    """Point every endpoint at its own path of one loopback receiver answering 204, run the real
    daemon (tests/support/daemon.py settings) until NOTHING_DUE holds, stop it, and report what
    the receiver got. HMAC-signed requests are verified with the endpoint's stored secret.

    Raises:
        AssertionError: NOTHING_DUE did not hold within `timeout_s`.
    """
    async with Receiver() as rx:
        store = await Store.open(dsn, pool_size=1, connect_timeout_s=5.0, command_timeout_s=10.0)
        try:
            install_id = await store.install_id()
            for ep in await store.endpoints():
                path = f"/ep/{ep.id}"
                assert await store.set_url(ep.id, rx.url_for(path))
                if ep.secret.startswith("whsec_"):
                    rx.secrets[path] = ep.secret
        finally:
            await store.close()
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            async with running_daemon(dsn):
                await wait_until(conn, NOTHING_DUE, timeout_s=timeout_s)
        finally:
            await conn.close(timeout=5)
        prefix = f"msg_{install_id}_"
        pairs: list[tuple[int, int]] = []
        foreign: list[str] = []
        for r in rx.requests:
            wid = r.webhook_id or ""
            if not (wid.startswith(prefix) and r.path.startswith("/ep/")):
                foreign.append(r.describe())
                continue
            pairs.append((int(r.path.removeprefix("/ep/")), int(wid.removeprefix(prefix))))
        unverified = [r.describe() for r in rx.requests if r.verified is False]
        return Delivered(pairs, unverified, foreign)
