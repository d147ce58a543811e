"""What every part of one worker (Fetcher, Settler, Upkeep) is built from, handed to each part's constructor.

Nothing in it belongs to one part alone: the worker's id, settings and Redis client, its view of the queue in
Redis (`Broker`), its event bus, flow control, plugins, what it holds (`Holdings`), its counters and the outage
tracker its loops share. A part copies onto itself the few members its per-task path reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from gopherq.core.broker import Broker
from gopherq.core.events import EventBus
from gopherq.core.flow import WorkerFlow
from gopherq.core.flows.announce import FlowAnnouncer
from gopherq.core.holdings import Holdings
from gopherq.core.plugins import PluginManager
from gopherq.core.redis_client import RedisClient
from gopherq.core.resilience import Outage
from gopherq.core.schedules import ScheduleRuns
from gopherq.core.settings import Settings


@dataclass(frozen=True, slots=True)
class Shared:
    """The worker's common equipment (see the module docstring)."""

    worker_id: str
    settings: Settings
    redis: RedisClient
    broker: Broker
    bus: EventBus
    flow: WorkerFlow
    plugins: PluginManager
    holdings: Holdings
    stats: dict[str, int]
    outage: Outage
    schedule_runs: ScheduleRuns
    #: Announces the state changes of the queue's flows (DAGs of tasks; core/flows), from settles and reconciles.
    dags: FlowAnnouncer
