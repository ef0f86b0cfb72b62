"""The PNG chart of a run: throughput and latency side by side, hookd vs ceilings vs peers.

Left: burst deliveries/s (requests/s for the ceilings), log scale. Right: commit → received
latency p50 and p99, log scale: the LISTEN/NOTIFY floor and each system's idle series, then each
system under steady load at hookd's 50 % rate. `python -m bench.chart RESULTS.jsonl [OUT.png]`
redraws a chart from a results file.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

COLORS = {"ceiling": "#9e9e9e", "hookd": "#1f77b4", "pgqueuer": "#ff7f0e"}
PEER_COLORS = {"pgqueuer": "#ff7f0e", "graphile-worker": "#2ca02c"}


def _color(name: str) -> str:
    if name == "hookd":
        return COLORS["hookd"]
    return PEER_COLORS.get(name, COLORS["ceiling"])


def _throughput(s: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    rows: list[tuple[str, float, str]] = []
    c = s.get("ceilings") or {}
    b = s.get("burst") or {}
    if c.get("wrk_requests_per_s"):
        rows.append(("ceiling: nginx (wrk)", float(c["wrk_requests_per_s"]), COLORS["ceiling"]))
    if c.get("raw_db_deliveries_per_s"):
        rows.append(
            ("ceiling: asyncpg claim+ack", float(c["raw_db_deliveries_per_s"]), COLORS["ceiling"])
        )
    if b.get("raw_requests_per_s"):
        rows.append(("ceiling: raw aiohttp", float(b["raw_requests_per_s"]), COLORS["ceiling"]))
    for name, rec in (b.get("systems") or {}).items():
        if rec.get("deliveries_per_s"):
            rows.append((f"{name} (burst)", float(rec["deliveries_per_s"]), _color(name)))
    st = s.get("steady") or {}
    if st.get("max_sustainable_deliveries_per_s"):
        rows.append(
            (
                "hookd (steady, p99 <= 250 ms)",
                float(st["max_sustainable_deliveries_per_s"]),
                COLORS["hookd"],
            )
        )
    return rows


def _latency(s: Mapping[str, Any]) -> list[tuple[str, float | None, float | None, str]]:
    rows: list[tuple[str, float | None, float | None, str]] = []
    i = s.get("idle") or {}
    if i:
        rows.append(
            (
                "floor: LISTEN/NOTIFY (idle)",
                i.get("floor_p50_ms"),
                i.get("floor_p99_ms"),
                COLORS["ceiling"],
            )
        )
        rows.append(("hookd (idle)", i.get("hookd_p50_ms"), i.get("hookd_p99_ms"), _color("hookd")))
        for name, lat in (i.get("peers") or {}).items():
            rows.append((f"{name} (idle)", lat.get("p50_ms"), lat.get("p99_ms"), _color(name)))
    st = s.get("steady") or {}
    p50 = (st.get("points") or {}).get("50%")
    if p50:
        rate = p50.get("offered_events_per_s")
        lat = p50.get("latency") or {}
        rows.append(
            (f"hookd ({rate:.0f} ev/s)", lat.get("p50_ms"), lat.get("p99_ms"), _color("hookd"))
        )
        for name, rec in (st.get("peers_at_50pct") or {}).items():
            lat = rec.get("latency") or {}
            rows.append(
                (f"{name} ({rate:.0f} ev/s)", lat.get("p50_ms"), lat.get("p99_ms"), _color(name))
            )
    return rows


def draw(s: Mapping[str, Any], out: Path, title: str) -> Path:
    """Draw the chart of summary `s` to `out` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tp = _throughput(s)
    lat = _latency(s)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6.5), constrained_layout=True)
    fig.suptitle(title, fontsize=11)

    if tp:
        labels = [r[0] for r in tp]
        values = [r[1] for r in tp]
        ypos = list(range(len(tp)))[::-1]
        ax1.barh(ypos, values, color=[r[2] for r in tp])
        ax1.set_yticks(ypos, labels, fontsize=9)
        ax1.set_xscale("log")
        for y, v in zip(ypos, values, strict=True):
            ax1.text(v * 1.05, y, f"{v:,.0f}", va="center", fontsize=8)
        # A common left edge (a power of ten below the smallest bar), so bar lengths compare.
        ax1.set_xlim(left=10 ** math.floor(math.log10(min(values))), right=max(values) * 4)
    ax1.set_xlabel("deliveries/s (ceilings: requests/s), log scale")
    ax1.set_title("Throughput: burst drain, 4 endpoints on 4 hosts", fontsize=10)
    ax1.grid(axis="x", which="both", alpha=0.3)

    if lat:
        ypos = list(range(len(lat)))[::-1]
        height = 0.38
        p50 = [max(r[1] or 0.0, 0.01) for r in lat]
        p99 = [max(r[2] or 0.0, 0.01) for r in lat]
        colors = [r[3] for r in lat]
        ax2.barh([y + height / 2 for y in ypos], p50, height, color=colors, label="p50")
        ax2.barh([y - height / 2 for y in ypos], p99, height, color=colors, alpha=0.45, label="p99")
        for y, a, b in zip(ypos, p50, p99, strict=True):
            ax2.text(a * 1.08, y + height / 2, f"p50 {a:,.2f}", va="center", fontsize=7)
            ax2.text(b * 1.08, y - height / 2, f"p99 {b:,.2f}", va="center", fontsize=7)
        ax2.set_yticks(ypos, [r[0] for r in lat], fontsize=9)
        ax2.set_xscale("log")
        ax2.set_xlim(right=max(p99) * 6)
    ax2.set_xlabel("commit → received at the sink, ms (log scale); dark p50, light p99")
    ax2.set_title("Latency: idle serial events, and under steady load", fontsize=10)
    ax2.grid(axis="x", which="both", alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def title_of(env: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    """The chart's title: machine and versions."""
    v = env.get("versions") or {}
    pg = (env.get("postgres") or {}).get("server_version")
    return (
        f"hookd {env.get('hookd_commit')} vs ceilings and peers ({env.get('profile')} profile)"
        f" - {s.get('machine')}\n"
        f"PostgreSQL {pg} (fsync on), {env.get('nginx')}, Python {env.get('python')}, "
        f"aiohttp {v.get('aiohttp')}, PGQueuer {v.get('pgqueuer')}, graphile-worker "
        f"{v.get('graphile-worker')} (Node {v.get('node')})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw the chart of a results file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write("usage: python -m bench.chart RESULTS.jsonl [OUT.png]\n")
        return 2
    src = Path(args[0])
    records = [orjson.loads(line) for line in src.read_bytes().splitlines() if line.strip()]
    env = next(r for r in records if r.get("kind") == "environment")
    s = next(r for r in records if r.get("kind") == "summary")
    out = Path(args[1]) if len(args) > 1 else src.with_suffix(".png")
    draw(s, out, title_of(env, s))
    sys.stdout.write(f"{out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
