"""Configuration: frozen dataclasses loaded from TOML, with `HOOKD_DSN` and `--dsn` overrides.

All validation lives here. Every problem is reported as one `ConfigError` whose message names the
key (``section.key``) and what is wrong, so the CLI can print it as a single line.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from hookd.breaker import BreakerSettings
from hookd.classify import DEFAULT_FINAL_STATUSES, check_final_statuses
from hookd.destinations import DestinationPolicy
from hookd.errors import ConfigError
from hookd.retry import DEFAULT_SCHEDULE_S, RetryPolicy
from hookd.secretbox import SecretBox, SecretKeyError, load_key


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where the hookd schema lives."""

    dsn: str = ""
    """libpq connection string or URI. `HOOKD_DSN` or `--dsn` replace it."""
    pool_size: int = 4
    """Connections in the daemon's pool (claims and outcome writes); the listener has its own.
    The operator API shares this pool: give it about 2 more when `[api]` is on."""
    listen_dsn: str = ""
    """DSN for the LISTEN connection (which also holds the awake lock: both need a session of
    their own), straight to PostgreSQL when `dsn` goes through a pooler in transaction mode;
    empty means `dsn`."""
    pooler: str = "none"
    """What is between hookd and PostgreSQL on `dsn`: "none" (PostgreSQL itself, or a pooler in
    session mode) or "transaction" (a pooler in transaction mode, such as PgBouncer's
    `pool_mode = transaction`): then hookd prepares no named statements, leaves server sessions
    alone between transactions, and needs `listen_dsn`."""
    connect_timeout_s: float = 10.0
    """Seconds to wait for a new connection."""
    command_timeout_s: float = 30.0
    """Seconds a query may take before it is abandoned (bounds hangs on a dead TCP path)."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Claiming, leases, wake-ups and shutdown."""

    poll_interval_s: float = 1.0
    """Longest sleep between looks for work when no notification arrives (the polling fallback)."""
    idle_linger_s: float = 0.05
    """How long the daemon stays awake after claims come back empty, probing the outbox every
    `awake_poll_s`, before it gives the awake lock back and asks publishers for a NOTIFY: under
    steady load it never sleeps, so publishing costs no NOTIFY (docs/design-notes.md item 1)."""
    awake_poll_s: float = 0.001
    """While lingering: seconds between probes of the outbox (one index probe each), so a new
    event is seen within about this long without a NOTIFY."""
    idle_recheck_s: float = 0.025
    """One extra look for work this long after going to sleep: catches an event whose publisher
    tried the awake lock just before it was released (so sent no NOTIFY)."""
    claim_batch: int = 500
    """Most events (and due deliveries) claimed per query."""
    fan_out_max_deliveries: int = 5000
    """Most deliveries one fan-out statement creates: an event that matches more endpoints is
    fanned out in pieces of at most this many (resumed after a crash where the last piece
    ended), so no transaction grows with the number of endpoints."""
    max_in_flight: int = 1024
    """Most deliveries held by this process at once (queued locally or being sent)."""
    lease_s: float = 120.0
    """How long a claimed delivery stays ours; another daemon may take it after that."""
    flush_interval_s: float = 0.02
    """Longest time an outcome waits in memory before it is written back."""
    flush_batch: int = 1000
    """Outcomes that trigger an immediate write."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM: how long in-flight requests may finish before they are cancelled and released."""
    listener_check_interval_s: float = 2.0
    """How often the LISTEN connection proves it still receives notifications (a self-NOTIFY)."""
    listener_check_timeout_s: float = 2.0
    """How long the self-NOTIFY may take before the listener is declared dead and reconnected."""
    timer_tick_s: float = 0.05
    """Resolution of the retry timer wheel: a retry fires at most this late (plus a claim)."""
    retry_horizon_s: float = 300.0
    """Retries due within this many seconds are kept in the timer wheel; later ones are loaded
    from the database as they come near."""


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Outgoing requests."""

    connect_timeout_s: float = 5.0
    """Seconds to open a connection (DNS, TCP and TLS)."""
    total_timeout_s: float = 30.0
    """Seconds for a whole attempt, from asking for a connection to the end of the response."""
    per_host_limit: int = 64
    """Concurrent requests per origin (scheme, host, port); more are useless
    (docs/design-notes.md item 8)."""
    per_endpoint_limit: int = 32
    """Concurrent requests per endpoint (halved on 429, 503 and timeouts; grows back on success)."""
    max_concurrent_requests: int = 512
    """Concurrent requests in the whole process."""
    response_body_max_bytes: int = 4096
    """Bytes of each response body kept in the attempt log; a longer body ends the read."""
    user_agent: str = "hookd"
    """The User-Agent header sent with every request."""
    max_retry_after_s: float = 3600.0
    """Longest wait a `Retry-After` header (on 429 or 503) may impose before the next attempt."""
    disable_on_gone: bool = True
    """Disable an endpoint whose receiver answers 410 Gone (its deliveries are kept, paused)."""
    final_statuses: tuple[int, ...] = DEFAULT_FINAL_STATUSES
    """Statuses that end a delivery at once, dead-lettered without further attempts, because a
    retry cannot succeed (413: the same payload is too large every time). 400-599, except 408,
    425, 429 and 503 (they ask for a retry) and 410 (`disable_on_gone`). An endpoint's
    `final_statuses` setting replaces this list for that endpoint."""


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """The retry policy for failed attempts (see hookd/retry.py)."""

    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    """Delay before each attempt, in seconds; the first entry is the first attempt's delay."""
    jitter: float = 0.2
    """Each delay is moved by up to this fraction, up or down."""
    max_attempts: int = len(DEFAULT_SCHEDULE_S)
    """Attempts before a delivery is dead-lettered (state `failed`)."""
    max_age_s: float = 3 * 86400.0
    """No attempt is scheduled later than this many seconds after the delivery was created."""

    def policy(self) -> RetryPolicy:
        """The RetryPolicy these settings describe."""
        return RetryPolicy(
            schedule_s=self.schedule_s,
            jitter=self.jitter,
            max_attempts=self.max_attempts,
            max_age_s=self.max_age_s,
        )


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The circuit breaker per endpoint (see hookd/breaker.py)."""

    failure_threshold: int = 10
    """Consecutive failed attempts that open an endpoint's breaker."""
    cooldown_s: float = 30.0
    """Seconds an open breaker waits before one probe attempt."""
    max_cooldown_s: float = 600.0
    """Longest cool-down; it doubles after each failed probe."""

    def settings(self) -> BreakerSettings:
        """The BreakerSettings these values describe."""
        return BreakerSettings(self.failure_threshold, self.cooldown_s, self.max_cooldown_s)


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Where hookd may connect, and what endpoint URLs it accepts (see hookd/destinations.py)."""

    ssrf_guard: bool = True
    """Refuse loopback, private, link-local and other internal destinations unless allowed below."""
    allow_cidrs: tuple[str, ...] = ()
    """Address ranges opened on purpose, e.g. ["10.20.0.0/16", "127.0.0.1/32"]."""
    allow_hosts: tuple[str, ...] = ()
    """Host names opened on purpose (their addresses are not checked); "*.corp.example" for subdomains."""
    allow_http: bool = False
    """Accept plain-http endpoint URLs (otherwise https only)."""
    secret_key_file: str = ""
    """File holding the base64 key that encrypts secrets at rest (e.g. a systemd credential);
    empty: the `HOOKD_SECRET_KEY` environment variable, or no encryption."""

    def box(self) -> SecretBox:
        """The SecretBox for this configuration. Raises ConfigError for a bad key."""
        try:
            return SecretBox(load_key(self.secret_key_file or None))
        except SecretKeyError as exc:
            raise ConfigError(str(exc)) from None

    def policy(self) -> DestinationPolicy:
        """The DestinationPolicy these settings describe."""
        return DestinationPolicy(self.allow_cidrs, self.allow_hosts, enabled=self.ssrf_guard)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin HTTP server: /metrics, /healthz, /readyz."""

    enabled: bool = True
    """Serve the admin endpoints."""
    host: str = "127.0.0.1"
    """Address to bind; keep it on loopback unless a firewall guards it."""
    port: int = 9464
    """TCP port (0: any free port, logged at start)."""
    stats_interval_s: float = 5.0
    """How often backlog and pending figures are read from the database for metrics."""
    max_endpoint_labels: int = 50
    """Endpoints whose per-endpoint metrics carry their own `endpoint` label (the id), the first
    attempted first; the rest share `endpoint="other"`. Bounds the series count (about ten per
    endpoint); 0 puts every endpoint under "other"."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The operator HTTP API and web console (hookd/api.py, hookd/console.py).

    Served only when `tokens_file` is set (`hookd api-token add` makes it). The file is read at
    start (a missing or malformed one stops start-up) and again whenever it changes, so tokens
    can be added to a running daemon; until it holds one, every API call is a 401. Changes to
    this section need a restart.
    """

    host: str = "127.0.0.1"
    """Address to bind; keep it on loopback or behind a TLS-terminating proxy."""
    port: int = 8470
    """TCP port (0: any free port, logged at start)."""
    tokens_file: str = ""
    """File of hashed bearer tokens (see hookd/tokens.py); empty: the API is off."""
    secure_cookies: bool = False
    """Mark the console's session cookie Secure (set it when the console is reached over HTTPS)."""


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long finished history is kept (docs/retention.md). History is partitioned by UTC day
    (events and finished deliveries by the event's day, attempts by theirs), and a day goes as a
    whole, a drop of its partitions: kept at least the time given, at most a day longer. Open
    work (pending, retrying, paused) is never dropped, whatever its age."""

    enabled: bool = True
    """Drop history past the times below; false keeps everything (partitions are still created)."""
    delivered_keep_s: float = 604800.0
    """Seconds events, delivered deliveries and attempts are kept (7 days)."""
    dead_letter_keep_s: float = 2592000.0
    """Seconds dead letters (failed deliveries), with their events and attempts, are kept
    (30 days); they can be retried until then."""
    partitions_ahead: int = 3
    """Days of partitions created ahead of today. Events of a day without a partition (the
    daemon stopped longer than this) go to a default partition and move in when it is made."""
    check_interval_s: float = 3600.0
    """Seconds between maintenance steps (partitions ahead, drops); one daemon at a time runs one."""

    def keeps(self) -> tuple[float | None, float | None]:
        """(delivered_keep_s, dead_letter_keep_s) for a step; (None, None) keeps everything."""
        return (self.delivered_keep_s, self.dead_letter_keep_s) if self.enabled else (None, None)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging to stderr (journald takes it under systemd)."""

    level: str = "info"
    """One of debug, info, warning, error."""
    format: str = "text"
    """"text" (human-readable) or "json" (one JSON object per line)."""
    failed_attempts_per_s: float = 10.0
    """Most log lines per second about failed attempts; the rest are counted and summarised."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    log: LogConfig = field(default_factory=LogConfig)


_LEVELS = {"debug", "info", "warning", "error"}
POOLERS = ("none", "transaction")
"""The values of `database.pooler`."""


def _convert(where: str, value: Any, kind: Any) -> Any:
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return _convert(where, value, options[0])
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = {a for a in get_args(kind) if a is not Ellipsis}
        return tuple(_convert(f"{where}[{i}]", v, item) for i, v in enumerate(value))
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _section(name: str, cls: type[Any], raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}]: expected a table")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown setting (known: {', '.join(sorted(known))})")
    values = {k: _convert(f"{name}.{k}", v, hints[k]) for k, v in raw.items()}
    return cls(**values)


def _positive(where: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{where}: must be greater than 0, got {value}")


def validate(cfg: Config) -> Config:
    """Check ranges and relations between settings; return `cfg`.

    Raises:
        ConfigError: naming the first key that is wrong.
    """
    d, h = cfg.daemon, cfg.http
    for where, value in [
        ("database.pool_size", cfg.database.pool_size),
        ("database.connect_timeout_s", cfg.database.connect_timeout_s),
        ("database.command_timeout_s", cfg.database.command_timeout_s),
        ("daemon.poll_interval_s", d.poll_interval_s),
        ("daemon.idle_recheck_s", d.idle_recheck_s),
        ("daemon.idle_linger_s", d.idle_linger_s),
        ("daemon.awake_poll_s", d.awake_poll_s),
        ("daemon.claim_batch", d.claim_batch),
        ("daemon.fan_out_max_deliveries", d.fan_out_max_deliveries),
        ("daemon.max_in_flight", d.max_in_flight),
        ("daemon.lease_s", d.lease_s),
        ("daemon.flush_interval_s", d.flush_interval_s),
        ("daemon.flush_batch", d.flush_batch),
        ("daemon.listener_check_interval_s", d.listener_check_interval_s),
        ("daemon.listener_check_timeout_s", d.listener_check_timeout_s),
        ("http.connect_timeout_s", h.connect_timeout_s),
        ("http.total_timeout_s", h.total_timeout_s),
        ("http.per_host_limit", h.per_host_limit),
        ("http.per_endpoint_limit", h.per_endpoint_limit),
        ("http.response_body_max_bytes", h.response_body_max_bytes),
        ("http.max_concurrent_requests", h.max_concurrent_requests),
        ("http.max_retry_after_s", h.max_retry_after_s),
        ("daemon.timer_tick_s", d.timer_tick_s),
        ("daemon.retry_horizon_s", d.retry_horizon_s),
        ("breaker.failure_threshold", cfg.breaker.failure_threshold),
        ("breaker.cooldown_s", cfg.breaker.cooldown_s),
        ("breaker.max_cooldown_s", cfg.breaker.max_cooldown_s),
        ("retention.delivered_keep_s", cfg.retention.delivered_keep_s),
        ("retention.dead_letter_keep_s", cfg.retention.dead_letter_keep_s),
        ("retention.check_interval_s", cfg.retention.check_interval_s),
    ]:
        _positive(where, value)
    if d.shutdown_grace_s < 0:
        raise ConfigError(f"daemon.shutdown_grace_s: must be 0 or more, got {d.shutdown_grace_s}")
    if d.poll_interval_s > 60:
        raise ConfigError(f"daemon.poll_interval_s: at most 60 seconds, got {d.poll_interval_s}")
    if d.lease_s <= h.total_timeout_s + d.flush_interval_s:
        raise ConfigError(
            f"daemon.lease_s: must exceed http.total_timeout_s ({h.total_timeout_s}) so a lease "
            f"outlives every attempt, got {d.lease_s}"
        )
    if h.connect_timeout_s > h.total_timeout_s:
        raise ConfigError("http.connect_timeout_s: must not exceed http.total_timeout_s")
    try:
        check_final_statuses(h.final_statuses)
    except ValueError as exc:
        raise ConfigError(f"http.final_statuses: {exc}") from None
    try:
        cfg.security.policy()
    except ValueError as exc:
        raise ConfigError(f"security.allow_cidrs: {exc}") from None
    if cfg.log.format not in ("text", "json"):
        raise ConfigError(f"log.format: must be text or json, got {cfg.log.format!r}")
    if not 0 <= cfg.admin.port <= 65535:
        raise ConfigError(f"admin.port: must be 0-65535, got {cfg.admin.port}")
    if not 0 <= cfg.api.port <= 65535:
        raise ConfigError(f"api.port: must be 0-65535, got {cfg.api.port}")
    if cfg.database.pooler not in POOLERS:
        raise ConfigError(
            f"database.pooler: must be one of {', '.join(POOLERS)}, got {cfg.database.pooler!r}"
        )
    if cfg.database.pooler == "transaction" and not cfg.database.listen_dsn:
        raise ConfigError(
            'database.listen_dsn: must be set when database.pooler is "transaction": LISTEN and '
            "the awake lock need a session of their own, so give a DSN straight to PostgreSQL"
        )
    if not 1 <= cfg.retention.partitions_ahead <= 60:
        raise ConfigError(
            f"retention.partitions_ahead: must be 1-60 days, got {cfg.retention.partitions_ahead}"
        )
    _positive("admin.stats_interval_s", cfg.admin.stats_interval_s)
    if cfg.admin.max_endpoint_labels < 0:
        raise ConfigError(
            f"admin.max_endpoint_labels: must be 0 or more, got {cfg.admin.max_endpoint_labels}"
        )
    _positive("log.failed_attempts_per_s", cfg.log.failed_attempts_per_s)
    if cfg.log.level not in _LEVELS:
        raise ConfigError(
            f"log.level: must be one of {', '.join(sorted(_LEVELS))}, got {cfg.log.level!r}"
        )
    try:
        cfg.retry.policy()
    except ValueError as exc:
        raise ConfigError(f"retry: {exc}") from None
    return cfg


def from_mapping(raw: Mapping[str, Any]) -> Config:
    """Build and validate a Config from parsed TOML. Raises ConfigError."""
    sections: dict[str, Any] = {}
    kinds = {f.name: get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}
    for name, value in raw.items():
        if name not in kinds:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(sorted(kinds))})")
        sections[name] = _section(name, kinds[name], value)
    return validate(Config(**sections))


def load(path: str | os.PathLike[str] | None, dsn: str | None = None) -> Config:
    """Load the TOML file at `path` (None: defaults only) and apply the DSN override.

    The DSN comes from, in order: the `dsn` argument (`--dsn`), `HOOKD_DSN`, the file.

    Raises:
        ConfigError: unreadable file, TOML syntax error, unknown or invalid key, or no DSN at all.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such configuration file") from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    cfg = from_mapping(raw)
    override = dsn or os.environ.get("HOOKD_DSN")
    if override:
        cfg = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, dsn=override))
    if not cfg.database.dsn:
        raise ConfigError("database.dsn: not set (give it in the file, in HOOKD_DSN or with --dsn)")
    return cfg
