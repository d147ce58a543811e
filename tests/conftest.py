"""Registers the shared fixtures of tests/support with pytest; import helpers from their modules there."""

from tests.support.loopback import http, loopback, server  # noqa: F401
from tests.support.redis_servers import (  # noqa: F401
    aredis,
    embedded_server,
    private_redis,
    queue_name,
    redis_url,
    sync_redis,
)
from tests.support.workers import broker, make_settings, run_gopherq, start_worker, worker_process  # noqa: F401
