"""The event catalogue, payload filters and final statuses from the real `hookd` command: files
that are not JSON or fail their schema, filters PostgreSQL refuses and statuses that cannot be
final each give one `hookd: error:` line and exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import orjson

from support.daemon import running_daemon
from support.proc import CliResult, run_cli, write_config
from support.receiver import Receiver

SCHEMA = {
    "type": "object",
    "required": ["id", "total"],
    "properties": {"id": {"type": "integer"}, "total": {"type": "number"}},
}


def ok(result: CliResult) -> str:
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    return result.stdout


def error(result: CliResult, expected: str) -> None:
    """Exit 2 and exactly one stderr line, `hookd: error: ` + `expected` (its start)."""
    assert result.returncode == 2, result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.describe()
    assert lines[0].startswith("hookd: error: " + expected), result.describe()


def _write(path: Path, value: object) -> str:
    path.write_bytes(orjson.dumps(value))
    return str(path)


async def test_event_types_from_files_with_errors_naming_the_file_and_path(
    dsn: str, tmp_path: Path
) -> None:
    schema = _write(tmp_path / "schema.json", SCHEMA)
    example = _write(tmp_path / "ex.json", {"id": 7, "total": 12.5})
    bad_example = _write(tmp_path / "bad.json", {"id": "7", "total": 12.5})
    bad_schema = _write(tmp_path / "bad-schema.json", {"type": "objekt"})
    (tmp_path / "broken.json").write_text('{"type": ', encoding="utf-8")

    add = ("event-type", "add", "order.paid", "--dsn", dsn)
    error(
        await run_cli(*add, "--schema", bad_schema),
        f"--schema {bad_schema}: not a valid JSON Schema at $.type: 'objekt' is not valid",
    )
    error(
        await run_cli(*add, "--schema", schema, "--example", bad_example),
        f"--example {bad_example}: does not match the schema at $.id: '7' is not of type 'integer'",
    )
    error(
        await run_cli(*add, "--schema", str(tmp_path / "broken.json")),
        f"--schema {tmp_path / 'broken.json'}: not valid JSON:",
    )
    error(
        await run_cli(*add, "--example", str(tmp_path / "missing.json")),
        f"--example {tmp_path / 'missing.json'}: no such file",
    )
    error(
        await run_cli("event-type", "add", "order paid", "--dsn", dsn),
        "name: 'order paid' is not an event type",
    )

    out = ok(
        await run_cli(
            *add, "--description", "An order was paid.", "--schema", schema, "--example", example
        )
    )
    assert out == "event type order.paid added (with schema and example)\n"
    ok(await run_cli("event-type", "add", "account.created", "--dsn", dsn))
    # A schema that the stored example does not match is refused, naming what to do.
    strict_schema = _write(tmp_path / "strict.json", {**SCHEMA, "required": ["id", "total", "x"]})
    error(
        await run_cli(*add, "--schema", strict_schema),
        "the stored example does not match the schema at $: 'x' is a required property (give"
        " --example FILE, or --no-example to remove it)",
    )

    listed = ok(await run_cli("event-type", "list", "--dsn", dsn))
    assert listed.splitlines()[0] == "strict mode off"
    assert re.search(r"^order\.paid\s+yes\s+yes\s+An order was paid\.$", listed, re.M), listed
    assert re.search(r"^account\.created\s+no\s+no\s+-$", listed, re.M), listed
    shown = ok(await run_cli("event-type", "show", "order.paid", "--dsn", dsn))
    assert "  description  An order was paid." in shown and '"total": 12.5' in shown, shown
    as_json = orjson.loads(
        ok(await run_cli("event-type", "show", "order.paid", "--dsn", dsn, "--json"))
    )
    assert as_json["schema"] == SCHEMA

    exported = orjson.loads(ok(await run_cli("event-type", "export", "--dsn", dsn)))
    assert [t["name"] for t in exported["event_types"]] == ["account.created", "order.paid"]
    assert exported["event_types"][1]["example"] == {"id": 7, "total": 12.5}

    out = ok(await run_cli("event-type", "remove", "account.created", "--dsn", dsn))
    assert out == "event type account.created removed from the catalogue\n"
    error(
        await run_cli("event-type", "remove", "account.created", "--dsn", dsn),
        "no event type account.created in the catalogue",
    )


async def test_strict_mode_from_the_command_line(dsn: str, db: asyncpg.Connection) -> None:
    await db.fetchval("SELECT hookd.publish('order.piad', '{}'::jsonb)")
    ok(await run_cli("event-type", "add", "order.paid", "--dsn", dsn))
    assert ok(await run_cli("event-type", "strict", "--dsn", dsn)) == "strict mode off\n"
    on = await run_cli("event-type", "strict", "on", "--dsn", dsn)
    assert ok(on) == "strict mode on: publishing refuses event types not in the catalogue\n"
    assert on.stderr.splitlines() == [
        "hookd: warning: the outbox holds event types the catalogue lacks, which publishing now"
        " refuses: order.piad (add them with `hookd event-type add NAME`)"
    ]
    assert ok(await run_cli("event-type", "strict", "--dsn", dsn)) == "strict mode on\n"
    removed = await run_cli("event-type", "remove", "order.paid", "--dsn", dsn)
    assert "strict mode is on: publishing order.paid fails from now on" in removed.stderr
    off = ok(await run_cli("event-type", "strict", "off", "--dsn", dsn))
    assert off == "strict mode off: publishing accepts any event type\n"


async def test_endpoint_test_with_a_catalogue_type(dsn: str, tmp_path: Path) -> None:
    example = _write(tmp_path / "ex.json", {"id": 7, "total": 12.5})
    cfg = str(write_config(tmp_path / "hookd.toml"))
    ok(await run_cli("event-type", "add", "order.paid", "--dsn", dsn, "--example", example))
    async with Receiver() as rx:
        added = orjson.loads(
            ok(
                await run_cli(
                    "endpoint", "add", "--dsn", dsn, "--config", cfg, "--url", rx.url_for("/h"),
                    "--json",
                )
            )
        )  # fmt: skip
        ep = str(added["id"])
        error(
            await run_cli("endpoint", "test", ep, "--dsn", dsn, "--event-type", "order.shipped"),
            "event_type: order.shipped is not in the event catalogue",
        )
        async with running_daemon(dsn):
            out = ok(
                await run_cli(
                    "endpoint", "test", ep, "--dsn", dsn, "--event-type", "order.paid",
                    "--wait", "10",
                )
            )  # fmt: skip
        assert re.search(r"attempt 1: HTTP 204 in \d+ ms", out), out
    (request,) = rx.requests_for("/h")
    assert (request.json["type"], request.json["data"]) == ("order.paid", {"id": 7, "total": 12.5})


async def test_filters_and_final_statuses_from_the_command_line(
    dsn: str, db: asyncpg.Connection
) -> None:
    url = ("--url", "https://receiver.example/h")
    error(
        await run_cli("endpoint", "add", "--dsn", dsn, *url, "--filter", "$.total >"),
        "filter: syntax error at end of jsonpath input",
    )
    error(
        await run_cli("endpoint", "add", "--dsn", dsn, *url, "--filter", "$.total"),
        "filter: single boolean result is expected (not a predicate",
    )
    error(
        await run_cli("endpoint", "add", "--dsn", dsn, *url, "--final-statuses", "413,503"),
        "settings.final_statuses: 503 cannot be final: 503 Service Unavailable is temporary",
    )
    error(
        await run_cli("endpoint", "add", "--dsn", dsn, *url, "--final-statuses", "4l3"),
        "--final-statuses: give HTTP statuses separated by commas",
    )
    added = orjson.loads(
        ok(
            await run_cli(
                "endpoint", "add", "--dsn", dsn, *url, "--json",
                "--filter", '$.total > 100 && $.currency == "EUR"', "--final-statuses", "422,413",
            )
        )
    )  # fmt: skip
    ep = str(added["id"])
    shown = ok(await run_cli("endpoint", "show", ep, "--dsn", dsn))
    assert '  payload filter   ($."total" > 100 && $."currency" == "EUR")' in shown, shown
    assert re.search(r"^ \*final_statuses\s+413,422$", shown, re.M), shown
    data = orjson.loads(ok(await run_cli("endpoint", "show", ep, "--dsn", dsn, "--json")))
    assert data["filter"] == '($."total" > 100 && $."currency" == "EUR")'
    assert data["settings"]["final_statuses"] == [413, 422]

    error(
        await run_cli("endpoint", "update", ep, "--dsn", dsn, "--filter", '$.a like_regex "("'),
        "filter: invalid regular expression",
    )
    ok(await run_cli("endpoint", "update", ep, "--dsn", dsn, "--filter", "exists($.refund)"))
    assert await db.fetchval("SELECT payload_filter::text FROM hookd.endpoints") == (
        'exists ($."refund")'
    )
    ok(await run_cli("endpoint", "update", ep, "--dsn", dsn, "--no-filter"))
    assert await db.fetchval("SELECT payload_filter FROM hookd.endpoints") is None
    out = ok(await run_cli("endpoint", "settings", ep, "--dsn", dsn, "--final-statuses", "none"))
    assert "final_statuses=none" in out, out
    settings = orjson.loads(await db.fetchval("SELECT settings FROM hookd.endpoints"))
    assert settings["final_statuses"] == []
    shown = ok(await run_cli("endpoint", "show", ep, "--dsn", dsn))
    assert "  payload filter   none" in shown, shown
