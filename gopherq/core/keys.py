"""Every Redis key name GoPherQ uses, in one place.

The ready list of queue Q is the key `Q` itself (the seed's contract: producers `RPUSH Q`). Every other key
of Q carries the hash tag `{Q}`, so in Redis Cluster it hashes to the same slot as `Q` and every multi-key
Lua script of one queue runs on one node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gopherq.core.errors import ConfigError

#: Seconds a per-minute counts hash is kept: a day and an hour, so a full day of minutes can always be read.
COUNTS_TTL = 90000

#: Seconds a per-flow-key statistics hash (five minutes of attempts) is kept (core/flow_stats.py): the last hour is
#: always readable.
FLOW_STATS_TTL = 3900

#: Seconds a per-hour counts hash is kept: eight days, so a full week of hours can always be read.
HOURLY_COUNTS_TTL = 8 * 86400

#: What a priority enqueue leaves in the plain ready list to wake a worker blocked on it (levels.lua and claim.lua
#: use the same literal; the claim script drops it).
WAKE_MARKER = b"gopherq:wake"

#: Sorted set of every queue name GoPherQ has seen in use, scored by when it was last noted (ms); see registry.py.
#: A key of no queue's hash tag: in Redis Cluster it lives in a slot of its own, and no per-queue script touches it.
QUEUE_REGISTRY = "gopherq:queues"

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")


def validate_queue_name(name: str) -> str:
    """Queue names become key names and hash tags: no braces or spaces, at most 128 characters."""
    if not _QUEUE_NAME.match(name):
        raise ConfigError(f"invalid queue name {name!r}: use 1-128 letters, digits or . _ : - (no braces or spaces)")
    return name


#: The one member of a queue's leases that is no lease (lua/claim.lua writes it with every claim), scored +inf so no
#: reaper finds it due. Being over Redis's `zset-max-listpack-value` (64 bytes), it makes Redis keep the set as a
#: skiplist from its first write: as a listpack (up to 128 members) every ZADD and ZREM scanned it whole, about a
#: third of Redis's work per task with 100 tasks in flight. Readers count and list leases below +inf only.
LEASES_LAYOUT = "not a lease: this member, over 64 bytes, keeps the leases a skiplist (see core/keys.py)"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The key names of one queue."""

    queue: str

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)

    def _tagged(self, suffix: str) -> str:
        return f"gopherq:{{{self.queue}}}:{suffix}"

    @property
    def ready(self) -> str:
        """The ready list (producers RPUSH, workers take from the left)."""
        return self.queue

    @property
    def inflight(self) -> str:
        """Hash: attempt token -> envelope of every claimed, unsettled task."""
        return self._tagged("inflight")

    @property
    def leases(self) -> str:
        """Sorted set: attempt token scored by its lease deadline (ms), and one member that is no lease,
        LEASES_LAYOUT, scored +inf (see there)."""
        return self._tagged("leases")

    @property
    def seq(self) -> str:
        """Counter that mints attempt tokens."""
        return self._tagged("seq")

    @property
    def delayed(self) -> str:
        """Sorted set: envelopes scored by the time (ms) they become due."""
        return self._tagged("delayed")

    @property
    def dead(self) -> str:
        """Hash: dead-letter entry id -> entry JSON."""
        return self._tagged("dead")

    @property
    def dead_index(self) -> str:
        """Sorted set: dead-letter entry ids scored by when they died (ms), for listing and trimming."""
        return self._tagged("dead:index")

    @property
    def reaped(self) -> str:
        """Sorted set: attempt tokens the reaper took back because their lease expired, scored by when (ms), kept a
        day. A settle that finds its token gone looks here: reaped means a late settle (refused); not reaped means
        the token went with an earlier run of the same settle whose reply was lost (see settle.lua)."""
        return self._tagged("reaped")

    @property
    def stats(self) -> str:
        """Hash of counters (e.g. dead letters trimmed, late acks refused)."""
        return self._tagged("stats")

    @property
    def workers(self) -> str:
        """Sorted set: worker id scored by its last heartbeat (ms)."""
        return self._tagged("workers")

    @property
    def reaper_lock(self) -> str:
        return self._tagged("reaper:lock")

    @property
    def paused(self) -> str:
        """String (the Unix time it was paused): while it exists, workers claim nothing from the queue."""
        return self._tagged("paused")

    @property
    def events(self) -> str:
        """Stream of the queue's events, capped (written by the settle script and the `stream` sink, see
        core/eventlog.py)."""
        return self._tagged("events")

    def worker_info(self, worker_id: str) -> str:
        """Hash: what a worker tells others about itself (host, pid, concurrency, stats, running tasks),
        refreshed with its heartbeat and expiring when it stops."""
        return self._tagged(f"worker:{worker_id}")

    def counts(self, minute: int) -> str:
        """Hash: outcomes settled during one minute (`minute`: Unix seconds of its start), kept COUNTS_TTL."""
        return self._tagged(f"counts:{minute}")

    def hourly_counts(self, hour: int) -> str:
        """Hash: outcomes settled during one hour (`hour`: Unix seconds of its start), kept HOURLY_COUNTS_TTL;
        written by the same settle call as the minute's counts."""
        return self._tagged(f"counts:h:{hour}")

    @property
    def probe(self) -> str:
        """Scratch key of `gopherq check`'s permission probe; it never outlives the probe."""
        return self._tagged("probe")

    def level(self, priority: str | None) -> str:
        """The ready list of a priority level: the plain list `Q` is the default level (raw producers feed it);
        `high` and `low` have lists of their own."""
        if priority is None or priority == "default":
            return self.queue
        return self._tagged(f"ready:{priority}")

    @property
    def ready_lists(self) -> tuple[str, str, str]:
        """The default, high and low ready lists, in the order the scripts take them in KEYS."""
        return self.queue, self.level("high"), self.level("low")

    @property
    def cancels(self) -> str:
        """Sorted set: ids of tasks whose cancellation was asked for, scored by when (ms); see broker.cancel."""
        return self._tagged("cancels")

    def unique(self, unique_key: str) -> str:
        """String: the id of the task that holds this uniqueness key, with the key's window as its TTL."""
        return self._tagged(f"unique:{unique_key}")

    @property
    def schedules(self) -> str:
        """Hash: schedule name -> the last slot (Unix s) enqueued for it; see schedule.lua."""
        return self._tagged("schedules")

    @property
    def schedule_successes(self) -> str:
        """Hash: schedule name -> when a task of that schedule last succeeded (Unix s), written with heartbeats."""
        return self._tagged("schedules:succeeded")

    @property
    def heads(self) -> str:
        """Hash: priority level -> "<digest>:<ms>", when an inspection first saw the level's current head, for a
        head whose envelope carries no time of its own (a raw push); see core/inspect/readiness.py."""
        return self._tagged("heads")

    @property
    def where(self) -> str:
        """Hash: task id -> where the task is now (ready at a level, delayed with its reason, held by a worker), kept
        by the scripts that move tasks; a task leaves it when it is settled (its result record then says where it
        ended). The record format is in docs/operations.md ("Whereabouts") and core/whereabouts.py."""
        return self._tagged("where")

    def processing(self, worker_id: str) -> str:
        """The list a blocking fetch moves a task into before it is claimed (see broker.claim)."""
        return self._tagged(f"processing:{worker_id}")

    def result(self, task_id: str) -> str:
        return self._tagged(f"result:{task_id}")

    def timeline(self, task_id: str) -> str:
        """List: a task's newest events ('<stream entry id> <JSON>') but the outcome event a settle wrote with its
        result, which is in `outcome_events`; expires with its result (core/eventlog.py)."""
        return self._tagged(f"timeline:{task_id}")

    @property
    def outcome_width(self) -> str:
        """String: the width (s) of the periods `outcome_events` is cut into: the result TTL the settle last used."""
        return self._tagged("outcomes")

    def outcome_events(self, width: int, period: int) -> str:
        """Hash: task id -> the outcome event ('<stream entry id> <JSON>') a settle wrote with the task's result
        in period `period` (Unix time // `width`), the end of its timeline; expires when the next period ends, so an
        entry is kept at least `width` seconds, the result TTL (core/eventlog.py)."""
        return self._tagged(f"outcomes:{width}:{period}")

    @property
    def flows(self) -> str:
        """Sorted set: flow key (e.g. a host) scored by when a task last passed its limits (ms)."""
        return self._tagged("flows")

    def flow(self, key: str) -> str:
        """Hash: the shared state of one flow key (rate, circuit, adaptive slow-down); see core/flow.py."""
        return self._tagged(f"flow:{key}")

    def flow_slots(self, key: str) -> str:
        """Sorted set: attempt token -> lease deadline (ms) of every running task holding a concurrency slot."""
        return self._tagged(f"flow:{key}:slots")

    def flow_stats(self, key: str, start: int) -> str:
        """Hash: how the attempts of one flow key ended during five minutes from `start` (label and latency-bucket
        counts), kept FLOW_STATS_TTL; see core/flow_stats.py. The time comes first, so no flow key can collide with
        another."""
        return self._tagged(f"flowstats:{start}:{key}")

    @property
    def schedules_paused(self) -> str:
        """Hash: schedule name -> when it was paused (Unix s); a paused schedule's slots pass without a task."""
        return self._tagged("schedules:paused")

    def dag(self, flow_id: str) -> str:
        """Hash: the bookkeeping of one flow, a DAG of tasks (members, joins, counts, state); see lua/dag_step.lua.
        Named `dag`, not `flow`: `flow` keys belong to per-host flow control."""
        return self._tagged(f"dag:{flow_id}")

    @property
    def dags(self) -> str:
        """Sorted set: ids of the queue's open flows (DAGs of tasks), scored by creation (ms); reconciled from here."""
        return self._tagged("dags")

    @property
    def dags_done(self) -> str:
        """Sorted set: ids of the queue's finished flows, scored by when they finished (ms), kept `result_ttl`."""
        return self._tagged("dags:done")

    @property
    def dags_lock(self) -> str:
        """Lock of the flow reconciler: one worker of the queue reconciles at a time."""
        return self._tagged("dags:lock")

    # Fair keys (see lua/fair_base.lua, which builds the same names: the claim picks keys it cannot know in advance).

    @property
    def fair_prefix(self) -> str:
        """The common start of every fair-key key of the queue."""
        return self._tagged("fair:")

    def fair_active(self, letter: str) -> str:
        """Sorted set: the keys of one priority level ('h', 'd' or 'l') with waiting tasks, by virtual time."""
        return self._tagged(f"fair:{letter}")

    def fair_list(self, letter: str, fair_key: str) -> str:
        """List: the waiting tasks of one fair key at one priority level."""
        return self._tagged(f"fair:{letter}:q:{fair_key}")

    @property
    def fair_parked(self) -> str:
        """Sorted set: keys that may not run now, by when to look at them again (ms; +inf: when a task ends)."""
        return self._tagged("fair:parked")

    @property
    def fair_config(self) -> str:
        """Hash: fair key -> the settings given at run time (`gopherq keys set`, pause)."""
        return self._tagged("fair:keys")

    @property
    def fair_rules(self) -> str:
        """List: the `[fair]` rules of the workers' settings, as the scripts read them (see core/fair.py)."""
        return self._tagged("fair:rules")

    @property
    def fair_count(self) -> str:
        """Hash: level letter -> tasks waiting in the fair keys' lists of that level (the queue's counts)."""
        return self._tagged("fair:count")

    @property
    def fair_backlog(self) -> str:
        """Sorted set: fair key -> tasks waiting in its lists, all levels (the most backlogged keys, read in order)."""
        return self._tagged("fair:backlog")

    def fair_running(self, fair_key: str) -> str:
        """Sorted set: attempt tokens of a counted key's running tasks (concurrency limit or ordered)."""
        return self._tagged(f"fair:run:{fair_key}")

    def seen(self, task_id: str) -> str:
        """Marker of a task id created through the HTTP API within the idempotency window."""
        return self._tagged(f"seen:{task_id}")
