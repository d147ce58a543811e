"""Settings: pydantic models, and loading them from CLI flags, the environment and a TOML file.

Precedence, highest first: CLI flags, `GOPHERQ_*` variables (`__` nests: `GOPHERQ_WORKER__CONCURRENCY=50`),
the seed's variables (`REDIS_ADDRESS`, `REDIS_PASSWORD`, `REDIS_DB`, `QUEUE_NAME`, `NUM_WORKERS`), the TOML
file given with `-c`, defaults. Every error becomes one `ConfigError` line naming the key and where the bad
value came from (file, variable or flag), with a did-you-mean for unknown keys.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from gopherq.core.errors import ConfigError
from gopherq.core.events import SINK_BATCH_SIZE, SINK_BUFFER_SIZE
from gopherq.core.keys import validate_queue_name
from gopherq.core.masking import DEFAULT_MASKED_PARAMS, Masker
from gopherq.core.schedules import Schedule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_PREFIX = "GOPHERQ_"

#: The seed project's variables and where each lands in the settings tree.
SEED_ENV: dict[str, tuple[str, ...]] = {
    "REDIS_ADDRESS": ("redis", "address"),
    "REDIS_PASSWORD": ("redis", "password"),
    "REDIS_DB": ("redis", "db"),
    "QUEUE_NAME": ("queue", "name"),
    "NUM_WORKERS": ("worker", "concurrency"),
}

#: Plugin-selection variables (comma-separated names) and where each lands.
PLUGIN_ENV: dict[str, tuple[str, ...]] = {
    "GOPHERQ_DISABLE_PLUGINS": ("plugins", "disable"),
    "GOPHERQ_LOAD_PLUGINS": ("plugins", "load"),
    "GOPHERQ_PLUGIN_PATHS": ("plugins", "paths"),
}


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
    task_timeout: float = Field(60.0, gt=0, description="time limit of one attempt unless the task sets one")
    shutdown_timeout: float = Field(25.0, ge=0, description="grace period for running tasks on SIGTERM")
    lease_timeout: float = Field(15.0, gt=0, description="a task whose lease is not renewed this long is recovered")
    heartbeat_interval: float = Field(3.0, gt=0, description="how often leases and the worker heartbeat renew")
    reaper_interval: float = Field(2.0, gt=0, description="how often expired leases are looked for")
    promote_interval: float = Field(0.25, gt=0, description="how often due delayed tasks are moved to the queue")
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
    username: str = Field("admin", min_length=1, description="basic-auth user name (with `password`)")
    password: SecretStr | None = Field(None, description="basic-auth password; browsers get a login prompt")
    poll_interval: float = Field(2.0, ge=0.5, le=60, description="seconds between live updates of a page")
    session_ttl: int = Field(43200, ge=60, description="seconds a dashboard login lasts (logout ends it sooner)")

    @field_validator("token", "password")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty (leave it out to disable)")
        return value

    @property
    def auth_enabled(self) -> bool:
        return self.token is not None or self.password is not None


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


class Settings(BaseSettings):
    """All of GoPherQ's settings. `plugins` holds `disable`, `load`, `paths` and one raw table per plugin; each
    plugin's table is validated against the model the plugin registers (see core.plugins)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    redis: RedisSettings = RedisSettings()
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()
    logging: LoggingSettings = LoggingSettings()
    masking: MaskingSettings = MaskingSettings()
    web: WebSettings = WebSettings()
    metrics: MetricsSettings = MetricsSettings()
    api: ApiSettings = ApiSettings()
    schedules: list[Schedule] = Field(default_factory=list)
    plugins: dict[str, Any] = Field(default_factory=dict)

    _config_path: Path | None = PrivateAttr(None)
    _plugin_settings: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        layers = _LAYERS.get() or {}
        environ = layers.get("environ")
        return (
            init_settings,
            env_settings if environ is None else _EnvSource(settings_cls, environ),
            _DictSource(settings_cls, layers.get("aliases", {})),
            _DictSource(settings_cls, layers.get("toml", {})),
        )

    @property
    def config_path(self) -> Path | None:
        """Where the TOML file was (None when settings came from elsewhere); relative paths resolve against it."""
        return self._config_path

    @property
    def base_dir(self) -> Path:
        return self.config_path.parent if self.config_path else Path.cwd()

    @property
    def data_dir(self) -> Path:
        return (self.base_dir / self.redis.data_dir).resolve()

    @property
    def disabled_plugins(self) -> list[str]:
        return _name_list(self.plugins.get("disable"))

    @property
    def pinned_plugins(self) -> list[str] | None:
        value = self.plugins.get("load")
        return None if value is None else _name_list(value)

    def plugin(self, name: str) -> Any:
        """A plugin's validated settings (the model it registered), or None when it registered none."""
        return self._plugin_settings.get(name)

    def set_plugin(self, name: str, value: BaseModel) -> None:
        self._plugin_settings[name] = value

    def plugin_table(self, name: str) -> dict[str, Any]:
        table = self.plugins.get(name, {})
        return table if isinstance(table, dict) else {}

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, with every secret masked (for `gopherq config`)."""
        data = self.model_dump(mode="json")
        for name, value in self._plugin_settings.items():
            data["plugins"][name] = value.model_dump(mode="json")
        data["schedules"] = Masker.from_settings(self).value(data["schedules"])  # their tasks' headers and URLs
        data["redis"]["password"] = "**********" if self.redis.password else None
        data["redis"]["sentinel_password"] = "**********" if self.redis.sentinel_password else None
        if self.redis.url:
            data["redis"]["url"] = mask_url(self.redis.url)
        return data


def _name_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def mask_url(url: str) -> str:
    """Hide the password of a redis:// URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:**********@{host}"


class _DictSource(PydanticBaseSettingsSource):
    """A settings source that returns a prepared nested dict (the TOML file, or the alias variables)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class _EnvSource(EnvSettingsSource):
    """The `GOPHERQ_*` variables of the mapping given to `load_settings`, which is not always `os.environ`
    (tests and embedding applications pass their own, and must not see the process's variables)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {(key if self.case_sensitive else key.lower()): value for key, value in self._environ.items()}


_LAYERS: ContextVar[dict[str, Any] | None] = ContextVar("gopherq_settings_layers", default=None)


def _nest(path: tuple[str, ...], value: Any, into: dict[str, Any]) -> None:
    node = into
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def _alias_values(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The seed's and the plugin-selection variables, nested, with the variable each value came from."""
    data: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for table in (SEED_ENV, PLUGIN_ENV):
        for var, path in table.items():
            if var in environ:
                _nest(path, environ[var], data)
                origin[path] = var
    return data, origin


def load_settings(
    config: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings; raises ConfigError with one line naming the bad key and its source."""
    environ = os.environ if environ is None else environ
    path = Path(config) if config is not None else None
    toml_data = read_toml(path) if path is not None else {}
    aliases, alias_origin = _alias_values(environ)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    token = _LAYERS.set({"toml": toml_data, "aliases": aliases, "environ": environ})
    try:
        settings = Settings(**flags)
    except ValidationError as exc:
        sources = _Sources(path, toml_data, aliases, alias_origin, flags, environ)
        raise ConfigError(describe_validation_error(exc, Settings, sources)) from None
    finally:
        _LAYERS.reset(token)
    settings._config_path = path.resolve() if path is not None else None
    return settings


class _Sources:
    """Finds which source a settings key came from, so an error can name it."""

    def __init__(
        self,
        path: Path | None,
        toml_data: dict[str, Any],
        aliases: dict[str, Any],
        alias_origin: dict[tuple[str, ...], str],
        flags: dict[str, Any],
        environ: Mapping[str, str],
    ) -> None:
        self.path, self.toml_data, self.aliases = path, toml_data, aliases
        self.alias_origin, self.flags, self.environ = alias_origin, flags, environ

    def origin(self, loc: tuple[str, ...]) -> str:
        if loc and loc[0] in self.flags:
            return "command line"
        for depth in range(len(loc), 0, -1):
            name = ENV_PREFIX + "__".join(loc[:depth]).upper()
            if name in self.environ:
                return f"environment variable {name}"
        for depth in range(len(loc), 0, -1):
            if loc[:depth] in self.alias_origin:
                return f"environment variable {self.alias_origin[loc[:depth]]}"
        return str(self.path) if self.path is not None else "settings"


def _field_names(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """The valid keys of the table at `loc` (for did-you-mean)."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def describe_validation_error(
    exc: ValidationError, model: type[BaseModel], sources: _Sources | None = None, prefix: tuple[str, ...] = ()
) -> str:
    """One line for the first error: `<source>: <key>: <problem>`."""
    error = exc.errors()[0]
    loc = prefix + tuple(str(part) for part in error["loc"])
    key = ".".join(loc) or "(top level)"
    where = sources.origin(loc) if sources is not None else "settings"
    if error["type"] == "extra_forbidden":
        valid = _field_names(model, tuple(str(p) for p in error["loc"][:-1]))
        close = difflib.get_close_matches(str(error["loc"][-1]), valid, n=1)
        hint = f" (did you mean '{'.'.join((*loc[:-1], close[0]))}'?)" if close else ""
        return f"{where}: {key}: unknown key{hint}"
    got = error.get("input")
    secret = any(word in key.lower() for word in ("secret", "password", "token", "headers"))
    shown = "" if isinstance(got, (dict, list)) or secret else f" (got {got!r})"
    return f"{where}: {key}: {error['msg']}{shown}"


def validate_section(
    model: type[BaseModel], data: dict[str, Any], settings: Settings, loc: tuple[str, ...]
) -> BaseModel:
    """Validate a plugin's table with the same one-line errors as the core settings."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        environ = os.environ
        aliases, alias_origin = _alias_values(environ)
        sources = _Sources(settings.config_path, {}, aliases, alias_origin, {}, environ)
        raise ConfigError(describe_validation_error(exc, model, sources, prefix=loc)) from None


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
