"""Whether a gopherq process can work against its Redis: reachable, scripts loaded, every permission granted.

`gopherq ping`, `gopherq check`, container health checks and the worker's start-up share this one probe, so
a missing ACL permission or a read-only replica is reported once, clearly, before any task is touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError

from gopherq.core.connection import RedisConnection, describe_target
from gopherq.core.errors import BrokerUnavailable
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import load_script, script_names, scripts
from gopherq.core.settings import Settings

#: Oldest server that has every command GoPherQ uses (BLMOVE, ZADD GT/LT arrive in 6.2).
MIN_VERSION = (6, 2)


@dataclass(slots=True)
class HealthReport:
    """What `probe` found. `problems` is empty when the process could work."""

    target: str
    server: str = "?"
    role: str = "?"
    scripts: int = 0
    latency_ms: float = 0.0
    problems: list[str] = field(default_factory=list)
    #: Risks that do not stop GoPherQ from working (eviction, no append-only file): `check` shows them.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: what was reached and, when something is wrong, the first problem."""
        if self.problems:
            return f"{self.target}: {self.problems[0]}"
        server = f" ({self.server}, {self.role})" if self.server != "?" else ""
        return f"ok: {self.target}{server} answered in {self.latency_ms:.1f} ms; {self.scripts} scripts loaded"


async def verify_access(redis: RedisClient, queue: str) -> int:
    """PING, load every script and run the permission probe on the queue's scratch key; returns the number of
    scripts loaded. Raises redis-py's error (NoPermissionError for a missing ACL permission)."""
    await redis.ping()
    names = script_names()
    for name in names:
        await redis.script_load(load_script(name))
    keys = QueueKeys(queue)
    await scripts(redis)["probe"](keys=[keys.probe])
    # The commands the worker and client send themselves, in harmless forms on keys of the queue's hash tag.
    await redis.blmove(keys.probe, keys.probe, 0.01, "LEFT", "RIGHT")
    await redis.lmove(keys.probe, keys.probe, "LEFT", "RIGHT")
    await redis.llen(keys.ready)
    await redis.zrange(keys.probe, 0, 0)
    await redis.hgetall(keys.probe)
    await redis.get(keys.probe)
    return len(names)


async def probe(settings: Settings, queue: str | None = None, *, full: bool = True) -> HealthReport:
    """Connect with the process's settings and verify access; with `full`, also the server's version and role.
    Never raises for a Redis problem: it lands in `problems`."""
    queue = queue or settings.queue.name
    report = HealthReport(target=describe_target(settings))
    connection = RedisConnection(settings, "check")
    try:
        redis = await connection.open()
        started = time.perf_counter()
        await redis.ping()
        report.latency_ms = (time.perf_counter() - started) * 1000
        if full:
            await _describe_server(redis, report)
            await _durability_warnings(redis, report)
        report.scripts = await verify_access(redis, queue)
    except AuthenticationError as exc:
        report.problems.append(f"Redis refused the credentials: {exc}")
    except NoPermissionError as exc:
        report.problems.append(f"the Redis user lacks a permission GoPherQ needs (see docs/deployment.md): {exc}")
    except (RedisError, OSError, BrokerUnavailable) as exc:
        report.problems.append(f"Redis unavailable: {type(exc).__name__}: {exc}")
    finally:
        await connection.close()
    return report


async def _describe_server(redis: RedisClient, report: HealthReport) -> None:
    try:
        info = await redis.info("server")
        replication = await redis.info("replication")
    except ResponseError:
        return  # INFO may be denied to a restricted user; the probe below still proves what matters
    if "redis_version" not in info:  # a cluster client answers per node; one node says enough
        info = next(iter(info.values()), {})
        replication = next(iter(replication.values()), {})
    flavour = str(info.get("server_name") or "redis")
    version = str(info.get("valkey_version") or info.get("redis_version") or "?")
    report.server = f"{flavour} {version}"
    report.role = str(replication.get("role", "?"))
    numbers = tuple(int(part) for part in str(info.get("redis_version", "0.0")).split(".")[:2] if part.isdigit())
    if numbers < MIN_VERSION:
        report.problems.append(f"server {report.server} is too old: GoPherQ needs Redis 6.2 or later (BLMOVE)")
    if report.role not in ("master", "?"):
        report.problems.append(f"server is a {report.role}, not the master: tasks cannot be written there")


async def _durability_warnings(redis: RedisClient, report: HealthReport) -> None:
    """What could lose tasks even though everything works: eviction, and no append-only file."""
    try:
        config = {**_flat(await redis.config_get("maxmemory-policy")), **_flat(await redis.config_get("appendonly"))}
    except ResponseError:
        return  # CONFIG is often denied (managed Redis, a restricted user): nothing to say then
    policy = config.get("maxmemory-policy")
    if policy not in (None, "noeviction"):
        report.warnings.append(f"maxmemory-policy is {policy}: under memory pressure Redis may evict queued tasks")
    if config.get("appendonly") == "no":
        report.warnings.append("appendonly is no: a Redis restart loses the tasks written since the last snapshot")


#: The INFO fields the dashboard's Redis page shows, by section: what an operator checks first in an incident.
SERVER_FACTS = {
    "server": ("redis_version", "valkey_version", "server_name", "redis_mode", "uptime_in_seconds", "tcp_port"),
    "replication": ("role", "connected_slaves", "master_link_status"),
    "memory": (
        "used_memory",
        "used_memory_human",
        "used_memory_peak_human",
        "maxmemory",
        "maxmemory_human",
        "maxmemory_policy",
        "mem_fragmentation_ratio",
    ),
    "clients": ("connected_clients", "blocked_clients", "maxclients"),
    "persistence": (
        "aof_enabled",
        "aof_last_write_status",
        "rdb_last_bgsave_status",
        "rdb_last_save_time",
        "rdb_changes_since_last_save",
        "loading",
    ),
    "stats": ("instantaneous_ops_per_sec", "evicted_keys", "expired_keys", "rejected_connections"),
}


async def server_facts(redis: RedisClient) -> dict[str, Any]:
    """What `gopherq check` knows of the server, and its memory, clients and persistence: SERVER_FACTS from INFO
    (one round trip), the maxmemory policy and append-only setting from CONFIG when allowed, and the same
    durability warnings `check` prints. A section INFO or CONFIG denies is left out, not an error."""
    facts: dict[str, Any] = {}
    try:
        info = await redis.info()
    except ResponseError:
        info = {}
    if info and "redis_version" not in info:  # a cluster client answers per node; one node says enough
        info = next(iter(info.values()), {})
    for section, names in SERVER_FACTS.items():
        facts[section] = {name: info[name] for name in names if name in info}
    report = HealthReport(target="")
    await _durability_warnings(redis, report)
    facts["warnings"] = report.warnings
    return facts


def _flat(config: Any) -> dict[str, str]:
    """CONFIG GET's answer as str -> str; a cluster client's per-node answers are merged (one node says enough)."""
    out: dict[str, str] = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            out.update(_flat(value))
        else:
            out[key.decode() if isinstance(key, bytes) else str(key)] = (
                value.decode() if isinstance(value, bytes) else str(value)
            )
    return out
