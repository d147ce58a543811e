"""GoPherQ: a distributed task queue on Redis whose first-class task is an HTTP call.

This module is the public API: what applications and plugins import. Everything else is internal.
"""

from gopherq.client import AsyncClient, Client
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
from gopherq.core.events import Event, EventFilter, Sink
from gopherq.core.executor import ExecutionContext, Executor
from gopherq.core.hookspecs import hookimpl
from gopherq.core.settings import Section as PluginSettings
from gopherq.core.settings import Settings, SinkSettings, load_settings
from gopherq.core.task import ErrorInfo, Task, TaskResult, TaskStatus

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BrokerUnavailable",
    "Client",
    "ConfigError",
    "ErrorInfo",
    "Event",
    "EventFilter",
    "ExecutionContext",
    "Executor",
    "GoPherQError",
    "PermanentFailure",
    "PluginError",
    "PluginSettings",
    "RetryTask",
    "Settings",
    "Sink",
    "SinkSettings",
    "Task",
    "TaskFailure",
    "TaskRejected",
    "TaskResult",
    "TaskStatus",
    "hookimpl",
    "load_settings",
]
