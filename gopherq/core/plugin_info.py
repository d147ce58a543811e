"""What the plugin manager remembers of each plugin (what `gopherq plugins` lists) and how its messages name a
plugin: one line each, naming the distribution and entry point, each warning once per process."""

from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from gopherq.core import hookspecs
from gopherq.core.events import Sink

log = logging.getLogger("gopherq.core.plugins")  # the plugin manager's log lines, under its name


@dataclass
class PluginInfo:
    """What `gopherq plugins` shows about one plugin."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    entry_point: str | None = None
    #: The folder it was loaded from (`[plugins] paths`), for a plugin that is not installed.
    path: str | None = None
    hooks: list[str] = field(default_factory=list)
    executors: list[str] = field(default_factory=list)
    sinks: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How error messages name the plugin: its name, distribution and entry point."""
        return plugin_label(self.name, self.distribution, self.version, self.entry_point or self.module, self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "entry_point": self.entry_point,
            "path": self.path,
            "hooks": self.hooks,
            "executors": self.executors,
            "sinks": self.sinks,
            "settings": self.settings,
            "commands": self.commands,
        }


#: Warnings about the plugin selection already given in this process.
_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Log a warning about the plugin selection once per process: a process may load plugins several times (the
    CLI for its plugin commands and then for the command itself, a client and an App), and the same setting
    deserves the same warning once."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def plugin_label(
    name: str, distribution: str | None, version: str | None, target: str, path: str | Path | None = None
) -> str:
    if path is not None:
        return f"plugin '{name}' (from {path}, {target})"
    dist = f"distribution {distribution} {version or ''}".rstrip() if distribution else "no distribution"
    return f"plugin '{name}' ({dist}, {target})"


def one_line(text: str) -> str:
    """Error messages are one line: pluggy's and some import errors span several."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe_validation(exc: pluggy.PluginValidationError) -> str:
    """pluggy's multi-line complaint about a hook's signature, as one line a plugin author can act on."""
    text = one_line(str(exc))
    match = re.search(r"hook '(\w+)'.*Argument\(s\) (\{.*?\}) are declared in the hookimpl", text)
    if match:
        spec = inspect.signature(getattr(hookspecs, match.group(1)))
        return (
            f"hook {match.group(1)} takes argument(s) {match.group(2)} that it is not given "
            f"(it is given: {', '.join(spec.parameters)})"
        )
    return text


@dataclass
class SinkEntry:
    name: str
    sink: Sink
    plugin: str
    events: tuple[str, ...]
    buffer_size: int
    batch_size: int
