"""The checks a decoded task passes before it is enqueued or run, for every path from one function.

`task_from_dict` (core/task.py) holds the envelope's own rules, which need nothing but the envelope. `admit` holds
the rules that need the settings and the registered executors: the task can still start before its deadline, its
times lie within `queue.max_horizon`, its type has an executor, and that executor accepts its payload. Every
producer entry point (the client, `enqueue_raw`, the CLI, the HTTP API, schedules) calls it before a task reaches
Redis, and the worker calls it on every task it claims, so a task refused at enqueue is the task a worker would
dead-letter, with the same reason and message.
"""

from __future__ import annotations

from gopherq.core.errors import TaskRejected
from gopherq.core.executor import ExecutorEntry
from gopherq.core.plugins import PluginManager
from gopherq.core.task import Task


def admit(task: Task, plugins: PluginManager, now: float, horizon: float) -> ExecutorEntry:
    """The executor of `task` once every check has passed (its payload is then set); raises TaskRejected with
    the dead-letter reason otherwise. `horizon` is `queue.max_horizon`: an eta or a deadline further ahead, or a
    uniqueness window longer, is refused (a task parked for centuries, or a lock Redis cannot set, is a mistake
    or an attack, never a plan)."""
    if task.eta is not None or task.deadline is not None:
        _check_times(task, now, horizon)
    if task.unique_for is not None and task.unique_for > horizon:
        raise TaskRejected(
            "schema_invalid",
            f"field 'unique_for' is longer than queue.max_horizon ({horizon:g}s), got {task.unique_for!r}",
        )
    entry = plugins.executor(task.type)
    if entry is None:
        raise plugins.no_executor(task.type)
    entry.validate(task)
    return entry


def _check_times(task: Task, now: float, horizon: float) -> None:
    latest = now + horizon
    for name, value in (("eta", task.eta), ("deadline", task.deadline)):
        if value is not None and value > latest:
            raise TaskRejected(
                "schema_invalid", f"field '{name}' is more than queue.max_horizon ({horizon:g}s) ahead, got {value!r}"
            )
    deadline = task.deadline
    if deadline is not None and max(now, task.eta or 0.0) >= deadline:
        raise TaskRejected("deadline", f"deadline {deadline:.3f} passes before attempt {task.attempt} can start")
