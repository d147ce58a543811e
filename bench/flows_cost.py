"""`python -m bench.flows_cost`: what a fan-in member costs beyond a plain task, in CPU, worker and Redis side.

Against a private redis-server (nothing else runs on it) and one worker process of its own. Each turn stages its
tasks while the queue is paused, then resumes it and times the drain; CPU is read from /proc for the worker (and any
children) and from INFO for Redis (process CPU, and the time spent in scripts from INFO commandstats). Turns
alternate plain / fan-in so a machine's drift hits both alike:

- plain: N no-op tasks pushed raw (RPUSH), as the plain drain row of `bench.flows`;
- fan-in: a flow of N no-op children into one join, created while paused (its creation's Redis CPU and wall time
  reported apart), then drained to the join's end.

Prints, per variant, the median over turns of: µs of worker CPU per task, µs of Redis CPU per task, µs in EVALSHA
per task (wall time inside scripts: inflated on a loaded machine), the drain rate (from the first ack; creation
excluded) and, for the fan-in, the creation (the plan's building included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.flows import acked, fan_in, start_worker, wait_for
from bench.services import RedisServer, stop_process
from gopherq.core import codec
from gopherq.core.flows.store import FlowStore
from gopherq.core.keys import QueueKeys

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and its live descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
    total, family = 0.0, {pid}
    changed = True
    while changed:
        changed = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                changed = True
    for member in family:
        total += times.get(member, 0.0)
    return total


async def redis_cpu(redis: Any) -> tuple[float, float]:
    """(process CPU seconds, seconds spent in EVALSHA) of the Redis server so far."""
    cpu = await redis.info("cpu")
    stats = await redis.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {}).get("usec", 0) / 1e6
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], evalsha


async def staged(redis: Any, keys: QueueKeys, worker: int, stage: Any, done: Any, count: int) -> dict[str, float]:
    """Pause, stage, resume and drain; the figures of one turn."""
    await redis.set(keys.paused, str(time.time()))
    await asyncio.sleep(1.2)  # a worker mid-claim sees the pause
    before_stage = await redis_cpu(redis)
    started = time.perf_counter()
    await stage()
    staging = time.perf_counter() - started
    after_stage = await redis_cpu(redis)
    cpu0, redis0 = tree_cpu(worker), await redis_cpu(redis)
    base = await acked(redis, keys)
    await redis.delete(keys.paused)

    async def begun() -> bool:  # a paused worker looks again only every second or so: time from the first ack
        return await acked(redis, keys) > base

    await wait_for(begun)
    started = time.perf_counter()
    await wait_for(done)
    elapsed = time.perf_counter() - started
    cpu1, redis1 = tree_cpu(worker), await redis_cpu(redis)
    return {
        "worker_us": (cpu1 - cpu0) / count * 1e6,
        "redis_us": (redis1[0] - redis0[0]) / count * 1e6,
        "script_us": (redis1[1] - redis0[1]) / count * 1e6,
        "rate": (count - 1) / elapsed,
        "stage_s": staging,
        "stage_redis_s": after_stage[0] - before_stage[0],
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory)).start()
        redis = aioredis.Redis.from_url(server.url)
        queue = "bench_cost"
        keys = QueueKeys(queue)
        store = FlowStore(redis, queue)
        worker = start_worker(directory, server.url, queue, args.concurrency, 1)
        results: dict[str, list[dict[str, float]]] = {"plain": [], "fan-in": []}
        n = args.children
        try:
            await asyncio.sleep(2)
            for turn in range(args.turns + 1):  # turn 0 warms up
                base = await acked(redis, keys)

                async def push(turn: int = turn) -> None:
                    for start in range(0, n, 5000):
                        ids = range(start, start + 5000)
                        batch = [codec.dumps({"id": f"p{turn}-{i}", "type": "noop"}) for i in ids]
                        await redis.rpush(keys.ready, *batch[: n - start])

                async def pushed(base: int = base) -> bool:
                    return await acked(redis, keys) - base >= n

                plain = await staged(redis, keys, worker.pid, push, pushed, n)
                flow_id = f"cost{turn}"

                async def create(flow_id: str = flow_id) -> None:
                    await store.create(fan_in(flow_id, queue, n))

                async def joined(flow_id: str = flow_id) -> bool:
                    return await redis.exists(keys.result(f"{flow_id}.join")) == 1

                fan = await staged(redis, keys, worker.pid, create, joined, n + 1)
                if turn:
                    results["plain"].append(plain)
                    results["fan-in"].append(fan)
                    print(f"turn {turn}: plain {plain}\n        fan-in {fan}", file=sys.stderr)
                await redis.delete(keys.dag(flow_id))
        finally:
            stop_process(worker)
            await redis.aclose()
            server.stop()
    print(f"| {n:,} tasks, median of {args.turns} | worker µs/task | Redis µs/task | EVALSHA µs/task | drain tasks/s |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(
            f"| {name} | {med['worker_us']:.1f} | {med['redis_us']:.1f} | {med['script_us']:.1f} | {med['rate']:,.0f} |"
        )
    creation = [row for row in results["fan-in"]]
    print(
        f"fan-in creation: {statistics.median(r['stage_s'] for r in creation):.3f} s wall, "
        f"{statistics.median(r['stage_redis_s'] for r in creation):.3f} s Redis CPU"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.flows_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
