"""The tables of the settings file (`[redis]`, `[queue]`, `[worker]`, ...) and the bases of plugins' tables.

Each is a pydantic model that refuses unknown keys; `gopherq.core.settings` gathers them under the root `Settings`
and loads them from flags, the environment and the TOML file.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gopherq.core.errors import ConfigError
from gopherq.core.fairspec import KeyLimits, glob_match, parse_rate
from gopherq.core.keys import validate_queue_name
from gopherq.core.masking import DEFAULT_MASKED_PARAMS
from gopherq.core.sink_defaults import SINK_BATCH_SIZE, SINK_BUFFER_SIZE


class Section(BaseModel):
    """Base of every settings table: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class PluginSettings(Section):
    """Base of a plugin's settings table (`[plugins.<name>]`): unknown keys are errors, not silently ignored.
    Register the subclass with `gopherq_register_settings`."""


class RedisSettings(Section):
    """Where Redis is. With neither `url` nor `address`, GoPherQ runs an embedded redis-server of its own."""

    url: str | None = Field(None, description="redis://, rediss:// or unix:// URL")
    address: str | None = Field(None, description="host:port (the seed's REDIS_ADDRESS)")
    username: str | None = Field(None, description="ACL user (Redis 6+); with `password`")
    password: SecretStr | None = None
    db: int = Field(0, ge=0)
    cluster: bool = Field(False, description="connect with the Redis Cluster client")
    sentinels: list[str] = Field(default_factory=list, description="host:port of each Sentinel (Sentinel mode)")
    service_name: str = Field("mymaster", min_length=1, description="Sentinel mode: the monitored master's name")
    sentinel_username: str | None = Field(None, description="Sentinel mode: ACL user of the Sentinels themselves")
    sentinel_password: SecretStr | None = Field(None, description="Sentinel mode: password of the Sentinels")
    tls: bool = Field(False, description="TLS to `address` or the Sentinel-managed servers (a URL says rediss://)")
    tls_ca_file: str | None = Field(None, description="CA bundle that signed the server certificate (PEM)")
    tls_cert_file: str | None = Field(None, description="client certificate for mutual TLS (PEM)")
    tls_key_file: str | None = Field(None, description="private key of `tls_cert_file` (PEM)")
    tls_check_hostname: bool = Field(True, description="verify that the certificate names the host")
    data_dir: str = Field(".gopherq", description="embedded mode: data directory, relative to the config file")
    server_binary: str | None = Field(None, description="embedded mode: redis-server to run (default: PATH)")
    command_timeout: float | None = Field(None, gt=0, le=300, description="seconds a command may go unanswered")

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {entry!r}")
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSettings:
        if self.sentinels and (self.url or self.address or self.cluster):
            raise ValueError("sentinels: give either sentinels (with service_name) or url/address/cluster, not both")
        if self.tls_key_file and not self.tls_cert_file:
            raise ValueError("tls_key_file: needs tls_cert_file")
        return self

    @property
    def embedded(self) -> bool:
        return self.url is None and self.address is None and not self.sentinels

    @property
    def uses_tls(self) -> bool:
        """Whether connections to the data servers are encrypted (`rediss://`, or `tls = true`)."""
        return self.tls or (self.url or "").startswith("rediss://")


class QueueSettings(Section):
    """The queue this worker serves and the defaults of its tasks."""

    name: str = "my_tasks_queue"
    max_attempts: int = Field(5, ge=1, description="attempts per task unless the task says otherwise")
    backoff_min: float = Field(1.0, ge=0, description="smallest retry delay, seconds")
    backoff_max: float = Field(300.0, ge=0, description="largest retry delay, seconds")
    result_ttl: int = Field(86400, ge=1, description="how long result records are kept, seconds")
    dead_letter_max: int = Field(10000, ge=1, description="dead letters kept; the oldest are trimmed")
    max_horizon: int = Field(
        366 * 86400, ge=1, description="furthest ahead a task's eta or deadline may lie, and its longest unique_for, s"
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        try:
            return validate_queue_name(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class WorkerSettings(Section):
    """How one worker process runs tasks."""

    concurrency: int = Field(50, ge=1, le=100000, description="tasks in flight at once (the seed's NUM_WORKERS)")
    processes: int = Field(1, ge=1, le=256, description="worker processes started by `gopherq run`")
    batch_size: int = Field(200, ge=1, le=5000, description="most tasks claimed in one round trip")
    prefetch: int = Field(
        0, ge=0, le=100000, description="tasks claimed ahead of free slots, started as slots free (0: none)"
    )
    task_timeout: float = Field(60.0, gt=0, description="time limit of one attempt unless the task sets one")
    shutdown_timeout: float = Field(25.0, ge=0, description="grace period for running tasks on SIGTERM")
    lease_timeout: float = Field(15.0, gt=0, description="a task whose lease is not renewed this long is recovered")
    heartbeat_interval: float = Field(3.0, gt=0, description="how often leases and the worker heartbeat renew")
    reaper_interval: float = Field(2.0, gt=0, description="how often expired leases are looked for")
    promote_interval: float = Field(0.25, gt=0, description="how often due delayed tasks are moved to the queue")
    flow_reconcile_interval: float = Field(
        30.0, gt=0, description="how often open flows older than this are reconciled from their members' states"
    )
    fetch_timeout: float = Field(1.0, gt=0, le=10, description="blocking fetch timeout, seconds")
    max_payload_bytes: int = Field(1024 * 1024, ge=64, description="larger tasks are dead-lettered unparsed")
    max_recoveries: int = Field(3, ge=0, description="crash recoveries before a task is poison")
    priority_mode: Literal["strict", "weighted"] = Field(
        "strict", description="strict: a level is served only when the more urgent ones are empty; weighted: shares"
    )
    priority_weights: dict[str, int] = Field(
        default_factory=lambda: {"high": 6, "default": 3, "low": 1},
        description="weighted mode: relative share of batches of the high, default and low levels",
    )
    cancel_poll_interval: float = Field(
        0.5, gt=0, le=1.0, description="how often a running worker looks for cancel requests of its tasks, seconds"
    )

    @field_validator("priority_weights")
    @classmethod
    def _valid_weights(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - {"high", "default", "low"}
        if unknown:
            raise ValueError(f"unknown level {sorted(unknown)[0]!r}: the levels are high, default and low")
        if any(weight < 0 for weight in value.values()) or not any(value.values()):
            raise ValueError("weights must be >= 0 and at least one > 0")
        return {"high": 0, "default": 0, "low": 0, **value}


class LoggingSettings(Section):
    level: str = Field("INFO", description="log level of the gopherq loggers")

    @field_validator("level")
    @classmethod
    def _valid_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value


class MaskingSettings(Section):
    """What `gopherq.core.masking` hides wherever a task, result or event leaves the process."""

    headers: list[str] = Field(
        default_factory=list,
        description="header names masked besides Authorization, Proxy-Authorization, Cookie and Set-Cookie",
    )
    query_params: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MASKED_PARAMS), description="URL query parameters whose values are masked"
    )


class WebSettings(Section):
    """The dashboard and HTTP server of `gopherq web`. It binds loopback unless told otherwise, and a
    non-loopback bind needs `token` or `password` (it refuses to start without)."""

    host: str = Field("127.0.0.1", description="address to bind; anything but loopback needs token or password")
    port: int = Field(8765, ge=0, le=65535, description="TCP port (0: any free port)")
    token: SecretStr | None = Field(None, description="bearer token (API clients) and login token (browsers)")
    viewer_token: SecretStr | None = Field(
        None, description="read-only bearer and login token: reads every page and API answer, changes nothing (403)"
    )
    username: str = Field("admin", min_length=1, description="basic-auth user name (with `password`)")
    password: SecretStr | None = Field(None, description="basic-auth password; browsers get a login prompt")
    poll_interval: float = Field(2.0, ge=0.5, le=60, description="seconds between live updates of a page")
    session_ttl: int = Field(43200, ge=60, description="seconds a dashboard login lasts (logout ends it sooner)")

    @field_validator("token", "password", "viewer_token")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty (leave it out to disable)")
        return value

    @model_validator(mode="after")
    def _viewer_differs(self) -> WebSettings:
        if self.viewer_token is not None and self.token is not None:
            if self.viewer_token.get_secret_value() == self.token.get_secret_value():
                raise ValueError("viewer_token must differ from token")
        return self

    @property
    def auth_enabled(self) -> bool:
        return self.token is not None or self.password is not None or self.viewer_token is not None


class MetricsSettings(Section):
    """Prometheus metrics of each worker process, served on their own port (off unless `port` is set)."""

    port: int | None = Field(
        None, ge=1, le=65535, description="serve /metrics of each worker on this port (worker process i of N: port + i)"
    )
    host: str = Field("127.0.0.1", description="address the worker's metrics port binds")
    http_host_label: bool = Field(False, description="label HTTP responses by target host (bounded by http_hosts_max)")
    http_hosts_max: int = Field(20, ge=1, le=1000, description="distinct host labels kept; the rest count as 'other'")


class ApiSettings(Section):
    """The `/v1` HTTP enqueue API, served by `gopherq web` (and `gopherq api`) with the web server's authentication."""

    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest request body accepted; a larger one is answered 413"
    )
    max_batch: int = Field(10000, ge=1, description="most tasks in one POST")
    idempotency_window: int = Field(
        86400, ge=1, description="seconds a created task id is remembered: the same id again is not enqueued twice"
    )


class FairKeyRule(Section):
    """Weight and limits of the fair keys whose name matches `pattern` (a glob: `*` any run, `?` one character).
    The first matching rule applies; `gopherq keys set` overrides it for one key at run time."""

    pattern: str = Field(min_length=1, max_length=200, description="glob over fair key names, e.g. 'tenant-*'")
    weight: float = Field(1.0, gt=0, le=1_000_000, description="share of the claims among backlogged keys")
    concurrency: int = Field(0, ge=0, le=1_000_000, description="most running tasks of one key, all workers (0: none)")
    rate: float | None = Field(None, description="most tasks started per second per key: 5/s, 300/m, 10/h")
    burst: int = Field(1, ge=1, le=1_000_000, description="tasks allowed at once above the rate")
    ordered: bool = Field(False, description="one task of a key in flight at a time, in enqueue order")

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float | None:
        return parse_rate(value)

    def limits(self) -> KeyLimits:
        return KeyLimits(self.weight, self.concurrency, self.rate, self.burst, self.ordered)


class FairSettings(Section):
    """Fair keys (a task's `fair_key`): the weight of keys no rule names, and rules by key-name pattern."""

    default_weight: float = Field(
        1.0, gt=0, le=1_000_000, description="weight of keys no rule matches (and of keyless tasks)"
    )
    keys: list[FairKeyRule] = Field(default_factory=list, description="[[fair.keys]] rules; the first match applies")

    def limits_for(self, fair_key: str) -> KeyLimits:
        """What the settings give `fair_key` (before any run-time change)."""
        for rule in self.keys:
            if glob_match(rule.pattern, fair_key):
                return rule.limits()
        return KeyLimits(weight=self.default_weight)


class SinkSettings(PluginSettings):
    """Base for a sink plugin's settings table: every sink can be switched off and filtered the same way."""

    enabled: bool = True
    events: list[str] = Field(default_factory=lambda: ["*"], description="event-name globs; '!x' excludes")
    buffer_size: int = Field(
        SINK_BUFFER_SIZE, ge=1, description="events buffered for this sink; the oldest drop when full"
    )
    batch_size: int = Field(SINK_BATCH_SIZE, ge=1, description="most events handed to the sink at once")

    def register_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for the sink `register` callback."""
        return {"events": self.events, "buffer_size": self.buffer_size, "batch_size": self.batch_size}
