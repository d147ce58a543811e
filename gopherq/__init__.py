"""GoPherQ: a distributed task queue on Redis whose first-class task is an HTTP call.

This module is the public API: what applications and plugins import. Everything else is internal.
Plugins need: `hookimpl`, the `Register*` callback types and `WorkerView` (hooks), `Executor`,
`ExecutionContext` and `Task` (executors), `Sink`, `Event` and `EventFilter` (sinks), `PluginSettings`,
`SinkSettings` and `Settings` (settings), `RetryTask`, `PermanentFailure` and `TaskFailure` (what an executor
raises), and for plugins that write to Redis or show data: `RedisConnection` (and `RedisClient`, the type of
the client it opens), `QueueKeys`, `Masker`, `bounded` (cut a value to a size), `redis_unavailable` (an error that
means "try again later") and `Backoff` (the wait between tries); for an executor that bounds a step of its own,
`time_limit` (`asyncio.timeout`, on every supported Python); for plugins that carry W3C trace context, `trace_field`
(a task's `trace` field from the headers a propagator wrote) and `is_traceparent`. See docs/plugins.md.

Names are imported on first use, so importing a submodule (such as `gopherq.testing`, the pytest plugin that
every test run in an environment with GoPherQ loads) does not pay for Redis, pydantic and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> (module, name in that module).
_EXPORTS: dict[str, tuple[str, str]] = {
    "App": ("gopherq.functions", "App"),
    "Handle": ("gopherq.functions", "Handle"),
    "TaskFailed": ("gopherq.functions", "TaskFailed"),
    "TaskFunction": ("gopherq.functions", "TaskFunction"),
    "Serializer": ("gopherq.functions", "Serializer"),
    "JsonSerializer": ("gopherq.functions", "JsonSerializer"),
    "Schedule": ("gopherq.core.schedules", "Schedule"),
    "chain": ("gopherq.canvas", "chain"),
    "group": ("gopherq.canvas", "group"),
    "chord": ("gopherq.canvas", "chord"),
    "Flow": ("gopherq.canvas", "Flow"),
    "FlowFailed": ("gopherq.canvas", "FlowFailed"),
    "FlowHandle": ("gopherq.canvas", "FlowHandle"),
    "AsyncFlowHandle": ("gopherq.canvas", "AsyncFlowHandle"),
    "Signature": ("gopherq.canvas", "Signature"),
    "step": ("gopherq.canvas", "step"),
    "http_step": ("gopherq.canvas", "http_step"),
    "Enqueued": ("gopherq.client", "Enqueued"),
    "AsyncClient": ("gopherq.client", "AsyncClient"),
    "Client": ("gopherq.client", "Client"),
    "BrokerUnavailable": ("gopherq.core.errors", "BrokerUnavailable"),
    "ConfigError": ("gopherq.core.errors", "ConfigError"),
    "GoPherQError": ("gopherq.core.errors", "GoPherQError"),
    "PermanentFailure": ("gopherq.core.errors", "PermanentFailure"),
    "PluginError": ("gopherq.core.errors", "PluginError"),
    "RetryTask": ("gopherq.core.errors", "RetryTask"),
    "TaskFailure": ("gopherq.core.errors", "TaskFailure"),
    "TaskRejected": ("gopherq.core.errors", "TaskRejected"),
    "Event": ("gopherq.core.events", "Event"),
    "EventFilter": ("gopherq.core.events", "EventFilter"),
    "EventLog": ("gopherq.core.eventlog", "EventLog"),
    "Sink": ("gopherq.core.events", "Sink"),
    "ExecutionContext": ("gopherq.core.executor", "ExecutionContext"),
    "AttemptOutcome": ("gopherq.core.executor", "AttemptOutcome"),
    "AttemptRunner": ("gopherq.core.executor", "AttemptRunner"),
    "OutboundCall": ("gopherq.core.calls", "OutboundCall"),
    "OutboundCalls": ("gopherq.core.calls", "OutboundCalls"),
    "merge_headers": ("gopherq.core.calls", "merge_headers"),
    "log_batch_handler": ("gopherq.core.loglines", "batch_handler"),
    "FlowLimits": ("gopherq.core.flow", "FlowLimits"),
    "Executor": ("gopherq.core.executor", "Executor"),
    "RegisterExecutor": ("gopherq.core.hookspecs", "RegisterExecutor"),
    "RegisterHooks": ("gopherq.core.hookspecs", "RegisterHooks"),
    "RegisterSettings": ("gopherq.core.hookspecs", "RegisterSettings"),
    "RegisterSink": ("gopherq.core.hookspecs", "RegisterSink"),
    "WorkerView": ("gopherq.core.hookspecs", "WorkerView"),
    "hookimpl": ("gopherq.core.hookspecs", "hookimpl"),
    "Inspector": ("gopherq.core.inspect", "Inspector"),
    "QueueKeys": ("gopherq.core.keys", "QueueKeys"),
    "Masker": ("gopherq.core.masking", "Masker"),
    "bounded": ("gopherq.core.bounds", "bounded"),
    "Backoff": ("gopherq.core.resilience", "Backoff"),
    "redis_unavailable": ("gopherq.core.resilience", "unavailable"),
    "RedisConnection": ("gopherq.core.connection", "RedisConnection"),
    "RedisClient": ("gopherq.core.redis_client", "RedisClient"),
    "PluginSettings": ("gopherq.core.sections", "PluginSettings"),
    "Settings": ("gopherq.core.settings", "Settings"),
    "SinkSettings": ("gopherq.core.sections", "SinkSettings"),
    "load_settings": ("gopherq.core.settings", "load_settings"),
    "ErrorInfo": ("gopherq.core.results", "ErrorInfo"),
    "Task": ("gopherq.core.task", "Task"),
    "TaskResult": ("gopherq.core.results", "TaskResult"),
    "TaskStatus": ("gopherq.core.task", "TaskStatus"),
    "time_limit": ("gopherq.core.executor", "time_limit"),
    "is_traceparent": ("gopherq.core.tracecontext", "is_traceparent"),
    "trace_field": ("gopherq.core.tracecontext", "trace_field"),
}

if TYPE_CHECKING:
    from gopherq.canvas import (
        AsyncFlowHandle,
        Flow,
        FlowFailed,
        FlowHandle,
        Signature,
        chain,
        chord,
        group,
        http_step,
        step,
    )
    from gopherq.client import AsyncClient, Client, Enqueued
    from gopherq.core.bounds import bounded
    from gopherq.core.calls import OutboundCall, OutboundCalls, merge_headers
    from gopherq.core.connection import RedisConnection
    from gopherq.core.errors import (
        BrokerUnavailable,
        ConfigError,
        GoPherQError,
        PermanentFailure,
        PluginError,
        RetryTask,
        TaskFailure,
        TaskRejected,
    )
    from gopherq.core.eventlog import EventLog
    from gopherq.core.events import Event, EventFilter, Sink
    from gopherq.core.executor import AttemptOutcome, AttemptRunner, ExecutionContext, Executor, time_limit
    from gopherq.core.flow import FlowLimits
    from gopherq.core.hookspecs import (
        RegisterExecutor,
        RegisterHooks,
        RegisterSettings,
        RegisterSink,
        WorkerView,
        hookimpl,
    )
    from gopherq.core.inspect import Inspector
    from gopherq.core.keys import QueueKeys
    from gopherq.core.loglines import batch_handler as log_batch_handler
    from gopherq.core.masking import Masker
    from gopherq.core.redis_client import RedisClient
    from gopherq.core.resilience import Backoff
    from gopherq.core.resilience import unavailable as redis_unavailable
    from gopherq.core.results import ErrorInfo, TaskResult
    from gopherq.core.schedules import Schedule
    from gopherq.core.sections import PluginSettings, SinkSettings
    from gopherq.core.settings import Settings, load_settings
    from gopherq.core.task import Task, TaskStatus
    from gopherq.core.tracecontext import is_traceparent, trace_field
    from gopherq.functions import App, Handle, JsonSerializer, Serializer, TaskFailed, TaskFunction
else:

    def __getattr__(name: str) -> Any:
        try:
            module, attribute = _EXPORTS[name]
        except KeyError:
            raise AttributeError(f"module 'gopherq' has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_EXPORTS})


__all__ = [
    "App",
    "AsyncClient",
    "AsyncFlowHandle",
    "AttemptOutcome",
    "AttemptRunner",
    "Backoff",
    "BrokerUnavailable",
    "Client",
    "ConfigError",
    "Enqueued",
    "ErrorInfo",
    "Event",
    "EventFilter",
    "EventLog",
    "ExecutionContext",
    "Executor",
    "Flow",
    "FlowFailed",
    "FlowHandle",
    "FlowLimits",
    "GoPherQError",
    "Handle",
    "Inspector",
    "JsonSerializer",
    "Masker",
    "OutboundCall",
    "OutboundCalls",
    "PermanentFailure",
    "PluginError",
    "PluginSettings",
    "QueueKeys",
    "RedisClient",
    "RedisConnection",
    "RegisterExecutor",
    "RegisterHooks",
    "RegisterSettings",
    "RegisterSink",
    "RetryTask",
    "Schedule",
    "Serializer",
    "Settings",
    "Signature",
    "Sink",
    "SinkSettings",
    "Task",
    "TaskFailed",
    "TaskFailure",
    "TaskFunction",
    "TaskRejected",
    "TaskResult",
    "TaskStatus",
    "WorkerView",
    "bounded",
    "chain",
    "chord",
    "group",
    "hookimpl",
    "http_step",
    "is_traceparent",
    "load_settings",
    "log_batch_handler",
    "merge_headers",
    "redis_unavailable",
    "step",
    "time_limit",
    "trace_field",
]
