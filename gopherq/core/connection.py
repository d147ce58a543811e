"""Opening the Redis client a gopherq process uses: a URL, the seed's host:port address, a Redis Cluster, a
Sentinel-managed master, or the embedded server (started on demand and stopped by the last gopherq process that
leaves it); with TLS and an ACL user where the settings ask for them.

Every command has a deadline, `command_timeout`: a Redis that stops answering (frozen, partitioned, stalled on a
disk) fails the command with TimeoutError within seconds, well inside a task's lease, so the worker notices and says
so. A command that timed out may still run when Redis wakes up, so redis-py does not send it again by itself; only a
command that met a broken connection is sent once more (after a restart, the pooled connections are all broken).
`watch_writes` tells whether a failed call reached Redis at all, which is what the HTTP API needs to answer truthfully.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # redis[hiredis] is a dependency; without it, redis-py's own packer
    from hiredis import pack_command as pack_in_c
except ImportError:  # pragma: no cover
    pack_in_c = None  # type: ignore[assignment]

from gopherq.core.embedded import EmbeddedRedis, client_name
from gopherq.core.errors import ConfigError
from gopherq.core.redis_client import RedisClient
from gopherq.core.settings import Settings


def describe_target(settings: Settings) -> str:
    """Where Redis is, for log lines (no secrets)."""
    cfg = settings.redis
    if cfg.url:
        from gopherq.core.settings import mask_url

        return mask_url(cfg.url)
    if cfg.address:
        return f"{cfg.address} db {cfg.db}"
    if cfg.sentinels:
        return f"master {cfg.service_name!r} of Sentinels {', '.join(cfg.sentinels)} db {cfg.db}"
    return f"embedded ({settings.data_dir})"


def command_timeout(settings: Settings) -> float:
    """Seconds a command may go unanswered before it fails with TimeoutError: `redis.command_timeout`, or by
    default a third of `worker.lease_timeout`, between 1 and 5 seconds. Shorter than the lease, so a Redis freeze is
    noticed (and logged) before the leases it holds up expire; long enough that a busy machine does not time out
    healthy commands."""
    configured = settings.redis.command_timeout
    if configured is not None:
        return configured
    return min(5.0, max(1.0, settings.worker.lease_timeout / 3))


def blocking_wait(settings: Settings) -> float:
    """How long one blocking fetch (BLMOVE) waits on an empty queue: `worker.fetch_timeout`, but at most half the
    command timeout, so an idle queue's reply always arrives well before the command's deadline."""
    return min(settings.worker.fetch_timeout, command_timeout(settings) / 2)


def _address_kwargs(address: str) -> dict[str, Any]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"redis.address: expected host:port, got {address!r}")
    return {"host": host.strip("[]") or "127.0.0.1", "port": int(port)}


def tls_kwargs(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS options from the settings (empty without TLS); relative paths resolve like `data_dir`."""
    cfg = settings.redis
    if not cfg.uses_tls:
        return {}
    kwargs: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": cfg.tls_check_hostname}
    for option, path in (
        ("ssl_ca_certs", cfg.tls_ca_file),
        ("ssl_certfile", cfg.tls_cert_file),
        ("ssl_keyfile", cfg.tls_key_file),
    ):
        if path:
            kwargs[option] = str((settings.base_dir / path).resolve())
    return kwargs


class RedisConnection:
    """The Redis client of one gopherq process. `open()` returns it; `close()` releases it (and stops the
    embedded server when this was the last gopherq process using it)."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.name = client_name(role)
        self.embedded = (
            EmbeddedRedis(settings.data_dir, settings.redis.server_binary) if settings.redis.embedded else None
        )
        self.client: RedisClient | None = None
        self._sentinel: Sentinel | None = None

    async def open(self) -> RedisClient:
        cfg = self.settings.redis
        password = cfg.password.get_secret_value() if cfg.password else None
        # A blocking fetch waits at most half of this (blocking_wait), so an idle queue never looks like a fault.
        common: dict[str, Any] = {
            "client_name": self.name,
            "socket_connect_timeout": 5,
            "socket_timeout": command_timeout(self.settings),
            # One quick retry smooths over a connection found broken (a restart, an idle connection dropped); a
            # timeout is not retried: the command may still run. Longer outages are the caller's to handle (the
            # worker backs off with jitter and logs), instead of redis-py's default retries per command.
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,)),
        }
        if self.embedded is not None:
            url = await asyncio.to_thread(self.embedded.ensure_running)
            self.client = _track_writes(Redis.from_url(url, **common))
            return self.client
        if not (cfg.url or "").startswith("unix:"):
            common["socket_keepalive"] = True
        tls = tls_kwargs(self.settings)
        if cfg.username:
            common["username"] = cfg.username
        if cfg.sentinels:
            self.client = self._sentinel_master(password, tls, common)
        elif cfg.cluster:
            if cfg.url:
                self.client = RedisCluster.from_url(cfg.url, password=password, **tls, **common)
            else:
                assert cfg.address is not None
                ssl = {"ssl": True, **tls} if tls else {}
                self.client = RedisCluster(password=password, **_address_kwargs(cfg.address), **ssl, **common)
        elif cfg.url:
            kwargs = dict(common, **tls)
            if password:
                kwargs["password"] = password
            self.client = Redis.from_url(cfg.url, **kwargs)
        else:
            assert cfg.address is not None
            ssl = {"ssl": True, **tls} if tls else {}
            self.client = Redis(password=password, db=cfg.db, **_address_kwargs(cfg.address), **ssl, **common)
        return _track_writes(self.client)

    def _sentinel_master(self, password: str | None, tls: dict[str, Any], common: dict[str, Any]) -> Redis:
        """A client of the master the Sentinels name. Its pool asks them again on every new connection and
        drops its connections when the master turns read-only, so after a failover the next retry of every
        worker loop reaches the new master on its own. With TLS, the Sentinels are reached over TLS too."""
        cfg = self.settings.redis
        ssl = {"ssl": True, **tls} if tls else {}
        sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 5, **ssl}
        if cfg.sentinel_username:
            sentinel_kwargs["username"] = cfg.sentinel_username
        if cfg.sentinel_password:
            sentinel_kwargs["password"] = cfg.sentinel_password.get_secret_value()
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(entry["host"], entry["port"]) for entry in map(_address_kwargs, cfg.sentinels)],
            sentinel_kwargs=sentinel_kwargs,
        )
        master: Redis = self._sentinel.master_for(cfg.service_name, password=password, db=cfg.db, **ssl, **common)
        return master

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
            self._sentinel = None
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop, True, self.name)


# -- did a failed call reach Redis? ----------------------------------------------------------------------------------


class Writes:
    """What the calls made inside one `watch_writes` block sent towards Redis: how many commands (or pipelines)
    were handed to a socket. When none was, a failure is a clean refusal: Redis never saw the command."""

    __slots__ = ("count", "known")

    def __init__(self, known: bool) -> None:
        self.count = 0
        #: False when the client cannot tell (not opened by `RedisConnection`).
        self.known = known

    @property
    def maybe_sent(self) -> bool:
        """False only when it is certain that no command reached Redis."""
        return self.count > 0 or not self.known


_WATCHING: ContextVar[Writes | None] = ContextVar("gopherq_redis_writes", default=None)
_TRACKING: dict[type, type] = {}


@contextlib.contextmanager
def watch_writes(client: RedisClient) -> Iterator[Writes]:
    """Count the commands the current asyncio task (and the tasks it starts) sends inside the block, through any
    client opened by `RedisConnection`; `client` is the one the block uses, and says whether its sends are counted."""
    writes = Writes(known=getattr(_pool_class(client), "gopherq_counts_writes", False))
    token = _WATCHING.set(writes)
    try:
        yield writes
    finally:
        _WATCHING.reset(token)


def _pool_class(client: Any) -> Any:
    if isinstance(client, RedisCluster):
        return client.nodes_manager.connection_kwargs.get("connection_class")
    return getattr(getattr(client, "connection_pool", None), "connection_class", None)


def _track_writes(client: RedisClient) -> RedisClient:
    """Give the client's connections GoPherQ's connection class: a subclass of their own (plain, TLS, Unix socket,
    Sentinel-managed, a cluster node's) that counts what it sends into the current `watch_writes` block, bounds each
    write without losing a cancellation, and packs commands in C (see `_gopherq_connection`). Done before the first
    connection exists, so every connection is one.

    A Redis Cluster client has no pool: each node makes its own connections, of the class in the connection
    options the client shares with the nodes it learns of later, and its startup nodes were made with a copy."""
    if isinstance(client, RedisCluster):
        options = client.nodes_manager.connection_kwargs
        base = options.get("connection_class")
        if base is None:  # (a redis-py that keeps it elsewhere: its own class, its writes not counted)
            return client
        if not getattr(base, "gopherq_counts_writes", False):
            options["connection_class"] = _gopherq_connection(base)
        for node in [*client.startup_nodes, *client.nodes_manager.startup_nodes.values()]:
            node.connection_class = options["connection_class"]
        return client
    pool = getattr(client, "connection_pool", None)
    if pool is not None and not getattr(pool.connection_class, "gopherq_counts_writes", False):
        pool.connection_class = _gopherq_connection(pool.connection_class)
    return client


#: Python 3.11's `asyncio.wait_for`, which redis-py writes every command through when the connection has a
#: `socket_timeout`, drops a cancellation of its caller that arrives as the write completes (fixed in 3.12, where
#: it is built on `asyncio.timeout`). A loop sending commands back to back loses most cancels so (measured: a
#: median of 20 cancels to stop a loop of PINGs, some over 300): shutdown, a time limit or a cancel request would
#: wait on it. On 3.11 GoPherQ's connections write under `asyncio.timeout` instead, which loses none (3.10 has no
#: `asyncio.timeout`: there core.cancellation's repeated cancels are the remedy).
_TIMED_WRITES = (3, 11) <= sys.version_info < (3, 12)


def _gopherq_connection(base: type) -> type:
    """`base` with three changes. Its sends are counted (`watch_writes`). On Python 3.11 a send is bounded by
    `asyncio.timeout`, not redis-py's `asyncio.wait_for` (see _TIMED_WRITES; the same bound, the same error and
    disconnect on expiry). And a command is packed by hiredis in one C call: redis-py's own packer calls its Python
    encoder on every argument first, which cost the worker more than a microsecond per task (a settle carries five
    arguments per task, and its events five more). hiredis encodes str, bytes, int and float exactly as redis-py's
    encoder does (tests/core/test_connection_packing.py); anything else, and a command name of two words, goes to
    redis-py's packer, which packs it or says what is wrong."""
    made = _TRACKING.get(base)
    if made is None:

        async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            writes = _WATCHING.get()
            if writes is not None:
                writes.count += 1
            timeout = self.socket_timeout
            if not (_TIMED_WRITES and timeout):
                return await base.send_packed_command(self, *args, **kwargs)  # type: ignore[attr-defined]
            if not self.is_connected:
                # Connect first, as redis-py's send would: its handshake reads under socket_timeout, unhidden. (A
                # pool connects before it hands a connection out; a cluster node's connections connect on their
                # first send, often the first command after a cancelled one dropped its connection.)
                connect = getattr(self, "connect_check_health", None)
                await (connect(check_health=False) if connect is not None else self.connect())
            self.socket_timeout = None  # redis-py's send then awaits the write itself, not through wait_for
            try:
                async with asyncio.timeout(timeout):  # type: ignore[attr-defined,unused-ignore]
                    return await base.send_packed_command(self, *args, **kwargs)  # type: ignore[attr-defined]
            except TimeoutError:
                await self.disconnect(nowait=True)  # as redis-py does on its own write timeout
                raise RedisTimeoutError("Timeout writing to socket") from None
            finally:
                self.socket_timeout = timeout

        def pack_command(self: Any, *args: Any) -> list[bytes]:
            name = args[0]
            if type(name) is str and " " not in name:
                try:
                    return [pack_in_c(args)]
                except TypeError:
                    pass  # e.g. None or a bool: redis-py's packer raises its DataError
            return base.pack_command(self, *args)  # type: ignore[attr-defined,no-any-return]

        namespace: dict[str, Any] = {
            "send_packed_command": send_packed_command,
            "gopherq_counts_writes": True,
            "__module__": __name__,
        }
        if pack_in_c is not None:
            namespace["pack_command"] = pack_command
        made = _TRACKING[base] = type(base.__name__, (base,), namespace)
    return made
