"""A `/metrics` scrape and the fair keys' reads stay bounded with 100,000 fair keys (issue 24): the scrape, the
overview's and the Keys page's live fragments and the API's key list each send a bounded number of commands and
bytes from Redis, however many keys there are (the keys are read from the backlog set the scripts keep, most
backlogged first), and what they show is still right: the most backlogged keys, ties by name, with their backlogs
and running tasks.

Measured on a private redis-server (nothing else talks to it) as the growth of `total_commands_processed` and
`total_net_output_bytes` (INFO stats) across one request, less what the INFO call itself adds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import redis.asyncio as aioredis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gopherq.core import codec
from gopherq.core.broker import Broker, SpecialPush
from gopherq.core.keys import WAKE_MARKER
from gopherq.core.settings import load_settings
from gopherq.web.app import create_app
from gopherq.web.fair_metrics import FAIR_KEYS_MAX
from tests.support.redis_servers import PrivateRedis

KEYS = 100_000
QUEUE = "fairscrape"

#: Most commands and bytes one request may read from Redis with 100,000 keys (a read of every key's lists would
#: send hundreds of thousands of commands).
COMMANDS_BUDGET = 3_000
BYTES_BUDGET = 256 * 1024


async def stats(redis: aioredis.Redis) -> tuple[int, int]:
    info = await redis.info("stats")
    return int(info["total_commands_processed"]), int(info["total_net_output_bytes"])


def scraped(text: str, metric: str) -> dict[str, float]:
    """The per-key values of one gauge of the queue, from the exposition text."""
    prefix = f'{metric}{{key="'
    values = {}
    for line in text.splitlines():
        if line.startswith(prefix) and f'queue="{QUEUE}"' in line:
            key = line[len(prefix) :].split('"', 1)[0]
            values[key] = float(line.rsplit(" ", 1)[1])
    return values


async def test_a_scrape_and_the_keys_reads_are_bounded_and_right_with_100k_keys(
    private_redis: Callable[..., PrivateRedis],
) -> None:
    server = private_redis()
    settings = load_settings(None, {"redis": {"url": server.url}, "queue": {"name": QUEUE}}, environ={})
    redis = aioredis.Redis.from_url(server.url)
    try:
        broker = Broker(redis, QUEUE, "w1")
        # 25 big keys of 50, 49, ... 26 tasks, then 100,000 keys of one task each.
        backlog = Counter({f"big-{i:02d}": 50 - i for i in range(25)})
        backlog.update({f"tenant-{n:06d}": 1 for n in range(KEYS)})
        items = [(key, i) for key, n in backlog.items() for i in range(n)]
        for start in range(0, len(items), 5000):
            pushes = []
            for key, i in items[start : start + 5000]:
                task_id = f"{key}-{i}"
                body = {"id": task_id, "url": "https://partner.example/hook", "fair_key": key}
                pushes.append(SpecialPush(task_id, codec.dumps(body)))
            await broker.push_special(pushes)
        # A claim takes turns among the keys (the big ones first by name): their backlogs drop, they run.
        got = await broker.claim(60, 60_000)
        assert got is not None
        running = Counter(codec.loads(raw)["fair_key"] for _, raw in got if raw != WAKE_MARKER)
        backlog.subtract(running)
        assert len(running) > 20
        expected = sorted(backlog.items(), key=lambda item: (-item[1], item[0]))[:FAIR_KEYS_MAX]

        app = create_app(settings, aioredis.Redis.from_url(settings.redis.url))
        web = TestServer(app, host="127.0.0.1")
        await web.start_server()
        try:
            async with ClientSession() as session:
                base = await stats(redis)
                info_cost = [a - b for a, b in zip(await stats(redis), base, strict=True)]
                read: dict[str, tuple[int, int]] = {}
                bodies: dict[str, str] = {}
                for name, path in (
                    ("metrics", "/metrics"),
                    ("overview fragment", "/fragments/overview"),
                    ("keys fragment", f"/fragments/queues/{QUEUE}/keys"),
                    ("api keys", f"/v1/queues/{QUEUE}/keys?limit={FAIR_KEYS_MAX}"),
                ):
                    before = await stats(redis)
                    async with session.get(web.make_url(path)) as response:
                        bodies[name] = await response.text()
                        assert response.status == 200, (name, bodies[name][:300])
                    after = await stats(redis)
                    read[name] = (after[0] - before[0] - info_cost[0], after[1] - before[1] - info_cost[1])
        finally:
            await web.close()
        print("\n(commands, bytes) read from Redis per request with 100,000 fair keys:", read)
        over = {name: cost for name, cost in read.items() if cost[0] > COMMANDS_BUDGET or cost[1] > BYTES_BUDGET}
        assert not over, f"reads over {COMMANDS_BUDGET} commands or {BYTES_BUDGET} bytes: {over}"

        assert scraped(bodies["metrics"], "gopherq_fair_key_backlog") == {key: float(n) for key, n in expected}
        assert scraped(bodies["metrics"], "gopherq_fair_key_running") == {
            key: float(running[key]) for key, _ in expected
        }
        listed = codec.loads(bodies["api keys"])["keys"]
        assert [(entry["key"], entry["backlog"], entry["running"]) for entry in listed] == [
            (key, n, running[key]) for key, n in expected
        ]
        assert "big-00" in bodies["keys fragment"] and "tenant-099999" not in bodies["keys fragment"]
    finally:
        await redis.aclose()
