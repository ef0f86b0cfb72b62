"""schemathesis against the live API of a running daemon: no server errors, and every answer
(problems included) conforms to the OpenAPI document it serves.

schemathesis runs as its own process (its command line), so its blocking HTTP client does not stall
the daemon, which runs in this test's event loop. It reads /openapi.json from the daemon, generates
valid and invalid requests for every operation (examples, coverage and fuzzing phases, a fixed seed
and a bounded number of cases each, so a failure reproduces), and exits non-zero on any finding.
The database holds a few real objects (id 1 of each kind, as the document's examples name), so
the generated calls reach the service, not just the validation in front of it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from support.api import OPERATOR, ApiClient, api_daemon
from support.daemon import publish
from support.receiver import Receiver

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "unsupported_method",
        "ignored_auth",
    ]
)
MAX_EXAMPLES = 25
SEED = 20260110
RUN_TIMEOUT_S = 100.0

TESTS_DIR = Path(__file__).resolve().parents[1]

_CLI = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


async def _seed_objects(
    clients: dict[str, ApiClient], rx: Receiver, db: asyncpg.Connection
) -> None:
    """Endpoint 1 (no tenant) and 2 (tenant acme), with delivered events."""
    first = (await clients[OPERATOR].post("/v1/endpoints", {"url": rx.url_for("/seed")})).ok(201)
    second = (await clients["acme"].post("/v1/endpoints", {"url": rx.url_for("/acme")})).ok(201)
    assert (first["id"], second["id"]) == (1, 2)
    for tenant in (None, "acme"):
        for i in range(2):
            await publish(db, "seed.event", {"i": i}, tenant=tenant)
    await rx.wait_for(2, path="/seed")
    await rx.wait_for(2, path="/acme")


async def _schemathesis(base: str, token: str, sink: str, workdir: Path) -> tuple[int, str]:
    """Run `schemathesis run` against the daemon's document (bounded); exit status and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLI,
        "run",
        f"{base}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "2",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "40",
        "--generation-database",
        "none",
        "--no-color",
        cwd=workdir,  # its reports and any config lookup stay in the test's directory
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "support.schemathesis_hooks",
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
            "HOOKD_TEST_SINK": sink,
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        async with asyncio.timeout(5):
            await proc.wait()
        raise AssertionError(f"schemathesis did not finish in {RUN_TIMEOUT_S}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 30)
async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(
    dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with (
        Receiver() as rx,
        api_daemon(dsn, tmp_path, tenants=("acme",), only_loopback=True) as (_, clients),
    ):
        await _seed_objects(clients, rx, db)
        sink = f"127.0.0.1:{rx.port}"
        for name in (OPERATOR, "acme"):
            client = clients[name]
            assert client.token is not None
            status, output = await _schemathesis(client.base, client.token, sink, tmp_path)
            print(output[-6000:])  # shown with -s, or by pytest on a failure
            assert status == 0, f"schemathesis with the {name!r} token:\n{output[-20000:]}"
            assert "No issues found" in output or "passed" in output, output[-5000:]
        # Every endpoint the generated calls left points at the loopback receiver (the stateful
        # phase may also have deleted them all, the seeded ones included).
        pages = await clients[OPERATOR].pages("/v1/endpoints", 500)
        hosts = {urlsplit(e["url"]).hostname for page in pages for e in page}
        assert hosts <= {"127.0.0.1"}, hosts
