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
import subprocess
import sys
from pathlib import Path

import asyncpg

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

_CLI = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


async def _seed_objects(client: ApiClient, rx: Receiver, db: asyncpg.Connection) -> None:
    created = (await client.post("/v1/endpoints", {"url": rx.url_for("/seed")})).ok(201)
    assert created["id"] == 1
    for i in range(3):
        await publish(db, "seed.event", {"i": i})
    await rx.wait_for(3, path="/seed")


async def _schemathesis(base: str, token: str, workdir: Path) -> tuple[int, str]:
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
        "examples,coverage,fuzzing",
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


async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(
    dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path, tenants=("acme",)) as (_, clients):
        ops = clients[OPERATOR]
        await _seed_objects(ops, rx, db)
        for name in (OPERATOR, "acme"):
            client = clients[name]
            assert client.token is not None
            status, output = await _schemathesis(client.base, client.token, tmp_path)
            assert status == 0, f"schemathesis with the {name!r} token:\n{output[-20000:]}"
            assert "No issues found" in output or "passed" in output, output[-5000:]
