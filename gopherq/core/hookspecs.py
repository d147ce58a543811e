"""Every hook a GoPherQ plugin can implement.

Hooks are synchronous and cheap: they register things and return. Anything asynchronous is an object with
async methods that the core awaits (an executor's `execute`, a sink's `handle`) or an awaitable returned from
`gopherq_startup` / `gopherq_shutdown`. Implement a hook with `@gopherq.hookimpl` on a function of the same
name in the module (or object) your entry point names.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "gopherq"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gopherq_register_settings(register: Any) -> None:
    """Declare the pydantic model of this plugin's `[plugins.<name>]` table.

    Called once at start-up, before any other registration hook. Call `register(model)` to validate the
    table named after your plugin, or `register(model, name="other")` for another table. The validated
    instance is then available as `settings.plugin("<name>")` in the hooks below. Unknown keys and bad values
    in that table stop start-up with a one-line error, as for the core settings; `GOPHERQ_PLUGINS__<NAME>__<KEY>`
    overrides a key. Use `pydantic.SecretStr` for secrets so `gopherq config` masks them.
    """


@hookspec
def gopherq_register_executors(register: Any, settings: Any) -> None:
    """Register executors, by task type, for a worker or a client to use.

    Called at start-up, after settings are validated. Call `register(type_name, executor)` once per
    executor; `register(..., replace=True)` overrides one registered by another plugin (otherwise a
    duplicate name stops start-up). `settings` is the effective `Settings`.
    """


@hookspec
def gopherq_register_sinks(register: Any, settings: Any) -> None:
    """Register event sinks, for a worker to feed.

    Called at worker start-up. Call `register(name, sink, events=["task.*"], buffer_size=..., batch_size=...)`
    for each enabled sink; register nothing when your sink is disabled in its settings. A sink gets events
    in batches from its own bounded buffer, so it can never slow the worker down.
    """


@hookspec
def gopherq_register_commands(cli: Any) -> None:
    """Add commands to the `gopherq` CLI (a click group): `@cli.command()` and so on.

    Called when the CLI starts, before arguments are parsed.
    """


@hookspec
def gopherq_startup(worker: Any) -> Any:
    """The worker is about to fetch its first task; may return an awaitable, which is awaited.

    An exception here is logged and does not stop the worker or the other plugins' hooks.
    """


@hookspec
def gopherq_shutdown(worker: Any) -> Any:
    """The worker has stopped running tasks and is about to exit; may return an awaitable.

    An exception here is logged and does not stop the other plugins' hooks.
    """
