"""The four faces of the inspection layer on one configuration file, for the operations tests: the real `gopherq`
command (a subprocess, run off the event loop so in-process workers keep their heartbeats), the `/v1` API and
`/metrics` of the web application served on loopback, and the alert rules of docs/operations.md evaluated on
that `/metrics`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gopherq.core.settings import Settings, load_settings
from gopherq.web import create_app
from tests.support.alerting import Vector, alert_rules, evaluate, scrape
from tests.support.common import GOPHERQ, cli_env

#: Timings that make leases, recovery and promotion observable in a test's lifetime.
FAST = """
heartbeat_interval = 0.5
lease_timeout = 2.0
reaper_interval = 0.5
promote_interval = 0.1
shutdown_timeout = 5.0
"""


def write_ops_config(directory: Path, redis_url: str, queue: str, extra: str = "") -> Path:
    """A config on the test Redis whose configured queue is `queue`, with fast worker timings and `extra` TOML."""
    path = directory / "gopherq.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue}"\nmax_attempts = 2\nbackoff_min = 0.2\n'
        f"backoff_max = 0.3\n[worker]{FAST}{extra}\n"
    )
    return path


class Faces:
    """The CLI, the API, /metrics and the alert rules on one config (an async context manager)."""

    def __init__(self, config: Path, redis: Any) -> None:
        self.config = config
        self.settings: Settings = load_settings(config, environ={})
        self.redis = redis
        self.rules = alert_rules()

    async def __aenter__(self) -> Faces:
        self.server = TestServer(create_app(self.settings, self.redis), host="127.0.0.1")
        await self.server.start_server()
        self.session = ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self.server.close()

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`gopherq ARGS -c CONFIG`, finished (in a thread: the test's event loop keeps running)."""
        command = [GOPHERQ, *args, "-c", str(self.config)]
        return await asyncio.to_thread(
            subprocess.run, command, env=cli_env(), capture_output=True, text=True, timeout=60
        )

    async def cli_queue(self, name: str) -> dict[str, Any] | None:
        """The queue as `gopherq queues --json` lists it (None when it is not listed)."""
        done = await self.cli("queues", "--json")
        assert done.returncode == 0, done.stderr
        return next((info for info in json.loads(done.stdout) if info["name"] == name), None)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.server.make_url(path)) as response:
            body = await response.text()
            is_json = response.content_type == "application/json"
            return response.status, json.loads(body) if is_json else body

    async def api_queue(self, name: str) -> dict[str, Any]:
        status, body = await self.get(f"/v1/queues/{name}")
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    async def api_listed(self, name: str) -> dict[str, Any] | None:
        """The queue as `GET /v1/queues` lists it (None when it is not listed)."""
        status, body = await self.get("/v1/queues")
        assert status == 200, body
        return next((info for info in body["queues"] if info["name"] == name), None)

    async def metrics(self) -> dict[str, Vector]:
        status, body = await self.get("/metrics")
        assert status == 200, body
        return scrape(body)

    async def firing(self, queue: str, samples: dict[str, Vector] | None = None) -> set[str]:
        """The alert rules of docs/operations.md (those the evaluator models) that fire for `queue` on a scrape of
        /metrics now (or on `samples`)."""
        samples = samples if samples is not None else await self.metrics()
        now = time.time()
        fired = set()
        for name, expr in self.rules.items():
            if "increase(" in expr:
                continue  # needs a range of scrapes (see tests/alerting.py)
            if any(dict(labels).get("queue") == queue for labels in evaluate(expr, samples, now)):
                fired.add(name)
        return fired


def sample(samples: dict[str, Vector], name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels` (None when there is none)."""
    for found, value in samples.get(name, {}).items():
        if all(dict(found).get(key) == wanted for key, wanted in labels.items()):
            return value
    return None
