"""What one page of the ready listing costs the server with many fair keys: by cursor, and by offset (a walk).

    python -m bench.ready_listing [--keys 100000] [--page 25] [--reps 7]

Starts a private redis-server, enqueues `--keys` tasks through the enqueue script, each with a fair key of its
own, and reads a page of `Inspector.ready` (what `gopherq tasks ready`, the API and the queue page's ready tab read)
at the head, from the cursor of the middle page, and from offsets in the middle and at the end of the keys.
Each is read `--reps` times; the table gives the median of the server's own time for the page's script calls
(INFO commandstats, so a loaded client machine does not blur it), the calls made and the wall time. The issue's
target: a page by cursor costs O(page) whatever the number of keys.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.services import RedisServer

QUEUE = "bench_ready"


async def measure(url: str, keys: int, page: int, reps: int) -> list[str]:
    import redis.asyncio as aioredis

    from gopherq.core import codec
    from gopherq.core.broker import Broker, SpecialPush
    from gopherq.core.inspect import Inspector
    from gopherq.core.settings import load_settings

    client = aioredis.Redis.from_url(url)
    broker = Broker(client, QUEUE, "bench:1:1")
    started = time.perf_counter()
    for start in range(0, keys, 5000):
        pushes = []
        for n in range(start, min(start + 5000, keys)):
            body = {"id": f"t{n:07d}", "url": "https://hooks.example/x", "fair_key": f"tenant-{n:07d}"}
            pushes.append(SpecialPush(body["id"], codec.dumps({**body, "created_at": time.time()})))
        await broker.push_special(pushes)
    filled = time.perf_counter() - started
    inspector = Inspector(client, load_settings(None, {"queue": {"name": QUEUE}}, environ={}))
    middle = await inspector.ready(QUEUE, keys // 2 - page, page)
    reads: list[tuple[str, dict[str, Any]]] = [
        ("head", {"offset": 0}),
        ("middle, by cursor", {"cursor": middle.next_cursor}),
        ("middle, by offset", {"offset": keys // 2}),
        ("last page, by offset", {"offset": max(0, keys - page)}),
    ]
    lines = [
        f"One ready page ({page} tasks) among {keys:,} fair keys (filled in {filled:.1f} s; median of {reps}):",
        "",
        "| page | server ms | script calls | wall ms |",
        "| --- | --- | --- | --- |",
    ]
    for name, where in reads:
        server, calls, wall = [], 0, []
        for _ in range(reps):
            await client.config_resetstat()
            began = time.perf_counter()
            shown = await inspector.ready(QUEUE, limit=page, **where)
            wall.append((time.perf_counter() - began) * 1000)
            stat = (await client.info("commandstats"))["cmdstat_evalsha"]
            server.append(stat["usec"] / 1000)
            calls = int(stat["calls"])
            assert len(shown.items) == page, (name, len(shown.items))
        lines.append(f"| {name} | {statistics.median(server):.2f} | {calls} | {statistics.median(wall):.1f} |")
    await client.aclose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ready_listing", description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=25)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gopherq-bench-ready-") as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            lines = asyncio.run(measure(redis.url, args.keys, args.page, args.reps))
        finally:
            redis.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
