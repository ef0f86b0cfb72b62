"""The JavaScript `standardwebhooks` package as a third, independent signature verifier.

`node_verifier` is a session fixture (import `node_verifier_fixture` into a test module to use
it). It runs `npm install` for tests/js once per session (bounded, under a file lock so parallel
workers do not race) into tests/js/node_modules, which git ignores. It skips the test only when
node or npm is not installed; a failing install is an error.

Two ways to use it, both through tests/js/verify.mjs:

* `await node_verifier.verify([JsRequest(...), ...])` verifies recorded requests (headers and the
  exact body bytes) in one `node` run and returns, per request, one `JsResult` per secret.
* `async with node_verifier.serve({"/path": [secret, ...]}) as rx:` runs a Node HTTP receiver on
  127.0.0.1 that verifies every request it gets with each secret of its path and answers 204 when
  all verify, else 401; `await rx.wait_for(n)` returns what it saw.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT = JS_DIR / "verify.mjs"
INSTALL_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class JsRequest:
    """One request to verify: the secrets to try (each on its own), headers and body bytes."""

    secrets: Sequence[str]
    headers: Mapping[str, str]
    body: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "secrets": list(self.secrets),
            # Lower-case names, as a Node HTTP server hands them over.
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_b64": base64.b64encode(self.body).decode("ascii"),
        }


@dataclass(frozen=True, slots=True)
class JsResult:
    """What the JavaScript verifier said about one request and one secret."""

    ok: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class JsHit:
    """One request the Node receiver got: its path, webhook-id and a result per secret."""

    path: str
    webhook_id: str | None
    results: list[JsResult]

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)


class NodeReceiver:
    """A running `verify.mjs serve`; see `NodeVerifier.serve`."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self._proc = proc
        self.port = port
        self.hits: list[JsHit] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(), name="node-receiver-stdout")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            data = json.loads(line)
            hit = JsHit(data["path"], data["webhook_id"], [JsResult(**r) for r in data["results"]])
            self.hits.append(hit)
            async with self._changed:
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[JsHit]:
        """Wait until at least `count` requests arrived; return them all.

        Raises:
            AssertionError: not within `timeout_s`, or the receiver died.
        """
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: len(self.hits) >= count or self._reader.done())
        except TimeoutError:
            raise AssertionError(
                f"node receiver: {len(self.hits)} of {count} requests after {timeout_s}s"
            ) from None
        assert len(self.hits) >= count, f"node receiver exited after {len(self.hits)} requests"
        return list(self.hits)

    async def close(self) -> None:
        """Close stdin (the receiver stops), then reap it; kill it if it lingers."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            async with asyncio.timeout(5):
                await self._proc.wait()
        async with asyncio.timeout(5):
            await self._reader


class NodeVerifier:
    """Runs tests/js/verify.mjs with the node binary found on PATH."""

    def __init__(self, node: str) -> None:
        self.node = node

    async def verify(self, requests: Sequence[JsRequest]) -> list[list[JsResult]]:
        """Verify `requests` in one node run; per request, one result per secret."""
        payload = json.dumps({"requests": [r.to_json() for r in requests]}).encode()
        proc = await asyncio.create_subprocess_exec(
            self.node,
            str(SCRIPT),
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                out, err = await proc.communicate(payload)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"node verify.mjs did not finish in {RUN_TIMEOUT_S}s") from None
        assert proc.returncode == 0, f"node verify.mjs failed ({proc.returncode}): {err.decode()}"
        return [[JsResult(**r) for r in per_request] for per_request in json.loads(out)]

    @asynccontextmanager
    async def serve(self, secrets: Mapping[str, Sequence[str]]) -> AsyncIterator[NodeReceiver]:
        """A Node receiver on 127.0.0.1 verifying each path's requests with each of its secrets."""
        proc = await asyncio.create_subprocess_exec(
            self.node,
            str(SCRIPT),
            "serve",
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(
                json.dumps({"secrets": {k: list(v) for k, v in secrets.items()}}).encode() + b"\n"
            )
            await proc.stdin.drain()
            async with asyncio.timeout(RUN_TIMEOUT_S):
                first = (await proc.stdout.readline()).decode()
            if not first.startswith("listening "):
                raise AssertionError(f"node receiver did not start: {first!r}")
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        rx = NodeReceiver(proc, int(first.split()[1]))
        try:
            yield rx
        finally:
            await rx.close()


def _install(npm: str) -> None:
    """`npm install` in tests/js unless the pinned version is already there (blocking)."""
    want = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["standardwebhooks"]
    installed = JS_DIR / "node_modules" / "standardwebhooks" / "package.json"
    installed.parent.parent.mkdir(parents=True, exist_ok=True)
    # Inside node_modules (git-ignored); npm leaves dot files there alone.
    with open(JS_DIR / "node_modules" / ".hookd-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed.exists() and json.loads(installed.read_text())["version"] == want:
            return
        # No lock file is written: package.json pins the one direct dependency.
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--ignore-scripts"],
            cwd=JS_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"npm install in {JS_DIR} failed ({result.returncode}):\n{result.stderr[-4000:]}"
            )


@pytest.fixture(scope="session", name="node_verifier")
def node_verifier_fixture() -> NodeVerifier:
    """The JavaScript verifier, installed once per session; skips only without node or npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the JavaScript standardwebhooks verifier")
    _install(npm)
    return NodeVerifier(node)
