"""`python -m bench.flows`: the flow benchmark rows (issue 23), against a Redis and worker processes of its own.

- fan-in: N no-op children into one join, as a rate of tasks per second, next to the plain drain rate of N no-op
  tasks pushed raw and of N pushed as a client pushes them, each with its whereabouts record, which a flow's
  members have too (same worker, same Redis; timed from the push, whose cost is small, to the last ack). Two rows:
  from the flow's creation (the client's call, included: the cost a user pays) to the join's end, and from the first
  member's start (its result record's `started_at`) to the join's end (`finished_at`), creation excluded;
- join latency: chords of 10 no-op children run one after another, the time from the last child's finish (its result
  record's `finished_at`, taken just before its settle) to the join's start (`started_at`), p50 / p99; with
  `--backlog N`, again with N plain no-op tasks pushed after each chord's creation (a busy queue);
- memory: the Redis memory of a flow's bookkeeping per member beyond the tasks themselves (MEMORY USAGE of the
  flow's hash, its index entry aside), for a fan-in of N.

Prints a markdown table. Sizes are small by default (the machine is shared); `--children 100000` is the issue's.
`--turns N` runs the plain drain and the fan-in N times in turns and shows medians (and each turn's ratios): the
two are then measured under the same conditions, which a single pair on a drifting machine is not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.flows.spec import Node, Policy, plan
from gopherq.core.flows.store import FlowStore
from gopherq.core.keys import QueueKeys
from gopherq.core.task import Task

WORKER = """
import sys
from gopherq import hookimpl, load_settings
from gopherq.core.runner import configure_logging, run_worker

class Noop:
    async def execute(self, task, context):
        return None

class NoopPlugin:
    @hookimpl
    def gopherq_register_executors(self, register, settings):
        register("noop", Noop())

settings = load_settings(sys.argv[1])
configure_logging("WARNING")
sys.exit(run_worker(settings, extra_plugins={"noop": NoopPlugin()}))
"""


def fan_in(flow_id: str, queue: str, children: int) -> Any:
    nodes = [Node(f"c{i}", Task(id="x", type="noop")) for i in range(children)]
    nodes.append(Node("join", Task(id="x", type="noop"), [f"c{i}" for i in range(children)], Policy("all_settled")))
    return plan(flow_id, queue, nodes)


async def wait_for(predicate: Any, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        await asyncio.sleep(0.005)


async def acked(redis: Any, keys: QueueKeys) -> int:
    return int(await redis.hget(keys.stats, "acked") or 0)


async def drain(redis: Any, keys: QueueKeys, count: int, recorded: bool = False) -> float:
    """Push `count` raw no-op tasks (`recorded`: with their whereabouts, as a client's push and a flow's creation
    write them) and time until all are acked; tasks per second."""
    before = await acked(redis, keys)
    broker = Broker(redis, keys.queue)
    started = time.perf_counter()
    for start in range(0, count, 5000):
        ids = [f"p{i}" for i in range(start, min(count, start + 5000))]
        envelopes = [codec.dumps({"id": task_id, "type": "noop"}) for task_id in ids]
        await (broker.push(envelopes, ids) if recorded else redis.rpush(keys.ready, *envelopes))

    async def done() -> bool:
        return await acked(redis, keys) - before >= count

    await wait_for(done)
    return count / (time.perf_counter() - started)


async def fan_in_rate(redis: Any, store: FlowStore, count: int, flow_id: str) -> tuple[float, float]:
    """(rate from the creation call, rate from the first member's start), both to the join's end."""
    laid = fan_in(flow_id, store.keys.queue, count)
    started = time.perf_counter()
    await store.create(laid)
    CREATION.append(time.perf_counter() - started)

    async def done() -> bool:
        return await redis.exists(store.keys.result(f"{flow_id}.join")) == 1

    await wait_for(done)
    whole = (count + 1) / (time.perf_counter() - started)
    first = float("inf")
    for start in range(0, count, 5000):  # read after the timing: the earliest start of any member
        names = [store.keys.result(f"{flow_id}.c{i}") for i in range(start, min(count, start + 5000))]
        starts = [codec.loads(raw)["started_at"] for raw in await redis.mget(names) if raw]
        first = min([first, *starts])
    join = codec.loads(await redis.get(store.keys.result(f"{flow_id}.join")))
    return whole, (count + 1) / (join["finished_at"] - first)


#: Seconds the fan-in's creation took (the client's `create`, every script call of it), for the table.
CREATION: list[float] = []


async def join_latency(redis: Any, store: FlowStore, flows: int, backlog: int = 0, tag: str = "") -> list[float]:
    """Chords of 10 one after another: each gap from the last child's finish to the join's start. With `backlog`,
    that many plain no-op tasks are pushed after each chord's creation (a busy queue: the children run first, and
    the join becomes ready while the backlog drains)."""
    gaps = []
    for index in range(flows):
        flow_id = f"bench-lat{tag}{index}"
        await store.create(fan_in(flow_id, store.keys.queue, 10))
        if backlog:
            envelopes = [codec.dumps({"id": f"b{index}.{i}", "type": "noop"}) for i in range(backlog)]
            await redis.rpush(store.keys.ready, *envelopes)
        join_key = store.keys.result(f"{flow_id}.join")

        async def done(key: str = join_key) -> bool:
            return await redis.exists(key) == 1

        await wait_for(done, 30)
        records = await redis.mget([store.keys.result(f"{flow_id}.c{i}") for i in range(10)] + [join_key])
        parsed = [codec.loads(raw) for raw in records]
        gaps.append(parsed[-1]["started_at"] - max(record["finished_at"] for record in parsed[:-1]))
    return gaps


async def memory_per_member(redis: Any, store: FlowStore, count: int) -> float:
    """Bytes of bookkeeping per member of a fan-in of `count` (created on a queue no worker serves)."""
    laid = fan_in("bench-mem", store.keys.queue, count)
    await store.create(laid)
    used = await redis.memory_usage(store.keys.dag("bench-mem"), samples=0)
    join_envelope = len(laid.members[-1][3])  # the join's stored envelope is the task itself
    return (used - join_envelope) / (count + 1)


async def cleanup(redis: Any, queue: str) -> None:
    async for key in redis.scan_iter(match=f"gopherq:{{{queue}}}:*", count=1000):
        await redis.delete(key)
    await redis.delete(queue)


def start_worker(directory: str, url: str, queue: str, concurrency: int, processes: int) -> subprocess.Popen[bytes]:
    """A GoPherQ worker (the WORKER script: no-op tasks and flows' steps) on `queue` at `url`, its files in
    `directory`."""
    config = Path(directory) / "gopherq.toml"
    config.write_text(
        f'[redis]\nurl = "{url}"\n[queue]\nname = "{queue}"\n'
        f"[worker]\nconcurrency = {concurrency}\nprocesses = {processes}\n"
    )
    script = Path(directory) / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), str(config)])


async def main(args: argparse.Namespace) -> None:
    redis = aioredis.Redis.from_url(args.redis)
    queue = f"bench_flows_{os.getpid()}"
    idle = f"{queue}_idle"
    keys = QueueKeys(queue)
    store, idle_store = FlowStore(redis, queue), FlowStore(redis, idle)
    with tempfile.TemporaryDirectory() as directory:
        worker = start_worker(directory, args.redis, queue, args.concurrency, args.processes)
        try:
            await asyncio.sleep(2)
            await drain(redis, keys, 2000)  # warm-up
            runs = []  # (plain, fan-in, fan-in without its creation) per turn, taken in turns
            for turn in range(args.turns):
                plain = await drain(redis, keys, args.children)
                fan = await fan_in_rate(redis, store, args.children, f"bench-fan{turn}")
                runs.append((plain, *fan, await drain(redis, keys, args.children, recorded=True)))
            gaps = sorted(await join_latency(redis, store, args.flows))
            busy = sorted(await join_latency(redis, store, args.flows, args.backlog, "b")) if args.backlog else []
        finally:
            worker.terminate()
            worker.wait(30)
        memory = await memory_per_member(redis, idle_store, args.children)
        await cleanup(redis, queue)
        await cleanup(redis, idle)
    await redis.aclose()
    p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
    plain, fan, members, recorded = (statistics.median(run[i] for run in runs) for i in range(4))
    size = f"children = {args.children:,}, {args.processes} process(es) x {args.concurrency}"
    turns = f", median of {args.turns} turns" if args.turns > 1 else ""
    print(f"| measure ({size}{turns}) | value |")
    print("|---|---|")
    print(f"| plain no-op drain (pushed raw) | {plain:,.0f} tasks/s |")
    print(
        f"| plain no-op drain, pushed as a client pushes (each task's whereabouts recorded, as a flow member's are) "
        f"| {recorded:,.0f} tasks/s (fan-in: {fan / recorded:.0%}, creation excluded: {members / recorded:.0%}) |"
    )
    print(
        f"| fan-in of {args.children:,} children into one join (creation to join's end) | {fan:,.0f} tasks/s "
        f"({fan / plain:.0%} of plain; the creation call: {statistics.median(CREATION):.2f} s, "
        "members running meanwhile) |"
    )
    print(
        f"| the same fan-in, creation excluded (first member's start to join's end) | {members:,.0f} tasks/s "
        f"({members / plain:.0%} of plain) |"
    )
    if args.turns > 1:  # each turn's own ratios: the plain drain and the fan-in ran one after the other
        each = ", ".join(f"{run[1] / run[0]:.0%} / {run[2] / run[0]:.0%}" for run in runs)
        print(f"| each turn: fan-in / creation excluded, of that turn's plain drain | {each} |")
    print(
        f"| last child's finish -> join's start, {len(gaps)} chords of 10, p50 / p99 | "
        f"{statistics.median(gaps) * 1000:.2f} / {p99 * 1000:.2f} ms |"
    )
    if busy:
        print(
            f"| the same, {args.backlog:,} plain tasks pushed after each chord (the join ready while they drain), "
            f"p50 / p99 | {statistics.median(busy) * 1000:.2f} / "
            f"{busy[min(len(busy) - 1, int(len(busy) * 0.99))] * 1000:.2f} ms |"
        )
    print(f"| Redis memory per member beyond the task (fan-in of {args.children:,}) | {memory:.0f} bytes |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.flows", description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=os.environ.get("GOPHERQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument("--flows", type=int, default=200, help="chords timed for the join latency")
    parser.add_argument(
        "--backlog", type=int, default=0, help="join latency again, this many plain tasks pushed after each chord"
    )
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--turns", type=int, default=1, help="plain drain and fan-in, in turns; medians shown")
    asyncio.run(main(parser.parse_args()))
