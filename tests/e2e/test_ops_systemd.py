"""systemd/hookd.service: what systemd's own tools say about it, and its start command.

systemd-analyze comes with Debian's `systemd` package (scripts/ensure-tools installs it); the tests
that need it are skipped, with that reason, only where it is absent. The unit is not started
here: the tests do not run under systemd as PID 1. The notify protocol it relies on is tested
against a real socket in test_ops_daemon.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hookd.config import DaemonConfig

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "hookd.service"
SYSUSERS = ROOT / "systemd" / "hookd.sysusers"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMD_SYSUSERS = shutil.which("systemd-sysusers")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not found (Debian package `systemd`; scripts/ensure-tools installs it)",
)


def _directives() -> dict[str, list[str]]:
    """The unit's `Key=value` lines (comments and section headers left out), values per key."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def _seconds(value: str) -> float:
    """A systemd time span in seconds ("30", "30s", "1min", "2min 30s")."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value))


def test_unit_declares_the_service_contract() -> None:
    d = _directives()
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"], "only hookd itself may send READY/WATCHDOG"
    assert d["Restart"] == ["on-failure"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["KillSignal"] == ["SIGTERM"], "SIGTERM drains"
    watchdog_s = _seconds(d["WatchdogSec"][0])
    assert 10 <= watchdog_s <= 120, watchdog_s
    # SIGTERM waits for in-flight requests up to [daemon] shutdown_grace_s; systemd must wait longer.
    assert _seconds(d["TimeoutStopSec"][0]) > DaemonConfig().shutdown_grace_s + 10
    assert d["User"] == ["hookd"] and d["Group"] == ["hookd"]
    assert any(v.startswith("dsn:/etc/hookd/") for v in d["LoadCredential"])
    assert "--dsn" not in d["ExecStart"][0], "a DSN on the command line is visible to every user"


@needs_analyze
def test_unit_hardening_exposure_is_at_most_2() -> None:
    assert SYSTEMD_ANALYZE is not None
    # --threshold is on the 0-100 scale (exposure x 10): exit status 1 when above 2.0.
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=20", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for hookd\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert m, result.stdout + result.stderr
    assert float(m.group(1)) <= 2.0, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


@needs_analyze
def test_unit_passes_systemd_analyze_verify() -> None:
    """`verify` checks every directive and that ExecStart/ExecReload's programs exist.

    ExecStart runs /bin/sh (which exists everywhere), and /opt/hookd/bin/hookd only inside the
    shell command, so verify does not depend on hookd being installed at that path.
    """
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_exec_start_hands_the_dsn_credential_to_hookd_in_its_environment(tmp_path: Path) -> None:
    """Run the unit's ExecStart as systemd would, with a stand-in for the hookd binary."""
    (exec_start,) = _directives()["ExecStart"]
    # systemd turns "$$" into "$" and leaves the rest to the shell.
    argv = shlex.split(exec_start.replace("$$", "$"))
    assert argv[:2] == ["/bin/sh", "-c"], argv
    script = argv[2]
    assert "/opt/hookd/bin/hookd run --config /etc/hookd/hookd.toml" in script, script

    fake = tmp_path / "hookd"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'dsn': os.environ.get('HOOKD_DSN'),"
        " 'pid': os.getpid()}))\n",
        encoding="utf-8",
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    creds = tmp_path / "credentials"
    creds.mkdir()
    dsn = "postgresql://hookd:s3cr3t%20pw@db.internal:5432/app?sslmode=verify-full"
    (creds / "dsn").write_text(dsn + "\n", encoding="utf-8")

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CREDENTIALS_DIRECTORY": str(creds)}
    proc = subprocess.Popen(
        ["/bin/sh", "-c", script.replace("/opt/hookd/bin/hookd", str(fake))],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    got = json.loads(out)
    assert got["dsn"] == dsn, "the credential's trailing newline is dropped, the rest kept"
    assert got["argv"] == ["run", "--config", "/etc/hookd/hookd.toml"]
    assert got["pid"] == proc.pid, "exec: hookd must be the main process (notify, reload)"

    # No credential: the start fails instead of running on a DSN from elsewhere.
    (creds / "dsn").unlink()
    missing = subprocess.run(
        ["/bin/sh", "-c", script.replace("/opt/hookd/bin/hookd", str(fake))],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode != 0 and missing.stdout == "", missing


@pytest.mark.skipif(SYSTEMD_SYSUSERS is None, reason="systemd-sysusers not found")
def test_sysusers_entry_creates_a_locked_service_user(tmp_path: Path) -> None:
    assert SYSTEMD_SYSUSERS is not None
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        [SYSTEMD_SYSUSERS, f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text(encoding="utf-8")
    (entry,) = [line for line in passwd.splitlines() if line.startswith("hookd:")]
    assert entry.endswith(":/usr/sbin/nologin"), entry
    assert int(entry.split(":")[2]) < 1000, "a system user"
