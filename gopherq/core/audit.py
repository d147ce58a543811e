"""The audit trail of operator actions: who paused, resumed, cancelled, requeued, edited or deleted what (a task, a
dead letter, a destination's circuit or rate, a schedule), and from where (the dashboard, the `/v1` API or the CLI).

Every action is an `operator.action` event on the event bus (so the configured sinks, the queue's event stream among
them, record it like any other event), one per task it touched, with the task's id: the task's timeline shows it
beside the worker's events. A queue-wide action (pause, resume; a destination's close circuit and reset rate, one
per queue, with its `key`; a schedule's pause and resume, with its `schedule`) is one event without a task id. The
actor is what the request authenticated as (the API token's or the dashboard login's role, the basic-auth user) or,
for the CLI, `user@host` of whoever ran it: never a credential.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gopherq.core.events import EventBus

#: The sources an action can come from.
SOURCES = ("dashboard", "api", "cli", "client")

#: The actions recorded.
ACTIONS = (
    "pause",
    "resume",
    "cancel",
    "requeue",
    "delete",
    "purge",
    "edit_requeue",
    "run_now",
    "delete_task",
    "close_circuit",
    "reset_rate",
    "schedule_run",
    "schedule_pause",
    "schedule_resume",
)

#: Most characters of an actor's name kept (it may come from a basic-auth user name).
_ACTOR_MAX = 120


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts (`name`) and through what (`source`: one of SOURCES)."""

    name: str
    source: str

    @classmethod
    def cli(cls) -> Actor:
        """The person running the CLI, as `user@host`."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid) and no USER variable
            user = "unknown"
        return cls(f"{user}@{socket.gethostname()}"[:_ACTOR_MAX], "cli")

    def to_dict(self) -> dict[str, str]:
        return {"actor": self.name[:_ACTOR_MAX], "source": self.source}


def record(
    bus: EventBus | None,
    actor: Actor,
    action: str,
    queue: str,
    task_ids: Iterable[str | None] = (),
    **data: Any,
) -> None:
    """Emit `operator.action` for each task touched (or once for the queue when `task_ids` is empty). Nothing when
    there is no bus (nobody listens)."""
    if bus is None:
        return
    fields = {"action": action, **actor.to_dict(), **data}
    ids = list(task_ids)
    for task_id in ids or [None]:
        bus.emit("operator.action", queue=queue, task_id=task_id, data=fields)
