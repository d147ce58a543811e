"""Every Lua script GoPherQ runs, in one home: read from `lua/` once per process, registered once per Redis client.

The scripts are the delivery protocol (claim, settle, reap, promote, ...), flow control (flow_admit, flow_done),
the dead-letter requeue and the permission probe. Each documents its KEYS and ARGV in its header. `load_script`
returns a script's source with its `--@include` lines filled in, read once per process (a `Broker` made per
request, as the inspection layer makes them, used to read eight files); `scripts(redis)` is the registry of one
client, so every `Broker`, `FlowGate` and `DeadLetters` on it shares the same registered script objects.
"""

from __future__ import annotations

import functools
import weakref
from importlib import resources
from typing import Any

from gopherq.core.redis_client import RedisClient

#: Redis keeps an argument of PROTO_MBULK_BIG_ARG (32 KiB) or more in the very buffer it arrived in, and a script's
#: cached body is its SCRIPT LOAD argument: on a connection that had just carried a 100 MB push, that buffer (and so
#: the script cache) held the 100 MB for as long as Redis ran. A script sent stays under this size.
SCRIPT_BYTES_MAX = 32 * 1024 - 1


@functools.cache
def load_script(name: str) -> str:
    """A script's source as sent to Redis: each `--@include <name>` line replaced by that shared file (e.g.
    levels.lua), and each comment line emptied (its line kept, so an error's line number still points into the
    files), which keeps every script under SCRIPT_BYTES_MAX (tests/core/test_health.py checks it)."""
    text = resources.files("gopherq.core").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith("--@include "):
            lines[i] = load_script(line.split()[1])
        elif stripped.startswith("--"):  # (no script uses a --[[ block comment: the test checks that too)
            lines[i] = "\n"
    return "".join(lines)


@functools.cache
def script_names() -> tuple[str, ...]:
    """Every Lua script shipped in the package (the delivery scripts, flow control, the probe and the includes)."""
    folder = resources.files("gopherq.core").joinpath("lua")
    return tuple(sorted(entry.name[: -len(".lua")] for entry in folder.iterdir() if entry.name.endswith(".lua")))


class Scripts:
    """The scripts of one Redis client, each registered (`register_script`) the first time it is asked for."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._registered: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        """The registered script `name` (an object called with `keys=` and `args=`; it loads itself on NOSCRIPT)."""
        script = self._registered.get(name)
        if script is None:
            script = self._registered[name] = self.redis.register_script(load_script(name))
        return script


_PER_CLIENT: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()


def scripts(redis: RedisClient) -> Scripts:
    """The script registry of `redis`, made once per client (and forgotten with it)."""
    try:
        registry = _PER_CLIENT.get(redis)
    except TypeError:  # a client that cannot be weakly referenced: a registry of its own each time
        return Scripts(redis)
    if registry is None:
        registry = _PER_CLIENT[redis] = Scripts(redis)
    return registry
