"""Opening the Redis client a gopherq process uses: a URL, the seed's host:port address, a Redis Cluster, or
the embedded server (started on demand and stopped by the last gopherq process that leaves it)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from gopherq.core.embedded import EmbeddedRedis, client_name
from gopherq.core.errors import ConfigError
from gopherq.core.settings import Settings


def describe_target(settings: Settings) -> str:
    """Where Redis is, for log lines (no secrets)."""
    cfg = settings.redis
    if cfg.url:
        from gopherq.core.settings import mask_url

        return mask_url(cfg.url)
    if cfg.address:
        return f"{cfg.address} db {cfg.db}"
    return f"embedded ({settings.data_dir})"


def _address_kwargs(address: str) -> dict[str, Any]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"redis.address: expected host:port, got {address!r}")
    return {"host": host.strip("[]") or "127.0.0.1", "port": int(port)}


class Connection:
    """The Redis client of one gopherq process. `open()` returns it; `close()` releases it (and stops the
    embedded server when this was the last gopherq process using it)."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.name = client_name(role)
        self.embedded = (
            EmbeddedRedis(settings.data_dir, settings.redis.server_binary) if settings.redis.embedded else None
        )
        self.client: Any = None

    async def open(self) -> Any:
        cfg = self.settings.redis
        password = cfg.password.get_secret_value() if cfg.password else None
        # The read timeout must outlast a blocking fetch, or an idle queue would look like a Redis fault.
        common: dict[str, Any] = {
            "client_name": self.name,
            "socket_connect_timeout": 5,
            "socket_timeout": self.settings.worker.fetch_timeout + 10,
            # One quick retry smooths over a dropped connection; longer outages are the caller's to handle (the
            # worker backs off with jitter and logs), instead of redis-py's default ten retries per command.
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        }
        if self.embedded is not None:
            url = await asyncio.to_thread(self.embedded.ensure_running)
            self.client = Redis.from_url(url, **common)
            return self.client
        if not (cfg.url or "").startswith("unix:"):
            common["socket_keepalive"] = True
        if cfg.cluster:
            if cfg.url:
                self.client = RedisCluster.from_url(cfg.url, password=password, **common)
            else:
                assert cfg.address is not None
                self.client = RedisCluster(password=password, **_address_kwargs(cfg.address), **common)
        elif cfg.url:
            kwargs = dict(common)
            if password:
                kwargs["password"] = password
            self.client = Redis.from_url(cfg.url, **kwargs)
        else:
            assert cfg.address is not None
            self.client = Redis(password=password, db=cfg.db, **_address_kwargs(cfg.address), **common)
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop, True, self.name)
