"""The systems under test: hookd and its peers, behind one interface.

Each system knows how to install its schema in a fresh database, how its producer publishes
(`bench/producer.py --mode ...`, in which Python), how to start its worker process and how much
work it has left. The peers are installed by `ensure_peers()` into `bench/.peers/` (git-ignored):
PGQueuer from PyPI into its own virtualenv, graphile-worker from npm (the newest release whose
`engines` accepts Node 20).

Tuning (bench/README.md says why): hookd runs with its defaults except the per-origin and
per-endpoint limits (64, the raw client's); PGQueuer with `batch_size` 100 and
`max_concurrent_tasks` 512 over a 4-connection asyncpg pool (its performance guide: larger batches
for short jobs, a pool driver, max_concurrent_tasks >= 2 x batch_size); graphile-worker with
concurrency 256, a local queue of 500 and batched job completion (`completeJobBatchDelay` 0), as
its performance page recommends. Each setting was the best of a sweep (bench/README.md). The peers
POST with at most 64 connections per origin where the client allows it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import BenchError
from bench.hookd_proc import HookdProcess, write_cli_config
from bench.pg import APP_ROLE, SUT_ROLE, Postgres, add_endpoints
from bench.procs import Child

log = logging.getLogger("bench.systems")

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = Path(os.environ.get("HOOKD_BENCH_PEERS_DIR") or BENCH_DIR / ".peers")
"""Where the peers are installed: bench/.peers (git-ignored), or HOOKD_BENCH_PEERS_DIR (e.g. a
cache that outlives a CI checkout)."""
PGQUEUER_VERSION = "1.6.0"
GRAPHILE_VERSION = "0.17.3"
"""0.18 needs Node >= 22.18; 0.17.3 declares Node >= 14."""
INSTALL_TIMEOUT_S = 600.0


def _run(cmd: Sequence[str], cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(
            list(cmd),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(cmd[:3])}` took over {INSTALL_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-2000:]}")


def pgqueuer_python() -> Path:
    """The interpreter of PGQueuer's virtualenv."""
    return PEERS_DIR / "pgqueuer" / "bin" / "python"


def graphile_dir() -> Path:
    """The npm project holding graphile-worker."""
    return PEERS_DIR / "graphile"


def _ensure_pgqueuer() -> dict[str, str]:
    marker = PEERS_DIR / "pgqueuer.installed"
    if (
        not pgqueuer_python().exists()
        or not marker.exists()
        or marker.read_text().strip() != PGQUEUER_VERSION
    ):
        log.info("installing PGQueuer %s into %s", PGQUEUER_VERSION, PEERS_DIR / "pgqueuer")
        shutil.rmtree(PEERS_DIR / "pgqueuer", ignore_errors=True)
        # A virtualenv without its own pip, filled by this interpreter's pip (`--python`):
        # seconds faster than bootstrapping pip into it.
        _run([sys.executable, "-m", "venv", "--without-pip", str(PEERS_DIR / "pgqueuer")])
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(pgqueuer_python()),
                "install",
                "-q",
                f"pgqueuer=={PGQUEUER_VERSION}",
                "asyncpg",
                "aiohttp",
                "uvloop",
            ]
        )
        marker.write_text(PGQUEUER_VERSION)
    return {"pgqueuer": PGQUEUER_VERSION}


def _ensure_graphile() -> dict[str, str]:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise BenchError("node and npm are needed for graphile-worker (`apt-get install npm`)")
    gdir = graphile_dir()
    marker = PEERS_DIR / "graphile.installed"
    if (
        not (gdir / "node_modules" / "graphile-worker").exists()
        or not marker.exists()
        or marker.read_text().strip() != GRAPHILE_VERSION
    ):
        log.info("installing graphile-worker %s into %s", GRAPHILE_VERSION, gdir)
        shutil.rmtree(gdir, ignore_errors=True)
        gdir.mkdir(parents=True)
        (gdir / "package.json").write_text('{"name": "hookd-bench-graphile", "private": true}\n')
        _run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                f"graphile-worker@{GRAPHILE_VERSION}",
            ],
            cwd=gdir,
        )
        marker.write_text(GRAPHILE_VERSION)
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return {"graphile-worker": GRAPHILE_VERSION, "node": out.stdout.strip()}


async def ensure_peers(names: Sequence[str]) -> dict[str, str]:
    """Install the named peers ("pgqueuer", "graphile-worker") unless already there (both at
    once); return their versions.

    Idempotent: a marker file holds the installed version; a different one is reinstalled.
    """
    await asyncio.to_thread(PEERS_DIR.mkdir, parents=True, exist_ok=True)
    jobs = []
    if "pgqueuer" in names:
        jobs.append(asyncio.to_thread(_ensure_pgqueuer))
    if "graphile-worker" in names:
        jobs.append(asyncio.to_thread(_ensure_graphile))
    versions: dict[str, str] = {}
    for found in await asyncio.gather(*jobs):
        versions.update(found)
    return versions


@dataclass(frozen=True, slots=True)
class Tuning:
    """Knobs of the systems under test (defaults: see the module docstring)."""

    per_host: int = 64
    pgqueuer_batch: int = 100
    pgqueuer_max_tasks: int = 512
    pgqueuer_pool: int = 4
    graphile_concurrency: int = 256
    graphile_local_queue: int = 500
    graphile_max_pool: int = 12


class System(ABC):
    """One system under test."""

    name: str
    mode: str
    """bench/producer.py --mode."""
    clean_exits: tuple[int, ...] = (0,)
    """Exit statuses after SIGTERM that mean a clean shutdown."""

    def __init__(self, tuning: Tuning) -> None:
        self.tuning = tuning

    @property
    @abstractmethod
    def python(self) -> Path:
        """The interpreter that runs bench/producer.py for this system."""

    @abstractmethod
    async def create(self, pg: Postgres, dbname: str, workdir: Path) -> None:
        """Create database `dbname` with the system's schema."""

    async def add_endpoints(
        self, pg: Postgres, dbname: str, workdir: Path, urls: Sequence[str], event_types: str = "*"
    ) -> None:
        """Register endpoints (hookd only; the peers carry the URL in each job)."""
        del pg, dbname, workdir, urls, event_types

    def producer_urls(self, urls: Sequence[str]) -> list[str]:
        """The --url arguments of the producer: one job per URL for the peers, none for hookd."""
        return list(urls)

    @abstractmethod
    def worker(
        self,
        pg: Postgres,
        dbname: str,
        workdir: Path,
        name: str,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Child:
        """The worker process (not started): use `async with`."""

    @abstractmethod
    async def outstanding(self, conn: asyncpg.Connection) -> int:
        """Work not yet finished (events not fanned out, deliveries or jobs pending): a count,
        so its cost grows with the backlog."""

    @abstractmethod
    async def busy(self, conn: asyncpg.Connection) -> bool:
        """Whether any work is left: cheap (EXISTS), for polling a drain."""


class Hookd(System):
    """hookd: `hookd run`, events published with hookd.publish and fanned out by the daemon."""

    name = "hookd"
    mode = "hookd"

    @property
    def python(self) -> Path:
        return Path(sys.executable)

    async def create(self, pg: Postgres, dbname: str, workdir: Path) -> None:
        await pg.hookd_database(dbname)

    async def add_endpoints(
        self, pg: Postgres, dbname: str, workdir: Path, urls: Sequence[str], event_types: str = "*"
    ) -> None:
        await add_endpoints(pg.dsn_for(dbname), list(urls), write_cli_config(workdir), event_types)

    def producer_urls(self, urls: Sequence[str]) -> list[str]:
        return []

    def worker(
        self,
        pg: Postgres,
        dbname: str,
        workdir: Path,
        name: str,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> HookdProcess:
        merged: dict[str, dict[str, Any]] = {
            "http": {
                "per_host_limit": self.tuning.per_host,
                "per_endpoint_limit": self.tuning.per_host,
            }
        }
        for section, values in (settings or {}).items():
            merged.setdefault(section, {}).update(values)
        return HookdProcess(pg.dsn_for(dbname, SUT_ROLE), workdir, name, merged)

    async def outstanding(self, conn: asyncpg.Connection) -> int:
        n: int = await conn.fetchval(
            "SELECT (SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL)"
            " + (SELECT count(*) FROM hookd.deliveries WHERE state = 'pending')"
        )
        return n

    async def busy(self, conn: asyncpg.Connection) -> bool:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM hookd.events WHERE fanned_out_at IS NULL)"
                " OR EXISTS (SELECT 1 FROM hookd.deliveries WHERE state = 'pending')"
            )
        )


class PGQueuer(System):
    """PGQueuer: one job per endpoint, a worker whose job POSTs through a shared aiohttp session."""

    name = "pgqueuer"
    mode = "pgqueuer"

    @property
    def python(self) -> Path:
        return pgqueuer_python()

    async def create(self, pg: Postgres, dbname: str, workdir: Path) -> None:
        await pg.create_database(dbname)
        pgq = PEERS_DIR / "pgqueuer" / "bin" / "pgq"
        await asyncio.to_thread(_run, [str(pgq), "--pg-dsn", pg.dsn_for(dbname), "install"])

    def worker(
        self,
        pg: Postgres,
        dbname: str,
        workdir: Path,
        name: str,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Child:
        t = self.tuning
        return Child(
            name,
            [
                str(self.python),
                str(BENCH_DIR / "peer_pgqueuer.py"),
                "--dsn",
                pg.dsn_for(dbname, SUT_ROLE),
                f"--batch-size={t.pgqueuer_batch}",
                f"--max-tasks={t.pgqueuer_max_tasks}",
                f"--pool={t.pgqueuer_pool}",
                f"--per-host={t.per_host}",
            ],
            workdir,
            ready_text="ready",
        )

    async def outstanding(self, conn: asyncpg.Connection) -> int:
        n: int = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        return n

    async def busy(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgqueuer)"))


class GraphileWorker(System):
    """graphile-worker: one job per endpoint, a task that POSTs with Node's fetch."""

    name = "graphile-worker"
    mode = "graphile"
    clean_exits = (0, -15)
    """graphile-worker shuts down gracefully on SIGTERM, then re-raises the signal."""

    @property
    def python(self) -> Path:
        return Path(sys.executable)

    def _env(self, pg: Postgres, dbname: str) -> dict[str, str]:
        t = self.tuning
        env = {k: v for k, v in os.environ.items() if not k.startswith("GW_")}
        env.update(
            {
                "BENCH_PEER_DIR": str(graphile_dir()),
                "DATABASE_URL": pg.dsn_for(dbname, SUT_ROLE),
                "GW_CONCURRENCY": str(t.graphile_concurrency),
                "GW_LOCAL_QUEUE": str(t.graphile_local_queue),
                "GW_BATCH_DELAY_MS": "0",
                "GW_MAX_POOL": str(t.graphile_max_pool),
            }
        )
        return env

    async def create(self, pg: Postgres, dbname: str, workdir: Path) -> None:
        await pg.create_database(dbname)
        env = self._env(pg, dbname)
        env["GW_MIGRATE_ONLY"] = "1"
        node = shutil.which("node") or "node"
        async with Child(
            f"graphile-migrate-{dbname}",
            [node, str(BENCH_DIR / "peer_graphile.cjs")],
            workdir,
            ready_text="migrated",
            env=env,
        ) as child:
            await child.wait(60.0)

    def worker(
        self,
        pg: Postgres,
        dbname: str,
        workdir: Path,
        name: str,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Child:
        node = shutil.which("node") or "node"
        return Child(
            name,
            [node, str(BENCH_DIR / "peer_graphile.cjs")],
            workdir,
            ready_text="ready",
            env=self._env(pg, dbname),
        )

    async def outstanding(self, conn: asyncpg.Connection) -> int:
        n: int = await conn.fetchval("SELECT count(*) FROM graphile_worker._private_jobs")
        return n

    async def busy(self, conn: asyncpg.Connection) -> bool:
        return bool(
            await conn.fetchval("SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs)")
        )


def make(name: str, tuning: Tuning) -> System:
    """The system called `name` ("hookd", "pgqueuer", "graphile-worker")."""
    classes: dict[str, type[System]] = {
        "hookd": Hookd,
        "pgqueuer": PGQueuer,
        "graphile-worker": GraphileWorker,
    }
    return classes[name](tuning)


async def run_producer(
    system: System,
    pg: Postgres,
    dbname: str,
    workdir: Path,
    tag: str,
    urls: Sequence[str],
    command: Sequence[str],
    *,
    body_bytes: int,
    event_type: str | None = None,
    first: int = 1,
    timeout_s: float = 900.0,
    stop: asyncio.Event | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run bench/producer.py for `system` (as the app role); return its summary and commits file.

    Setting `stop` ends a `steady` producer early (SIGTERM; it writes what it published).
    """
    import orjson

    out = workdir / f"commits-{tag}.txt"
    args = [
        str(system.python),
        str(BENCH_DIR / "producer.py"),
        f"--mode={system.mode}",
        f"--dsn={pg.dsn_for(dbname, APP_ROLE)}",
        f"--body-bytes={body_bytes}",
        f"--first={first}",
        f"--out={out}",
        *(f"--url={u}" for u in system.producer_urls(urls)),
    ]
    if event_type:
        args.append(f"--event-type={event_type}")
    proc = await asyncio.create_subprocess_exec(
        *args,
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    talk = asyncio.ensure_future(proc.communicate())
    try:
        if stop is not None:
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                {talk, stopper}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            stopper.cancel()
            if stopper in done and not talk.done():
                proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(talk, timeout_s)
    except TimeoutError:
        raise BenchError(f"producer {tag} took over {timeout_s:.0f} s") from None
    finally:
        talk.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"producer {tag} failed: {stderr.decode(errors='replace')[-2000:]}")
    summary: dict[str, Any] = orjson.loads(stdout.splitlines()[-1])
    return summary, out
