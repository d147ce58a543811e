"""Fair keys, measured through the claim path itself: `python -m bench.fairness [--big N] [--out FILE]`.

Runs against a private redis-server (bench/services.py) with an in-process claim + settle loop (a worker with no
executor: the claim script's own cost and choices, not a task's), in one interpreter, and prints a Markdown table:

- noisy neighbour: one key with a backlog of `--big` tasks, then 1,000 keys of 10 tasks each enqueued at once:
  the small keys' wait (claim time minus enqueue time) p50 / p99 / max; FIFO (no keys) for comparison: the small
  tasks wait behind the whole backlog, its drain time at the plain claim's measured rate;
- fairness: 10 backlogged keys of equal weight, Jain's index of their claims over each `--window` seconds;
  4 backlogged keys of weights 1, 2, 3, 4: each one's share against weight / 10 (largest relative error). The
  backlogs are sized from the plain claim rate the run measured first (`--rate-guess` overrides it), with room to
  spare, and a row whose backlogs ran out before its time says so instead of printing a share;
- cost: claims per second with `--keys` active keys (`--per-key` tasks each) against the plain claim of as many
  keyless tasks, and what each claimed task cost in CPU: the redis-server process (INFO cpu) and this one; with
  `--rounds N`, N rounds of a plain and a keyed run back to back (which goes first alternates), the best of each,
  and the median of the rounds' own keyed / plain ratios: on a machine whose speed drifts between runs, each
  round's two runs see much the same machine, where the best of each may come from different moments.

The rates are noisy on a shared 2-core machine (the run prints the load average at its start); the CPU figures per
task much less so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
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
from gopherq.core import fairspec
from gopherq.core.broker import Broker, Settlement, SpecialPush
from gopherq.core.keys import QueueKeys

#: Fewest waiting tasks of a key with a backlog entry (1 with code from before BACKLOG_LISTED: every busy key).
LISTED = getattr(fairspec, "BACKLOG_LISTED", 1)

RESULT = b'{"status":"succeeded","attempts":1}'
BATCH = 100
SECTIONS = ["noisy", "fairness", "cost"]
#: The fairness backlogs hold this many times what the measured rate would claim in their time.
ROOM = 1.5


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
        if count >= LISTED:  # (a key with fewer has no entry)
            await redis.zincrby(keys.fair_backlog, count, key)


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


async def server_cpu(redis: Redis) -> float:
    """Seconds of CPU the redis-server process has used (user + system): what its work costs, whatever else the
    machine runs (the commands' own timings in INFO commandstats are wall time, which a loaded machine inflates)."""
    cpu = await redis.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def measured_drain(redis: Redis, broker: Broker, count: int) -> tuple[float, float, float]:
    """Drain `count` tasks; returns (claims/s, redis-server CPU µs per task, this process's CPU µs per task)."""
    server = await server_cpu(redis)
    cpu = time.process_time()
    done, seconds = await drain(broker, lambda done, _s: done >= count)
    cpu = time.process_time() - cpu
    server = await server_cpu(redis) - server
    return done / seconds, 1e6 * server / done, 1e6 * cpu / done


async def ran_out(redis: Redis, queue: str, keys: list[str]) -> bool:
    """Whether any of these keys' backlogs emptied (its share then says nothing about the turns)."""
    lists = QueueKeys(queue)
    lengths = [await redis.llen(lists.fair_list("d", key)) for key in keys]
    return min(lengths) == 0


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
        self.plain_rate = 0.0  # claims/s of the keyless claim + settle loop, measured first (plain())

    def broker(self) -> Broker:
        self.runs += 1
        return Broker(self.redis, f"fair{self.runs}", "bench:1:0")

    async def plain(self) -> None:
        """The keyless claim + settle rate of this machine now: the FIFO row's drain time and the fairness rows'
        backlog sizes follow from it."""
        broker = self.broker()
        await backlog(self.redis, broker.keys.queue, None, 50_000, "p")
        count, seconds = await drain(broker, lambda done, _s: False)
        self.plain_rate = count / seconds
        await self.redis.flushdb()

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
        plain_rate = self.plain_rate
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
        rate = self.args.rate_guess or self.plain_rate
        broker = self.broker()
        per_key = int(ROOM * rate * window * self.args.windows / 10) + 1000  # a tenth of the claims each
        equal = [f"tenant-{k}" for k in range(10)]
        for key in equal:
            await backlog(self.redis, broker.keys.queue, key, per_key, f"{key}-")
        windows: list[Counter[bytes]] = [Counter() for _ in range(self.args.windows)]
        began = time.perf_counter()

        def seen(raw: bytes, now: float) -> None:
            index = int((now - began) / window)
            if index < len(windows):
                windows[index][orjson.loads(raw)["fair_key"].encode()] += 1

        await drain(broker, lambda _d, elapsed: elapsed >= window * len(windows), seen)
        short = await ran_out(self.redis, broker.keys.queue, equal)
        await self.redis.flushdb()
        indexes = [jain([w[key.encode()] for key in equal]) for w in windows]
        claims = sum(sum(w.values()) for w in windows)
        self.rows.append(
            (
                f"Jain's index, 10 equal keys, {window:g} s windows (target >= 0.98)",
                f"{len(windows)} windows, {claims:,} claims, backlogs sized for {rate:,.0f}/s",
                self.short(short) or ", ".join(f"{value:.4f}" for value in indexes),
            )
        )
        weighted = self.broker()
        await self.redis.hset(weighted.keys.fair_config, mapping={f"w{w}": f"{w},,,,," for w in (1, 2, 3, 4)})
        for w in (1, 2, 3, 4):  # each key w tenths of the claims
            await backlog(self.redis, weighted.keys.queue, f"w{w}", int(ROOM * rate * window * w / 10) + 1000, f"w{w}-")
        shares: Counter[str] = Counter()

        def count(raw: bytes, _now: float) -> None:
            shares[orjson.loads(raw)["fair_key"]] += 1

        await drain(weighted, lambda _d, elapsed: elapsed >= window, count)
        short = await ran_out(self.redis, weighted.keys.queue, [f"w{w}" for w in (1, 2, 3, 4)])
        await self.redis.flushdb()
        total = sum(shares.values())
        errors = {w: abs(shares[f"w{w}"] / total - w / 10) / (w / 10) for w in (1, 2, 3, 4)}
        detail = ", ".join(f"w{w} {shares[f'w{w}'] / total:.3f}" for w in (1, 2, 3, 4))
        self.rows.append(
            (
                "weighted shares 1:2:3:4, largest error (target <= 5 %)",
                f"{total:,} claims: {detail}",
                self.short(short) or f"{100 * max(errors.values()):.2f} %",
            )
        )

    def short(self, ran_out: bool) -> str:
        """The result of a fairness row whose backlogs ran out: not a measure of the turns."""
        return "a backlog ran out: no result (raise --rate-guess)" if ran_out else ""

    async def cost(self) -> None:
        """The plain and the keyed loop, alternately `--rounds` times; the best of each (the highest rate, the
        lowest CPU per task: the runs least disturbed by whatever else the machine does)."""
        keys, per_key, rounds = self.args.keys, self.args.per_key, self.args.rounds
        plain: list[tuple[float, float, float]] = []
        fair: list[tuple[float, float, float]] = []
        for turn in range(rounds):  # each round's two runs back to back, the first of them alternating
            for keyed in (False, True) if turn % 2 == 0 else (True, False):
                (fair if keyed else plain).append(await self.cost_run(keys, per_key, keyed=keyed))
        plain_rate, fair_rate = max(run[0] for run in plain), max(run[0] for run in fair)
        plain_redis, fair_redis = min(run[1] for run in plain), min(run[1] for run in fair)
        plain_cpu, fair_cpu = min(run[2] for run in plain), min(run[2] for run in fair)
        setup = f"{keys:,} of {per_key * keys:,} tasks" + (f", best of {rounds}" if rounds > 1 else "")
        plain_total = plain_redis + plain_cpu  # the loop waits for each call: its time per task is about the sum
        self.rows.append(("claim + settle, plain (keyless)", setup, f"{plain_rate:,.0f}/s"))
        self.rows.append(
            (
                f"claim + settle, {keys:,} active keys x {per_key} tasks (target >= 85 % of plain)",
                setup,
                f"{fair_rate:,.0f}/s ({100 * fair_rate / plain_rate:.0f} %)",
            )
        )
        if rounds > 1:
            paired = sorted(keyed[0] / bare[0] for bare, keyed in zip(plain, fair, strict=True))
            self.rows.append(
                (
                    f"the same, median of the {rounds} rounds' own ratios (target >= 85 %)",
                    f"{keys:,} of {per_key * keys:,} tasks, {rounds} rounds",
                    f"{100 * statistics.median(paired):.0f} % ({100 * paired[0]:.0f}-{100 * paired[-1]:.0f} %)",
                )
            )
        self.rows.append(
            (
                "CPU per task, plain: redis-server / this process",
                setup,
                f"{plain_redis:.1f} / {plain_cpu:.1f} µs",
            )
        )
        self.rows.append(
            (
                f"CPU per task, {keys:,} keys: redis-server / this process",
                setup,
                f"{fair_redis:.1f} / {fair_cpu:.1f} µs ({100 * plain_total / (fair_redis + fair_cpu):.0f} % of plain's"
                " rate at these CPU costs)",
            )
        )

    async def cost_run(self, keys: int, per_key: int, keyed: bool) -> tuple[float, float, float]:
        """Claim `keys` tasks of `keys` keys x `per_key` tasks (keyed) or of as many keyless tasks: (claims/s,
        redis-server CPU µs per task, this process's CPU µs per task)."""
        broker = self.broker()
        if not keyed:
            await backlog(self.redis, broker.keys.queue, None, per_key * keys, "p")
        target = broker.keys.fair_list
        for start in range(0, keys if keyed else 0, 2000):  # every key active when the run starts
            batch = range(start, min(keys, start + 2000))
            async with self.redis.pipeline(transaction=False) as pipe:
                for k in batch:
                    pipe.rpush(target("d", f"k{k}"), *[envelope(f"k{k}-{i}", f"k{k}") for i in range(per_key)])
                pipe.zadd(broker.keys.fair_active("d"), {f"k{k}": 0 for k in batch})
                if per_key >= LISTED:  # (a key with fewer has no entry)
                    pipe.zadd(broker.keys.fair_backlog, {f"k{k}": per_key for k in batch})
                await pipe.execute()
        measured = await measured_drain(self.redis, broker, keys)
        await self.redis.flushdb()
        return measured

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
        if "noisy" in args.only or "fairness" in args.only:
            await bench.plain()
        if "noisy" in args.only:
            await bench.noisy_neighbour()
        if "fairness" in args.only:
            await bench.fairness()
        if "cost" in args.only:
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
    parser.add_argument(
        "--per-key", type=int, default=2, help="tasks per key in the cost row (it claims --keys tasks in all)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternate plain and keyed runs of the cost row")
    parser.add_argument(
        "--rate-guess", type=float, help="claims/s to size the fairness backlogs for (default: the measured plain rate)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run only these sections (default: all)"
    )
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
