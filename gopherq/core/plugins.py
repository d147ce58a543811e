"""The plugin manager: finds plugins through the `gopherq` entry-point group, loads them, and collects what
they register (settings models, executors, sinks, commands), remembering which plugin registered what.

Built-in plugins are declared as entry points of the `gopherq` distribution exactly like third-party ones;
when running from a source tree that was never installed, they are registered directly as a fallback.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from gopherq.core import hookspecs
from gopherq.core.errors import ConfigError, PluginError
from gopherq.core.events import EventBus, Sink
from gopherq.core.executor import ExecutorEntry
from gopherq.core.settings import Settings, validate_section

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gopherq"

#: Built-in plugins, by entry-point name; used only when the distribution's entry points are not installed.
BUILTINS = {"http": "gopherq.plugins.http", "logging": "gopherq.plugins.logging_sink"}

#: Keys of the `[plugins]` table that are not plugin tables.
RESERVED_TABLES = frozenset({"disable", "load"})


@dataclass
class PluginInfo:
    """What `gopherq plugins` shows about one plugin."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    executors: list[str] = field(default_factory=list)
    sinks: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        dist = f"{self.distribution} {self.version}" if self.distribution else "no distribution"
        return f"plugin '{self.name}' ({dist})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "executors": self.executors,
            "sinks": self.sinks,
            "settings": self.settings,
            "commands": self.commands,
        }


@dataclass
class SinkEntry:
    name: str
    sink: Sink
    plugin: str
    events: tuple[str, ...]
    buffer_size: int
    batch_size: int


class PluginManager:
    """Loads plugins and holds their registrations. One per process; build it with `load_plugins`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.executors: dict[str, ExecutorEntry] = {}
        self.sinks: dict[str, SinkEntry] = {}
        self.settings_models: dict[str, tuple[type[Any], str]] = {}

    # -- discovery -------------------------------------------------------------------------------------------

    def discover(self, disabled: Iterable[str] = (), pinned: Iterable[str] | None = None) -> None:
        """Load every plugin of the entry-point group (built-ins always, third-party ones filtered by `pinned`),
        except those named in `disabled`."""
        disabled = set(disabled)
        pinned_set = None if pinned is None else set(pinned)
        seen: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist else None
            builtin = ep.name in BUILTINS and ep.value == BUILTINS[ep.name]
            if ep.name in disabled or (pinned_set is not None and not builtin and ep.name not in pinned_set):
                self.pm.set_blocked(ep.name)
                continue
            version = ep.dist.version if ep.dist else None
            label = f"plugin '{ep.name}' (distribution {dist or '?'} {version or ''}, entry point {ep.value})"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"{label}: failed to import: {type(exc).__name__}: {exc}") from None
            self._add(ep.name, plugin, dist, version, builtin)
        for name, module_name in BUILTINS.items():
            if name not in seen and name not in disabled:
                self._add(name, importlib.import_module(module_name), None, None, True)
        if pinned_set is not None:
            missing = pinned_set - seen
            if missing:
                raise PluginError(
                    f"GOPHERQ_LOAD_PLUGINS names plugins that are not installed: {', '.join(sorted(missing))}"
                )

    def add_plugin(self, name: str, plugin: Any, distribution: str | None = None, version: str | None = None) -> None:
        """Register a plugin object directly (tests and embedding; entry points are the normal way)."""
        self._add(name, plugin, distribution, version, False)

    def _add(self, name: str, plugin: Any, dist: str | None, version: str | None, builtin: bool) -> None:
        module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        info = PluginInfo(name, module, dist, version, builtin)
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(f"{info.label}: cannot be registered: {exc}") from None
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{info.label}: {exc}") from None
        self.info[name] = info
        for impl_name in dir(plugin):
            if impl_name.startswith("gopherq_") and self.pm.parse_hookimpl_opts(plugin, impl_name) is not None:
                if impl_name not in self.pm.hook.__dict__:
                    close = difflib.get_close_matches(impl_name, list(self.pm.hook.__dict__), n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    raise PluginError(f"{info.label}: implements unknown hook {impl_name}{hint}")
                info.hooks.append(impl_name)

    def _impls(self, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
        caller = getattr(self.pm.hook, hook_name)
        return [(impl.plugin_name, impl.function) for impl in reversed(caller.get_hookimpls())]

    def _call(self, hook_name: str, plugin: str, func: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return func(**kwargs)
        except (PluginError, ConfigError):
            raise
        except Exception as exc:
            raise PluginError(f"{self.info[plugin].label}: {hook_name} failed: {type(exc).__name__}: {exc}") from None

    # -- registrations ---------------------------------------------------------------------------------------

    def configure(self, settings: Settings) -> None:
        """Collect settings models and validate each plugin's `[plugins.<name>]` table into `settings`."""
        for plugin, func in self._impls("gopherq_register_settings"):

            def register(model: type[Any], name: str | None = None, *, _plugin: str = plugin) -> None:
                table = name or _plugin
                if table in self.settings_models:
                    owner = self.settings_models[table][1]
                    raise PluginError(
                        f"{self.info[_plugin].label}: settings table '{table}' is already registered by '{owner}'"
                    )
                self.settings_models[table] = (model, _plugin)
                self.info[_plugin].settings.append(table)

            self._call("gopherq_register_settings", plugin, func, register=register)
        for table, (model, _) in self.settings_models.items():
            settings.set_plugin(
                table, validate_section(model, settings.plugin_table(table), settings, ("plugins", table))
            )
        blocked = {name for name, plugin in self.pm.list_name_plugin() if plugin is None}
        for table in settings.plugins:
            if table in RESERVED_TABLES or table in self.settings_models or table in blocked:
                continue
            close = difflib.get_close_matches(table, list(self.settings_models), n=1)
            hint = f" (did you mean 'plugins.{close[0]}'?)" if close else ""
            where = settings.config_path or "settings"
            raise ConfigError(f"{where}: plugins.{table}: no loaded plugin has settings named '{table}'{hint}")

    def register_executors(self, settings: Settings) -> None:
        for plugin, func in self._impls("gopherq_register_executors"):

            def register(name: str, executor: Any, *, replace: bool = False, _plugin: str = plugin) -> None:
                label = self.info[_plugin].label
                if name in self.executors and not replace:
                    owner = self.executors[name].plugin
                    raise PluginError(
                        f"{label}: executor '{name}' is already registered by plugin '{owner}' "
                        "(pass replace=True to override)"
                    )
                try:
                    self.executors[name] = ExecutorEntry(name, executor, _plugin)
                except TypeError as exc:
                    raise PluginError(f"{label}: {exc}") from None
                self.info[_plugin].executors.append(name)

            self._call("gopherq_register_executors", plugin, func, register=register, settings=settings)

    def register_sinks(self, settings: Settings) -> None:
        for plugin, func in self._impls("gopherq_register_sinks"):

            def register(
                name: str,
                sink: Sink,
                *,
                events: Iterable[str] = ("*",),
                buffer_size: int = 10000,
                batch_size: int = 100,
                replace: bool = False,
                _plugin: str = plugin,
            ) -> None:
                label = self.info[_plugin].label
                if name in self.sinks and not replace:
                    raise PluginError(
                        f"{label}: sink '{name}' is already registered by plugin '{self.sinks[name].plugin}'"
                    )
                if not callable(getattr(sink, "handle", None)):
                    raise PluginError(f"{label}: sink '{name}' has no handle(events) method")
                self.sinks[name] = SinkEntry(name, sink, _plugin, tuple(events), buffer_size, batch_size)
                self.info[_plugin].sinks.append(name)

            self._call("gopherq_register_sinks", plugin, func, register=register, settings=settings)

    def register_commands(self, cli: Any) -> None:
        for plugin, func in self._impls("gopherq_register_commands"):
            before = set(getattr(cli, "commands", {}))
            self._call("gopherq_register_commands", plugin, func, cli=cli)
            self.info[plugin].commands.extend(sorted(set(getattr(cli, "commands", {})) - before))

    def attach_sinks(self, bus: EventBus) -> None:
        for entry in self.sinks.values():
            bus.add_sink(entry.name, entry.sink, entry.events, entry.buffer_size, entry.batch_size)

    async def call_lifecycle(self, hook_name: str, worker: Any) -> None:
        """Run `gopherq_startup`/`gopherq_shutdown` of every plugin; one's failure is logged, not raised."""
        for plugin, func in self._impls(hook_name):
            try:
                result = func(worker=worker)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s: %s failed", self.info[plugin].label, hook_name)

    def executor(self, task_type: str) -> ExecutorEntry | None:
        return self.executors.get(task_type)


def load_plugins(settings: Settings, *, extra: dict[str, Any] | None = None, sinks: bool = False) -> PluginManager:
    """Discover plugins, validate their settings and register their executors (and sinks, for a worker).

    `extra` adds plugin objects by name without entry points (tests, embedding).
    """
    manager = PluginManager()
    manager.discover(settings.disabled_plugins, settings.pinned_plugins)
    for name, plugin in (extra or {}).items():
        manager.add_plugin(name, plugin)
    manager.configure(settings)
    manager.register_executors(settings)
    if sinks:
        manager.register_sinks(settings)
    return manager
