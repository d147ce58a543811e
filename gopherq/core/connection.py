"""Opening the Redis client a gopherq process uses: a URL, the seed's host:port address, a Redis Cluster, a
Sentinel-managed master, or the embedded server (started on demand and stopped by the last gopherq process that
leaves it); with TLS and an ACL user where the settings ask for them."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
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
    if cfg.sentinels:
        return f"master {cfg.service_name!r} of Sentinels {', '.join(cfg.sentinels)} db {cfg.db}"
    return f"embedded ({settings.data_dir})"


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
        self._sentinel: Sentinel | None = None

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
        return self.client

    def _sentinel_master(self, password: str | None, tls: dict[str, Any], common: dict[str, Any]) -> Any:
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
        return self._sentinel.master_for(cfg.service_name, password=password, db=cfg.db, **ssl, **common)

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
