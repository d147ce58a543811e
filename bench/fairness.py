"""Fair keys, measured through the claim path itself: `python -m bench.fairness [--big N] [--out FILE]`.

Runs against a private redis-server (bench/services.py) with an in-process claim + settle loop (a worker with no
executor: the claim script's own cost and choices, not a task's), in one interpreter, and prints a Markdown table:

- noisy neighbour: one key with a backlog of `--big` tasks, then 1,000 keys of 10 tasks each enqueued at once:
  the small keys' wait (claim time minus enqueue time) p50 / p99 / max; FIFO (no keys) for comparison: the small
  tasks wait behind the whole backlog, its drain time at the plain claim's measured rate;
- fairness: 10 backlogged keys of equal weight, Jain's index of their claims over each `--window` seconds;
  4 backlogged keys of weights 1, 2, 3, 4: each one's share against weight / 10 (largest relative error);
- cost: claims per second with 100,000 active keys (2 tasks each) against the plain claim of as many keyless tasks.

The figures are noisy on a shared 2-core machine: the run prints the load average at its start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bench.services import RedisServer
from gopherq.core.broker import Broker, Settlement, SpecialPush
from gopherq.core.keys import QueueKeys

RESULT = b'{"status":"succeeded","attempts":1}'
BATCH = 100


def envelope(task_id: str, key: str | None) -> bytes:
    body: dict[str, Any] = {"id": task_id, "type": "pycall", "function": "bench.tasks:anoop", "args": []}
    if key is not None:
        body["fair_key"] = key
    return orjson.dumps(body)


async def backlog(redis: Redis, queue: str, key: str | None, count: int, prefix: str) -> None:
    """`count` tasks of `key` (None: the plain list), written straight into the list the claim reads (the state
    enqueue.lua leaves; much faster to set up than a million script calls)."""
    keys = QueueKeys(queue)
    target = keys.ready if key is None else keys.fair_list("d", key)
    for start in range(0, count, 5000):
        chunk = [envelope(f"{prefix}{i}", key) for i in range(start, min(count, start + 5000))]
        await redis.rpush(target, *chunk)
    if key is not None:
        await redis.zadd(keys.fair_active("d"), {key: 0}, nx=True)


async def drain(
    broker: Broker, until: Callable[[int, float], bool], seen: Callable[[bytes, float], None] | None = None
) -> tuple[int, float]:
    """Claim and ack batches until `until(claimed, elapsed)`; returns (claimed, seconds)."""
    began = time.perf_counter()
    done = 0
    while True:
        claimed = await broker.claim(BATCH, 60_000)
        if not claimed:
            break
        now = time.perf_counter()
        items = []
        for token, raw in claimed:
            body = orjson.loads(raw)
            items.append(Settlement("ack", token, body["id"], result=RESULT, fair_key=body.get("fair_key")))
            if seen is not None:
                seen(raw, now)
        await broker.settle(items, 60, 1000)
        done += len(claimed)
        if until(done, time.perf_counter() - began):
            break
    return done, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def jain(counts: list[int]) -> float:
    total = sum(counts)
    return total * total / (len(counts) * sum(c * c for c in counts)) if total else 0.0


class Bench:
    def __init__(self, redis: Redis, args: argparse.Namespace) -> None:
        self.redis = redis
        self.args = args
        self.rows: list[tuple[str, str, str]] = []
        self.runs = 0

    def broker(self) -> Broker:
        self.runs += 1
        return Broker(self.redis, f"fair{self.runs}", "bench:1:0")

    async def noisy_neighbour(self) -> None:
        big, small_keys, per_small = self.args.big, 1000, 10
        broker = self.broker()
        await backlog(self.redis, broker.keys.queue, "big", big, "b")
        pushes = [
            SpecialPush(f"s{k}-{i}", envelope(f"s{k}-{i}", f"small-{k}"))
            for i in range(per_small)
            for k in range(small_keys)
        ]
        enqueued = time.perf_counter()
        for start in range(0, len(pushes), 1000):
            await broker.push_special(pushes[start : start + 1000])
        waits: list[float] = []

        def seen(raw: bytes, now: float) -> None:
            if raw.startswith(b'{"id":"s'):
                waits.append(now - enqueued)

        claimed, seconds = await drain(broker, lambda done, _s: len(waits) >= small_keys * per_small, seen)
        await self.redis.flushdb()
        # FIFO today: the same small tasks behind the backlog in the plain list; its drain time at the plain rate.
        plain = self.broker()
        await backlog(self.redis, plain.keys.queue, None, 50_000, "p")
        count, plain_seconds = await drain(plain, lambda done, _s: False)
        plain_rate = count / plain_seconds
        await self.redis.flushdb()
        where = f"1 key x {big:,} tasks + {small_keys:,} keys x {per_small} tasks"
        self.rows.append(("noisy neighbour: small keys' wait p50", where, f"{percentile(waits, 0.5):.3f} s"))
        self.rows.append(
            ("noisy neighbour: small keys' wait p99 (target <= 1 s)", where, f"{percentile(waits, 0.99):.3f} s")
        )
        self.rows.append(("noisy neighbour: small keys' wait max", where, f"{max(waits):.3f} s"))
        self.rows.append(
            ("noisy neighbour: big key's claims meanwhile", where, f"{claimed - len(waits):,} in {seconds:.2f} s")
        )
        fifo = (big + small_keys * per_small) / plain_rate
        self.rows.append(
            ("FIFO today: the last small task's wait", f"{big:,} ahead at {plain_rate:,.0f}/s", f"{fifo:.1f} s")
        )

    async def fairness(self) -> None:
        window = self.args.window
        broker = self.broker()
        per_key = int(self.args.rate_guess * window * self.args.windows / 10) + 1000
        for k in range(10):
            await backlog(self.redis, broker.keys.queue, f"tenant-{k}", per_key, f"t{k}-")
        windows: list[Counter[bytes]] = [Counter() for _ in range(self.args.windows)]
        began = time.perf_counter()

        def seen(raw: bytes, now: float) -> None:
            index = int((now - began) / window)
            if index < len(windows):
                windows[index][orjson.loads(raw)["fair_key"].encode()] += 1

        await drain(broker, lambda _d, elapsed: elapsed >= window * len(windows), seen)
        await self.redis.flushdb()
        indexes = [jain([w[f"tenant-{k}".encode()] for k in range(10)]) for w in windows]
        claims = sum(sum(w.values()) for w in windows)
        self.rows.append(
            (
                f"Jain's index, 10 equal keys, {window:g} s windows (target >= 0.98)",
                f"{len(windows)} windows, {claims:,} claims",
                ", ".join(f"{value:.4f}" for value in indexes),
            )
        )
        weighted = self.broker()
        await self.redis.hset(weighted.keys.fair_config, mapping={f"w{w}": f"{w},,,,," for w in (1, 2, 3, 4)})
        for w in (1, 2, 3, 4):
            await backlog(self.redis, weighted.keys.queue, f"w{w}", per_key, f"w{w}-")
        shares: Counter[str] = Counter()

        def count(raw: bytes, _now: float) -> None:
            shares[orjson.loads(raw)["fair_key"]] += 1

        await drain(weighted, lambda _d, elapsed: elapsed >= window, count)
        await self.redis.flushdb()
        total = sum(shares.values())
        errors = {w: abs(shares[f"w{w}"] / total - w / 10) / (w / 10) for w in (1, 2, 3, 4)}
        detail = ", ".join(f"w{w} {shares[f'w{w}'] / total:.3f}" for w in (1, 2, 3, 4))
        self.rows.append(
            (
                "weighted shares 1:2:3:4, largest error (target <= 5 %)",
                f"{total:,} claims: {detail}",
                f"{100 * max(errors.values()):.2f} %",
            )
        )

    async def cost(self) -> None:
        keys = self.args.keys
        plain = self.broker()
        await backlog(self.redis, plain.keys.queue, None, 2 * keys, "p")
        done, seconds = await drain(plain, lambda done, _s: done >= keys)
        plain_rate = done / seconds
        await self.redis.flushdb()
        fair = self.broker()
        target = fair.keys.fair_list
        for start in range(0, keys, 2000):  # two tasks per key, so each key stays active for the whole run
            async with self.redis.pipeline(transaction=False) as pipe:
                for k in range(start, min(keys, start + 2000)):
                    pipe.rpush(target("d", f"k{k}"), envelope(f"k{k}a", f"k{k}"), envelope(f"k{k}b", f"k{k}"))
                pipe.zadd(fair.keys.fair_active("d"), {f"k{k}": 0 for k in range(start, min(keys, start + 2000))})
                await pipe.execute()
        done, seconds = await drain(fair, lambda done, _s: done >= keys)
        fair_rate = done / seconds
        await self.redis.flushdb()
        self.rows.append(("claim + settle, plain (keyless)", f"{keys:,} of {2 * keys:,} tasks", f"{plain_rate:,.0f}/s"))
        self.rows.append(
            (
                f"claim + settle, {keys:,} active keys (target >= 85 % of plain)",
                f"{keys:,} of {2 * keys:,} tasks",
                f"{fair_rate:,.0f}/s ({100 * fair_rate / plain_rate:.0f} %)",
            )
        )

    def table(self) -> str:
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        lines = [
            f"Command: `python -m bench.fairness {' '.join(sys.argv[1:])}`; "
            f"load average at start {self.load}; now {load}.",
            "",
            "| measure | setup | result |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {setup} | {value} |" for name, setup, value in self.rows]
        return "\n".join(lines) + "\n"

    load = ""


async def run(args: argparse.Namespace, url: str) -> str:
    redis = Redis.from_url(url)
    try:
        bench = Bench(redis, args)
        Bench.load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        await bench.noisy_neighbour()
        await bench.fairness()
        await bench.cost()
        return bench.table()
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=200_000, help="the noisy key's backlog (the issue: 1,000,000)")
    parser.add_argument("--keys", type=int, default=100_000, help="active keys of the cost row")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per fairness window")
    parser.add_argument("--windows", type=int, default=2, help="fairness windows")
    parser.add_argument("--rate-guess", type=float, default=20_000, help="claims/s, to size the fairness backlogs")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gopherq-fair-") as run_dir:
        server = RedisServer(Path(run_dir)).start()
        try:
            table = asyncio.run(run(args, server.url))
        finally:
            server.stop()
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
