"""Metrics, dashboard and alerts against real Prometheus tools.

`promtool` checks the alert rules (syntax and their unit tests), the scrape example, and a real
/metrics scrape of a daemon under load. A real Prometheus server (Debian's `prometheus` package,
installed by scripts/ensure-tools) then scrapes a loaded daemon every second and evaluates every
dashboard panel query and every alert expression through its HTTP query API.

The tools are skipped, with the reason, only where they are not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from hookd.classify import STATUS_CLASSES
from hookd.daemon import Daemon
from hookd.metrics import Metrics

from support.daemon import add_endpoint, running_daemon
from support.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "hookd.json"
ALERTS = ROOT / "config" / "prometheus" / "hookd-alerts.yml"
ALERT_TESTS = ROOT / "config" / "prometheus" / "hookd-alerts.test.yml"
SCRAPE_EXAMPLE = ROOT / "config" / "prometheus" / "prometheus.yml"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
_INSTALL_HINT = "(Debian package `prometheus`; scripts/ensure-tools installs it)"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=f"promtool not found {_INSTALL_HINT}")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason=f"prometheus not found {_INSTALL_HINT}"
)

_PUBLISH_MANY = (
    "SELECT hookd.publish('order.paid', jsonb_build_object('i', i)) FROM generate_series(1, $1) i"
)

# Fast figures and a breaker that opens within the test: the dead endpoint fails 10 times in a row.
_LOADED = {
    "admin": {"stats_interval_s": 0.2},
    "breaker": {"failure_threshold": 10, "cooldown_s": 30.0},
}

# The panels an operator reads first: they must show data, not just parse.
_MAIN_PANELS = {
    "Throughput",
    "Delivery lag (publish to 2xx)",
    "Backlog",
    "In-flight requests per host",
    "Failing endpoints",
}


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


# -- the dashboard file ------------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables left in) for every target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def _alert_rules() -> list[dict[str, str]]:
    """[{"alert": name, "expr": PromQL}] from the rule file.

    A small reader for this file's own layout (`- alert: NAME`, then `expr: ONE LINE` or
    `expr: |` and an indented block), so the tests need no YAML library. The Prometheus server
    test cross-checks it against the rules as Prometheus itself parsed them.
    """
    rules: list[dict[str, str]] = []
    lines = ALERTS.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"^\s*- alert: (\S+)\s*$", line):
            rules.append({"alert": m.group(1)})
        elif m := re.match(r"^(\s*)expr: (.*)$", line):
            indent, value = len(m.group(1)), m.group(2).strip()
            if value == "|":
                block = []
                for more in lines[i + 1 :]:
                    if more.strip() and len(more) - len(more.lstrip()) <= indent:
                        break
                    block.append(more.strip())
                value = "\n".join(block).strip()
            rules[-1]["expr"] = value
    assert rules and all("expr" in r for r in rules), rules
    return rules


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    dash = _dashboard()
    # The data source is a `datasource` template variable: the same file works when imported
    # through the UI (it picks the default Prometheus; a drop-down switches) and when provisioned
    # from disk (where an import's ${DS_...} inputs would stay unreplaced).
    ds = {"type": "prometheus", "uid": "${datasource}"}
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "__inputs" not in dash, "nothing to ask at import"
    assert dash["id"] is None, "an exported dashboard must not carry a database id"
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)

    panels = list(_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == ds, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == ds, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for name, var in variables.items():
        if name != "datasource":
            assert var["datasource"] == ds, name

    titles = {p["title"] for p in panels}
    wanted = {
        "Throughput",
        "Success ratio",
        "Delivery lag (publish to 2xx)",
        "Backlog",
        "Oldest pending delivery",
        "In-flight requests per host",
        "Retries",
        "Circuit breakers and disabled endpoints",
        "Wake-ups",
        "Failing endpoints",
    }
    assert wanted <= titles, f"missing panels: {wanted - titles}"
    lag = " ".join(e for t, e in _dashboard_queries() if t == "Delivery lag (publish to 2xx)")
    assert "histogram_quantile" in lag and "hookd_delivery_lag_seconds_bucket" in lag


def test_every_metric_in_dashboard_and_alerts_is_exported() -> None:
    """A typo in a metric name gives an empty panel, not an error: compare against the registry."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    exported = {"up"}
    for family in Metrics().registry.collect():
        exported.update(family.name + suffix for suffix in suffixes[family.type])
    exprs = [e for _, e in _dashboard_queries()] + [r["expr"] for r in _alert_rules()]
    for expr in exprs:
        for name in re.findall(r"\b(hookd_[a-z_]+|up)\b(?=\s*[{\[)])", expr):
            assert name in exported, f"{name} (in {expr!r}) is not a hookd metric"


# -- promtool ----------------------------------------------------------------------------------


@needs_promtool
def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    assert PROMTOOL is not None
    check = _run(PROMTOOL, "check", "rules", str(ALERTS))
    assert check.returncode == 0, check.stdout + check.stderr
    wanted = {
        "HookdDown",
        "HookdAbsent",
        "HookdBacklogGrowing",
        "HookdOldestPendingTooOld",
        "HookdFailureRatioHigh",
        "HookdCircuitBreakerOpen",
        "HookdListenerReconnecting",
    }
    names = {r["alert"] for r in _alert_rules()}
    assert wanted <= names, f"missing alerts: {wanted - names}"
    unit = _run(PROMTOOL, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert unit.returncode == 0, unit.stdout + unit.stderr


@needs_promtool
def test_scrape_example_passes_promtool_check_config() -> None:
    assert PROMTOOL is not None
    check = _run(PROMTOOL, "check", "config", SCRAPE_EXAMPLE.name, cwd=SCRAPE_EXAMPLE.parent)
    assert check.returncode == 0, check.stdout + check.stderr


def test_host_label_is_capped() -> None:
    m = Metrics(max_host_labels=2)
    assert [m.host(h) for h in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]


# -- a daemon under load -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _loaded_daemon(dsn: str) -> AsyncIterator[tuple[Daemon, Receiver]]:
    """A daemon delivering to three endpoints: one healthy, one flaky (every other answer is a
    500, so retries happen), one dead (always 500: its breaker opens and deliveries wait)."""
    async with Receiver() as rx:
        rx.script("/flaky", [500, 204] * 5000)
        rx.script("/dead", [500])
        for path in ("/ok", "/flaky", "/dead"):
            await add_endpoint(dsn, rx.url_for(path))
        async with running_daemon(dsn, _LOADED) as daemon:
            assert daemon.admin is not None and daemon.admin.port
            yield daemon, rx


async def _scrape(session: aiohttp.ClientSession, daemon: Daemon) -> str:
    assert daemon.admin is not None
    async with session.get(f"http://127.0.0.1:{daemon.admin.port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return await resp.text()


def _sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in a text exposition, e.g. _sample(t, "hookd_attempts_total",
    'status_class="5xx"')."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(?:\{\})?")
    m = re.search(r"^" + pattern + r" (\S+)$", text, re.MULTILINE)
    assert m, f"no sample {name}{{{labels}}} in the scrape"
    return float(m.group(1))


@needs_promtool
async def test_metrics_scrape_under_load_passes_promtool_check_metrics(
    dsn: str, db: asyncpg.Connection
) -> None:
    assert PROMTOOL is not None
    async with _loaded_daemon(dsn) as (daemon, rx), aiohttp.ClientSession() as session:
        await db.execute(_PUBLISH_MANY, 200)
        await rx.wait_for(lambda r: len(r.requests_for("/dead")) >= 10, timeout_s=15)
        await rx.wait_for(200, path="/ok", timeout_s=15)
        # The gauges read from the database and the dispatcher follow at the stats loop's next
        # refresh after the breaker opened; a scrape over HTTP has no event to wait on: poll it.
        async with asyncio.timeout(10):
            text = await _scrape(session, daemon)
            while _sample(text, "hookd_circuit_breakers_open") < 1:
                await asyncio.sleep(0.1)
                text = await _scrape(session, daemon)

    proc = await asyncio.create_subprocess_exec(
        PROMTOOL,
        "check",
        "metrics",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        report, _ = await proc.communicate(text.encode())
    assert proc.returncode == 0 and not report.strip(), (
        f"promtool check metrics reported:\n{report.decode()}"
    )
    # The scrape really was under load: deliveries, failures, retries, an open breaker.
    assert _sample(text, "hookd_deliveries_total", 'outcome="delivered"') >= 200
    assert _sample(text, "hookd_deliveries_total", 'outcome="retry_scheduled"') >= 1
    assert _sample(text, "hookd_attempts_total", 'status_class="5xx"') >= 10
    assert _sample(text, "hookd_delivery_lag_seconds_count") >= 200
    assert _sample(text, "hookd_circuit_breakers_open") == 1
    assert _sample(text, "hookd_oldest_pending_delivery_age_seconds") > 0
    assert _sample(text, "hookd_ready") == 1
    for status_class in STATUS_CLASSES:  # every class is exported from the start
        _sample(text, "hookd_attempts_total", f'status_class="{status_class}"')
    # Bounded labels: no URL or path ever becomes a label value, and ids only as the `endpoint`
    # of at most [admin] max_endpoint_labels endpoints (here all three: fewer than the default).
    assert "/flaky" not in text and "/dead" not in text and "http://" not in text
    hosts = set(re.findall(r'hookd_requests_in_flight\{host="([^"]*)"\}', text))
    assert hosts == {"127.0.0.1"}
    ids = {
        r["url"].rsplit("/", 1)[1]: r["id"]
        for r in await db.fetch("SELECT id, url FROM hookd.endpoints")
    }
    endpoints = set(re.findall(r'hookd_endpoint_attempts_total\{endpoint="([^"]*)"', text))
    assert endpoints == {str(i) for i in ids.values()}
    dead = f'endpoint="{ids["dead"]}"'
    assert _sample(text, "hookd_endpoint_consecutive_failures", dead) >= 10
    assert _sample(text, "hookd_endpoint_attempts_total", dead + ',status_class="2xx"') == 0


# -- a real Prometheus server ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Prometheus:
    """A Prometheus server in tmp_path scraping one target every second; async context manager."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "hookd", "static_configs": [{"targets": [target]}]}],
        }
        self.config = self.dir / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write it.
        self.config.write_text(json.dumps(config), encoding="utf-8")
        self._proc: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> _Prometheus:
        assert PROMETHEUS is not None
        with self.log.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            await self._wait_ready()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def _wait_ready(self) -> None:
        assert self.session is not None and self._proc is not None
        try:
            async with asyncio.timeout(20):
                while True:
                    if self._proc.returncode is not None:
                        raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with self.session.get(f"{self.url}/-/ready") as resp:
                            if resp.status == 200:
                                return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"prometheus not ready in 20 s:\n{self.log.read_text()}") from None

    async def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; return `data`, or fail with Prometheus's error."""
        assert self.session is not None
        async with self.session.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the vector's samples (a scalar becomes one sample)."""
        data = await self.api("query", query=expr)
        if data["resultType"] == "vector":
            result: list[dict[str, Any]] = data["result"]
            return result
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise AssertionError(f"{expr}: unexpected result type {data['resultType']}")


def _grafana_to_promql(expr: str, instance: str) -> str:
    """Replace the dashboard's variables the way Grafana would for job=hookd and one instance.

    Grafana regex-escapes a value used in `=~` and doubles the backslashes for the PromQL string.
    """
    escaped = re.escape(instance).replace("\\", "\\\\")
    for var, value in (
        ("$__rate_interval", "10s"),
        ("${job}", "hookd"),
        ("$job", "hookd"),
        ("${instance}", escaped),
        ("$instance", escaped),
    ):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unreplaced variable in {expr!r}"
    return expr


def _has_number(samples: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(s["value"][1])) for s in samples)


@needs_prometheus
async def test_prometheus_evaluates_every_dashboard_and_alert_query(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with _loaded_daemon(dsn) as (daemon, rx):
        assert daemon.admin is not None
        instance = f"127.0.0.1:{daemon.admin.port}"
        async with _Prometheus(tmp_path, instance) as prom, asyncio.TaskGroup() as tg:
            stop = asyncio.Event()

            async def publish_load() -> None:
                # A steady trickle (bounded: at most 600 events), so every rate has an increase
                # between two scrapes and the lag histogram has fresh observations.
                for _ in range(60):
                    await db.execute(_PUBLISH_MANY, 10)
                    try:
                        async with asyncio.timeout(0.2):
                            await stop.wait()
                        return
                    except TimeoutError:
                        pass

            tg.create_task(publish_load())
            try:
                await _until_main_panels_have_data(prom, instance)
                await _check_every_query(prom, instance)
            finally:
                stop.set()
    assert rx.count > 0


async def _until_main_panels_have_data(prom: _Prometheus, instance: str) -> None:
    """Poll (bounded) until every main panel's queries return numbers."""
    main = [(t, _grafana_to_promql(e, instance)) for t, e in _dashboard_queries()]
    main = [(t, e) for t, e in main if t in _MAIN_PANELS]
    assert {t for t, _ in main} == _MAIN_PANELS
    missing: list[str] = []
    try:
        async with asyncio.timeout(20):
            while True:
                missing = [f"{t}: {e}" for t, e in main if not _has_number(await prom.query(e))]
                if not missing:
                    return
                await asyncio.sleep(0.5)
    except TimeoutError:
        targets = await prom.api("targets")
        raise AssertionError(
            "main panels without data after 20 s:\n"
            + "\n".join(missing)
            + f"\ntargets: {targets['activeTargets']}"
        ) from None


async def _check_every_query(prom: _Prometheus, instance: str) -> None:
    # Every panel query parses and evaluates (an error fails inside prom.query).
    for _title, expr in _dashboard_queries():
        await prom.query(_grafana_to_promql(expr, instance))

    # The variables' queries: label_values(metric, label) is Grafana's; ask the same of the API.
    jobs = await prom.api("label/job/values", **{"match[]": "hookd_build_info"})
    assert jobs == ["hookd"]
    instances = await prom.api(
        "label/instance/values", **{"match[]": 'hookd_build_info{job="hookd"}'}
    )
    assert instances == [instance]

    # Every alert expression evaluates; the breaker one sees the dead endpoint's open breaker.
    for rule in _alert_rules():
        await prom.query(rule["expr"])
    breaker = next(r for r in _alert_rules() if r["alert"] == "HookdCircuitBreakerOpen")
    assert await prom.query(breaker["expr"]), "the dead endpoint's breaker is not seen as open"
    down = next(r for r in _alert_rules() if r["alert"] == "HookdDown")
    assert await prom.query(down["expr"]) == [], "a running daemon looks down"

    # Prometheus itself loaded the rule file and evaluated every rule without error.
    try:
        async with asyncio.timeout(10):
            while True:
                groups = (await prom.api("rules"))["groups"]
                rules = [r for g in groups for r in g["rules"]]
                if rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules):
                    break
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"rules not all evaluated: {rules}") from None

    def canonical(expr: str) -> str:
        return "".join(expr.split())  # Prometheus re-prints rules with its own spacing

    ours = [(r["alert"], canonical(r["expr"])) for r in _alert_rules()]
    theirs = [(r["name"], canonical(r["query"])) for r in rules]
    assert sorted(ours) == sorted(theirs), "the test reads the rule file unlike Prometheus"
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
