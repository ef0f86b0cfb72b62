"""Cells of the benchmark's markdown tables: numbers and latency percentiles as report.py shows them.

Shared by bench/report.py and the per-scenario table modules (bench/report_scale.py,
bench/report_publish.py): thousands separators, a fixed number of decimals, '-' for a missing
figure, and "p50 / p90 / p99 / max" for a latency record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def cell(value: Any, digits: int = 0) -> str:
    """A number for a table: thousands separators, `digits` decimals; '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def latency_cell(lat: Mapping[str, Any] | None, digits: int = 1) -> str:
    if not lat:
        return "-"
    return " / ".join(cell(lat.get(k), digits) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
