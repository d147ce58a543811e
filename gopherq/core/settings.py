"""Settings: the root model, and loading it from CLI flags, the environment and a TOML file.

Precedence, highest first: CLI flags, `GOPHERQ_*` variables (`__` nests: `GOPHERQ_WORKER__CONCURRENCY=50`),
the seed's variables (`REDIS_ADDRESS`, `REDIS_PASSWORD`, `REDIS_DB`, `QUEUE_NAME`, `NUM_WORKERS`), the TOML
file given with `-c`, defaults. Every error becomes one `ConfigError` line naming the key and where the bad
value came from (file, variable or flag), with a did-you-mean for unknown keys. The tables themselves are in
`gopherq.core.sections`.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from gopherq.core.errors import ConfigError
from gopherq.core.masking import Masker
from gopherq.core.schedules import Schedule
from gopherq.core.sections import (
    ApiSettings,
    FairSettings,
    LoggingSettings,
    MaskingSettings,
    MetricsSettings,
    QueueSettings,
    RedisSettings,
    WebSettings,
    WorkerSettings,
)

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
    fair: FairSettings = FairSettings()
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
