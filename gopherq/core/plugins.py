"""The plugin manager: finds plugins through the `gopherq` entry-point group, loads them, and collects what
they register (settings models, executors, sinks, commands), remembering which plugin registered what.

Built-in plugins are declared as entry points of the `gopherq` distribution exactly like third-party ones;
when running from a source tree that was never installed, they are registered directly as a fallback.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata as metadata
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
from pydantic import BaseModel

from gopherq.core import hookspecs
from gopherq.core.enqueuing import BeforeEnqueue, before_enqueue
from gopherq.core.errors import ConfigError, PluginError, TaskRejected
from gopherq.core.events import EventBus, Sink
from gopherq.core.executor import AttemptRunner, ExecutorEntry, run_attempt
from gopherq.core.plugin_info import PluginInfo, SinkEntry, describe_validation, one_line, plugin_label, warn_once
from gopherq.core.plugin_paths import LocalPlugin, configured_paths, find_local_plugins
from gopherq.core.settings import Settings, validate_section
from gopherq.core.sink_defaults import SINK_BATCH_SIZE, SINK_BUFFER_SIZE

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gopherq"

#: Built-in plugins, by entry-point name: the one list of them. pyproject.toml declares exactly these as the
#: `gopherq` entry points of the distribution (a test checks it); this copy decides what counts as built-in (always
#: loaded, whatever `load` pins) and registers them when running from a source tree that was never installed.
BUILTINS = {
    "http": "gopherq.plugins.http",
    "functions": "gopherq.plugins.functions",
    "logging": "gopherq.plugins.logging_sink",
    "webhook": "gopherq.plugins.webhook_sink",
    "stream": "gopherq.plugins.stream_sink",
    "metrics": "gopherq.plugins.metrics_sink",
    "otel": "gopherq.plugins.otel",
}

#: What `gopherq config` shows for the table of a plugin that is not loaded.
IGNORED_TABLE = "(ignored: the plugin is not loaded)"

#: Keys of the `[plugins]` table that are not plugin tables.
RESERVED_TABLES = frozenset({"disable", "load", "paths"})


class PluginManager:
    """Loads plugins and holds their registrations. One per process; build it with `load_plugins`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.executors: dict[str, ExecutorEntry] = {}
        self.sinks: dict[str, SinkEntry] = {}
        self.settings_models: dict[str, tuple[type[Any], str]] = {}
        #: Plugins found but not loaded (disabled, or left out by GOPHERQ_LOAD_PLUGINS).
        self.blocked: set[str] = set()
        #: Plugins disabled by `[plugins] disable` / GOPHERQ_DISABLE_PLUGINS: not even `add_plugin` loads them.
        self.disabled: set[str] = set()
        #: Objects added by `gopherq_register_hooks`, by their pluggy name -> the plugin that added them.
        self.owners: dict[str, str] = {}
        self.settings: Settings | None = None

    # -- discovery -------------------------------------------------------------------------------------------

    def discover(
        self, disabled: Iterable[str] = (), pinned: Iterable[str] | None = None, paths: Iterable[Path] = ()
    ) -> None:
        """Load every plugin of the entry-point group (built-ins always, third-party ones filtered by `pinned`),
        then the plugins of the folders in `paths` (see core/plugin_paths.py; named there, so always loaded),
        except those named in `disabled`.

        An entry point found twice with the same target (e.g. an editable install seen through two paths) is
        loaded once; two different plugins under one name stop start-up.
        """
        disabled = set(disabled)
        self.disabled |= disabled
        pinned_set = None if pinned is None else set(pinned)
        found: dict[str, list[metadata.EntryPoint]] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            same_name = found.setdefault(ep.name, [])
            if all(other.value != ep.value for other in same_name):
                same_name.append(ep)
        seen = set(found)
        for name, module_name in BUILTINS.items():
            if name in seen:
                continue
            if name in disabled:
                self.pm.set_blocked(name)
                self.blocked.add(name)
                continue
            self._add(name, importlib.import_module(module_name), None, None, True, module_name)
        # Built-ins first, so that a third-party plugin can replace what a built-in registered (replace=True).
        ordered = sorted(found.items(), key=lambda item: item[0] not in BUILTINS)
        for name, eps in ordered:
            ep = eps[0]
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            builtin = name in BUILTINS and ep.value == BUILTINS[name]
            if name in disabled or (pinned_set is not None and not builtin and name not in pinned_set):
                self.pm.set_blocked(name)
                self.blocked.add(name)
                continue
            if len(eps) > 1:
                others = "; ".join(
                    plugin_label(name, o.dist.name if o.dist else None, o.dist.version if o.dist else None, o.value)
                    for o in eps[1:]
                )
                raise PluginError(
                    f"{plugin_label(name, dist, version, ep.value)}: duplicate plugin name: also {others}"
                    f" (uninstall one, or disable '{name}')"
                )
            try:
                plugin = ep.load()
            except Exception as exc:
                label = plugin_label(name, dist, version, ep.value)
                raise PluginError(f"{label}: failed to import: {type(exc).__name__}: {one_line(str(exc))}") from None
            self._add(ep.name, plugin, dist, version, builtin, ep.value)
        local = find_local_plugins(paths)
        for found_locally in local:
            self._add_local(found_locally, disabled)
        seen |= {plugin.name for plugin in local}
        unknown = disabled - seen - set(BUILTINS)
        for name in sorted(unknown):
            close = difflib.get_close_matches(name, [*seen, *BUILTINS], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            warn_once(f"disabled plugin '{name}' is not installed{hint}")
        if pinned_set is not None:
            missing = pinned_set - seen
            if missing:
                raise PluginError(
                    f"plugins to load (GOPHERQ_LOAD_PLUGINS or plugins.load) are not installed: "
                    f"{', '.join(sorted(missing))}"
                    f" (installed: {', '.join(sorted(seen - set(BUILTINS))) or 'none'})"
                )

    def _add_local(self, plugin: LocalPlugin, disabled: set[str]) -> None:
        """Load a plugin found in a folder, unless disabled; its name may not be a loaded plugin's."""
        if plugin.name in disabled:
            self.pm.set_blocked(plugin.name)
            self.blocked.add(plugin.name)
            return
        label = plugin_label(plugin.name, None, None, plugin.target, plugin.origin)
        if plugin.name in self.info:
            raise PluginError(
                f"{label}: duplicate plugin name: '{plugin.name}' is already {self.info[plugin.name].label}"
                " (uninstall one, remove the folder from plugins.paths, or disable the name)"
            )
        if self.pm.is_blocked(plugin.name):  # an installed namesake left out by `load`: this one is asked for
            self.pm.unblock(plugin.name)
            self.blocked.discard(plugin.name)
        try:
            loaded = plugin.load()
        except Exception as exc:
            raise PluginError(f"{label}: failed to import: {type(exc).__name__}: {one_line(str(exc))}") from None
        self._add(plugin.name, loaded, None, None, False, plugin.target, plugin.origin)

    def add_plugin(self, name: str, plugin: Any, distribution: str | None = None, version: str | None = None) -> None:
        """Register a plugin object directly (tests and embedding; entry points are the normal way).

        A disabled name is skipped, as it would be from an entry point; a name left out by pinning is not
        (the caller asked for this plugin explicitly)."""
        if name in self.disabled:
            log.info("plugin '%s' is disabled: not loaded", name)
            return
        if self.pm.is_blocked(name):
            self.pm.unblock(name)
            self.blocked.discard(name)
        self._add(name, plugin, distribution, version, False, None)

    def _add(
        self,
        name: str,
        plugin: Any,
        dist: str | None,
        version: str | None,
        builtin: bool,
        target: str | None,
        path: Path | None = None,
    ) -> None:
        module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        info = PluginInfo(name, module, dist, version, builtin, target, path=None if path is None else str(path))
        if name in self.info:
            raise PluginError(f"{info.label}: duplicate plugin name: '{name}' is already {self.info[name].label}")
        try:
            registered = self.pm.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(f"{info.label}: cannot be registered: {one_line(str(exc))}") from None
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{info.label}: {describe_validation(exc)}") from None
        if registered is None:  # blocked: pluggy ignores it
            return
        unknown = [caller.name for caller in self.pm.get_hookcallers(plugin) or [] if caller.spec is None]
        if unknown:
            self.pm.unregister(plugin)
            close = difflib.get_close_matches(unknown[0], self.hook_names(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PluginError(f"{info.label}: implements unknown hook {unknown[0]}{hint}")
        self.info[name] = info
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])

    def hook_names(self) -> list[str]:
        """The names of every hook spec."""
        return sorted(name for name in dir(hookspecs) if name.startswith("gopherq_"))

    def _impls(self, hook_name: str) -> list[tuple[str, Callable[..., Any], tuple[str, ...]]]:
        """(plugin name, function, argument names) of each implementation, in registration order."""
        caller = getattr(self.pm.hook, hook_name)
        return [
            (self.owners.get(impl.plugin_name, impl.plugin_name), impl.function, tuple(impl.argnames))
            for impl in caller.get_hookimpls()
        ]

    def hook_caller(self, hook_name: str) -> Any:
        """The hook's caller, or None when no plugin implements it: a per-task hook is then skipped entirely
        (pluggy's call costs about a microsecond even with nothing to call)."""
        caller = getattr(self.pm.hook, hook_name)
        return caller if caller.get_hookimpls() else None

    def _call(
        self, hook_name: str, plugin: str, func: Callable[..., Any], argnames: tuple[str, ...], **kwargs: Any
    ) -> Any:
        """Call one implementation with the arguments it asks for; its failure names the plugin."""
        try:
            return func(**{name: kwargs[name] for name in argnames if name in kwargs})
        except (PluginError, ConfigError):
            raise
        except Exception as exc:
            message = one_line(f"{type(exc).__name__}: {exc}")
            raise PluginError(f"{self.info[plugin].label}: {hook_name} failed: {message}") from None

    # -- registrations ---------------------------------------------------------------------------------------

    def configure(self, settings: Settings) -> None:
        """Collect settings models and validate each plugin's `[plugins.<name>]` table into `settings`."""
        self.settings = settings
        for plugin, func, argnames in self._impls("gopherq_register_settings"):

            def register(model: type[Any], name: str | None = None, *, _plugin: str = plugin) -> None:
                table = name or _plugin
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise PluginError(
                        f"{self.info[_plugin].label}: settings for '{table}' must be a pydantic model class "
                        f"(a gopherq.PluginSettings subclass), got {model!r}"
                    )
                if table in self.settings_models:
                    owner = self.settings_models[table][1]
                    raise PluginError(
                        f"{self.info[_plugin].label}: settings table '{table}' is already registered by '{owner}'"
                    )
                self.settings_models[table] = (model, _plugin)
                self.info[_plugin].settings.append(table)

            self._call("gopherq_register_settings", plugin, func, argnames, register=register)
        for table, (model, _) in self.settings_models.items():
            settings.set_plugin(
                table, validate_section(model, settings.plugin_table(table), settings, ("plugins", table))
            )
        for table in settings.plugins:
            if table in RESERVED_TABLES or table in self.settings_models:
                continue
            if table in self.blocked:
                # Nobody validates or reads it; replaced so that `gopherq config` cannot print a secret from it.
                settings.plugins[table] = IGNORED_TABLE
                continue
            close = difflib.get_close_matches(table, list(self.settings_models), n=1)
            hint = f" (did you mean 'plugins.{close[0]}'?)" if close else ""
            where = settings.config_path or "settings"
            raise ConfigError(f"{where}: plugins.{table}: no loaded plugin has settings named '{table}'{hint}")

    def register_hooks(self, settings: Settings) -> None:
        """Let each plugin add hook implementations that its settings call for (`gopherq_register_hooks`)."""
        for plugin, func, argnames in self._impls("gopherq_register_hooks"):

            def register(obj: object, *, _plugin: str = plugin) -> None:
                info = self.info[_plugin]
                name = f"{_plugin}:{len([o for o in self.owners.values() if o == _plugin]) + 1}"
                try:
                    self.pm.register(obj, name=name)
                except (ValueError, pluggy.PluginValidationError) as exc:
                    raise PluginError(f"{info.label}: cannot register hooks of {obj!r}: {one_line(str(exc))}") from None
                unknown = [caller.name for caller in self.pm.get_hookcallers(obj) or [] if caller.spec is None]
                if unknown:
                    self.pm.unregister(obj)
                    raise PluginError(f"{info.label}: implements unknown hook {unknown[0]}")
                self.owners[name] = _plugin
                info.hooks = sorted({*info.hooks, *(caller.name for caller in self.pm.get_hookcallers(obj) or [])})

            self._call("gopherq_register_hooks", plugin, func, argnames, register=register, settings=settings)

    @functools.cached_property
    def run_attempt(self) -> AttemptRunner:
        """How a worker runs an attempt: `run_attempt` without its own time limit (the worker's watchdog enforces
        it), wrapped by the plugins (`attempt_runner`). Built once, on first use."""
        base = functools.partial(run_attempt, enforce_timeout=False)
        return base if self.settings is None else self.attempt_runner(base, self.settings)

    @functools.cached_property
    def before_enqueue(self) -> BeforeEnqueue | None:
        """The plugins' `gopherq_before_enqueue` (see core/enqueuing.py), or None when none implements it."""
        return before_enqueue(self)

    def attempt_runner(self, run: AttemptRunner, settings: Settings) -> AttemptRunner:
        """`run` wrapped by every plugin's `gopherq_wrap_attempt` (once, at start-up); `run` itself when none
        wraps it, so attempts cost nothing more. Whoever awaits the result turns a wrapper's own exception into a
        failed attempt (`executor.wrapper_failed`): the worker does, around the call, with no frame in between."""
        wrapped = run
        for plugin, func, argnames in self._impls("gopherq_wrap_attempt"):
            outer = self._call("gopherq_wrap_attempt", plugin, func, argnames, run=wrapped, settings=settings)
            if outer is not None:
                wrapped = outer
        return wrapped

    def task_links(self, task: Any, settings: Settings) -> list[tuple[str, str]]:
        """The links plugins offer for a task page (`gopherq_task_links`); one plugin's failure is logged."""
        links: list[tuple[str, str]] = []
        for plugin, func, argnames in self._impls("gopherq_task_links"):
            try:
                links += self._call("gopherq_task_links", plugin, func, argnames, task=task, settings=settings) or []
            except PluginError as exc:
                log.warning("%s", exc)
        return links

    def register_executors(self, settings: Settings) -> None:
        for plugin, func, argnames in self._impls("gopherq_register_executors"):

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

            self._call("gopherq_register_executors", plugin, func, argnames, register=register, settings=settings)

    def register_sinks(self, settings: Settings) -> None:
        for plugin, func, argnames in self._impls("gopherq_register_sinks"):

            def register(
                name: str,
                sink: Sink,
                *,
                events: Iterable[str] = ("*",),
                buffer_size: int = SINK_BUFFER_SIZE,
                batch_size: int = SINK_BATCH_SIZE,
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
                if isinstance(events, str):
                    events = (events,)
                if buffer_size < 1 or batch_size < 1:
                    raise PluginError(f"{label}: sink '{name}': buffer_size and batch_size must be at least 1")
                self.sinks[name] = SinkEntry(name, sink, _plugin, tuple(events), buffer_size, batch_size)
                self.info[_plugin].sinks.append(name)

            self._call("gopherq_register_sinks", plugin, func, argnames, register=register, settings=settings)

    def register_commands(self, cli: Any) -> None:
        """Let each plugin add commands to the click group `cli`; replacing an existing command is an error, one
        the group lists but has not loaded yet (the `gopherq` group loads its own on first use) included."""
        for plugin, func, argnames in self._impls("gopherq_register_commands"):
            before = dict(getattr(cli, "commands", {}))
            taken = {*before, *cli.list_commands(None)} if hasattr(cli, "list_commands") else set(before)
            self._call("gopherq_register_commands", plugin, func, argnames, cli=cli)
            after = dict(getattr(cli, "commands", {}))
            replaced = sorted(name for name in taken if after.get(name) is not before.get(name))
            if replaced:
                raise PluginError(f"{self.info[plugin].label}: replaces the command '{replaced[0]}'")
            self.info[plugin].commands.extend(sorted(set(after) - set(before)))

    def attach_sinks(self, bus: EventBus) -> None:
        for entry in self.sinks.values():
            bus.add_sink(entry.name, entry.sink, entry.events, entry.buffer_size, entry.batch_size)

    async def call_lifecycle(self, hook_name: str, worker: hookspecs.WorkerView) -> None:
        """Run `gopherq_startup`/`gopherq_shutdown` of every plugin; one's failure is logged, not raised."""
        for plugin, func, argnames in self._impls(hook_name):
            try:
                result = func(**({"worker": worker} if "worker" in argnames else {}))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s: %s failed", self.info[plugin].label, hook_name)

    def executor(self, task_type: str) -> ExecutorEntry | None:
        return self.executors.get(task_type)

    def no_executor(self, task_type: str) -> TaskRejected:
        """The rejection of a task whose type no loaded plugin runs, the same wherever it is found (client, HTTP
        API, worker, schedules, test kit): what is registered, and where executors come from."""
        known = ", ".join(sorted(self.executors)) or "none"
        hint = "executors come from plugins: see `gopherq plugins`, and [plugins] load, disable and paths"
        if self.blocked:
            hint = f"installed but not loaded: {', '.join(sorted(self.blocked))}; {hint}"
        return TaskRejected("unknown_type", f"no executor for task type {task_type!r} (registered: {known}; {hint})")


def load_plugins(
    settings: Settings,
    *,
    extra: Mapping[str, Any] | None = None,
    sinks: bool = False,
    pinned: Iterable[str] | None = None,
) -> PluginManager:
    """Discover plugins, validate their settings and register their executors (and sinks, for a worker).

    `extra` adds plugin objects by name without entry points (tests, embedding); `pinned` replaces the
    settings' list of third-party plugins to load (gopherq.testing loads only the plugin under test).
    """
    manager = PluginManager()
    manager.discover(
        settings.disabled_plugins, settings.pinned_plugins if pinned is None else pinned, configured_paths(settings)
    )
    for name, plugin in (extra or {}).items():
        manager.add_plugin(name, plugin)
    manager.configure(settings)
    manager.register_hooks(settings)
    manager.register_executors(settings)
    if sinks:
        manager.register_sinks(settings)
    return manager
