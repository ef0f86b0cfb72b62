"""Long-running children of the benchmark (daemon, peer workers, fault sink): start, ready, stop.

Every child runs in its own session (a terminal's Ctrl-C reaches only the benchmark, which then
stops its children in order), writes stdout and stderr to `<workdir>/<name>.log`, counts as ready
when a line containing its ready text appears, and is stopped with a signal, then SIGKILL after a
bounded wait. Leaving the `async with` block stops it whatever happened inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from bench.common import BenchError, peak_rss_bytes, stop_process, tree_cpu_seconds

log = logging.getLogger("bench.procs")


class Child:
    """One child process; use as `async with Child(...) as child`.

    After entry, `ready_unix_s` is the wall-clock time (time.time()) at which the ready line was
    read. `peak_rss_bytes` (VmHWM) is read just before the child is stopped.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        ready_text: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self._argv = list(argv)
        self.log_path = workdir / f"{name}.log"
        self._ready_text = ready_text
        self._env = dict(env) if env is not None else dict(os.environ)
        self._cwd = cwd
        self._stop_signal = stop_signal
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._on_line = on_line
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.ready_unix_s = 0.0
        self.exit_code: int | None = None
        self.warnings = 0
        self.errors = 0
        self.peak_rss_bytes: int | None = None
        self._pid = 0

    @property
    def pid(self) -> int:
        """The child's pid (kept after it exited)."""
        return self._pid

    @property
    def running(self) -> bool:
        """True while the child is alive."""
        return self._proc is not None and self._proc.returncode is None

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the child and its descendants so far."""
        return tree_cpu_seconds(self._pid) if self.running else 0.0

    async def __aenter__(self) -> Child:
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
        )
        self._pid = self._proc.pid
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-output")
        try:
            async with asyncio.timeout(self._start_timeout_s):
                waiter = asyncio.create_task(self._ready.wait())
                done, _ = await asyncio.wait(
                    {waiter, self._reader}, return_when=asyncio.FIRST_COMPLETED
                )
                if waiter not in done:
                    waiter.cancel()
                    raise BenchError(f"{self.name} exited before it was ready; see {self.log_path}")
        except TimeoutError:
            await self._shutdown()
            raise BenchError(
                f"{self.name} not ready after {self._start_timeout_s:.0f} s; see {self.log_path}"
            ) from None
        except BaseException:
            await self._shutdown()
            raise
        log.info("%s ready (pid %d)", self.name, self.pid)
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self.log_path.open("w") as out:
            while line := await self._proc.stdout.readline():
                text = line.decode(errors="replace")
                out.write(text)
                if " WARNING " in text or "WARN" in text[:40]:
                    self.warnings += 1
                elif " ERROR " in text or "Traceback" in text or "Error:" in text[:60]:
                    self.errors += 1
                if not self._ready.is_set() and self._ready_text in text:
                    self.ready_unix_s = time.time()
                    self._ready.set()
                if self._on_line is not None:
                    self._on_line(text)

    async def wait(self, timeout_s: float) -> int | None:
        """Wait (bounded) for the child to exit by itself; then stop it either way."""
        if self._proc is not None and self._proc.returncode is None:
            try:
                await asyncio.wait_for(self._proc.wait(), timeout_s)
            except TimeoutError:
                log.warning("%s still running after %.0f s; stopping it", self.name, timeout_s)
        if self._proc is not None and self._reader is not None:
            # Let the reader see the last lines before they are judged.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 5.0)
        return await self.stop()

    async def stop(self) -> int | None:
        """Signal the child, wait (bounded), and return its exit status."""
        await self._shutdown()
        return self.exit_code

    async def _shutdown(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            # Read before the process goes: VmHWM is the peak resident set over its life.
            self.peak_rss_bytes = peak_rss_bytes(proc.pid) or self.peak_rss_bytes
        self.exit_code = await stop_process(proc, self._stop_signal, self._stop_timeout_s)
        self._proc = None
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5.0)
            except TimeoutError:
                self._reader.cancel()
            self._reader = None
        if self.exit_code != 0:
            log.warning(
                "%s exited with status %s; see %s", self.name, self.exit_code, self.log_path
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()
