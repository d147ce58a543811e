"""Dashboard page loads with a big backlog: every page and live fragment of `gopherq web`, timed from a client.

    python -m bench.pages [--ready 100000] [--dead 10000] [--keys 0] [--reps 20] [--out FILE]

Starts a private redis-server and fills one queue the way GoPherQ itself would: `--ready` tasks pushed, 1,000
delayed, 20 running (claimed, leases an hour long), `--dead` dead letters made by the real settle script (so the
minute and hour counts are real too), three more small queues, three schedules, and 20 destinations with a
minute's flow statistics each (the real flow scripts). Then one `gopherq web` process on a free loopback port
(token auth on), and each page is fetched `--reps` times over one keep-alive connection after two warm-up loads;
the table gives the median, p95 and worst load in milliseconds. The target is every page under 100 ms.
With `--keys N`, N fair keys with one ready task each are added (through the enqueue script), and the ready tab is
also loaded in the middle of the keys: by cursor (what its "Older" link does) and by offset (a walk of the keys).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api import _gopherq
from bench.services import RedisServer, free_port, stop_process, wait_for

QUEUE = "bench_pages"
TOKEN = "bench-token-0123456789abcdef"
TARGET = "https://api.partner.example/v1/orders/{n}?tenant=acme"
HOSTS = [f"api{n}.partner.example" for n in range(20)]

SCHEDULES = "".join(
    f'[[schedules]]\nname = "{name}"\ncron = "{rule}"\ntimezone = "Europe/Berlin"\nqueue = "{QUEUE}"\n'
    f'task = {{ url = "https://api.partner.example/{name}" }}\n'
    for name, rule in (("nightly", "0 3 * * *"), ("hourly", "0 * * * *"), ("reports", "30 6 * * 1"))
)


def envelope(n: int, now: float) -> bytes:
    return json.dumps(
        {
            "id": f"task-{n:07d}",
            "method": "POST",
            "url": TARGET.format(n=n),
            "headers": {"Content-Type": "application/json", "Authorization": "Bearer not-a-real-token"},
            "body": {"order": n, "items": [1, 2, 3]},
            "max_attempts": 5,
            "created_at": now,
        },
        separators=(",", ":"),
    ).encode()


async def fill(url: str, ready: int, dead: int, keys: int = 0) -> dict[str, str]:
    """The backlog; returns task ids to look up (a ready one at the far end, a dead one)."""
    import redis.asyncio as aioredis

    from gopherq.core.broker import Broker
    from gopherq.core.flow import FlowGate, FlowLimits
    from gopherq.core.outcomes import OutcomePolicy
    from gopherq.core.registry import QueueRegistry
    from gopherq.core.results import ErrorInfo
    from gopherq.core.settings import load_settings
    from gopherq.core.task import task_from_dict

    client = aioredis.Redis.from_url(url)
    now = time.time()
    broker = Broker(client, QUEUE, worker_id="bench:1:1")
    registry = QueueRegistry(client)
    for name in (QUEUE, "bench_a", "bench_b", "bench_c"):
        await registry.note(name)
    # dead letters through the real settle script, 1,000 at a time
    settings = load_settings(None, {"queue": {"name": QUEUE}}, environ={})
    policy = OutcomePolicy(settings.queue, "bench:1:1")
    for start in range(0, dead, 1000):
        batch = [envelope(n, now) for n in range(1_000_000 + start, 1_000_000 + min(start + 1000, dead))]
        await broker.push(batch)
        claimed = await broker.claim(len(batch), 60_000) or []
        items = []
        for token, raw in claimed:
            task = task_from_dict(json.loads(raw))
            error = ErrorInfo("http_status", "HTTP 503", {"status_code": 503, "body": "upstream unavailable"})
            items.append(policy.dead(token, task, "retries_exhausted", error, now - 1, now).settlement)
        timing = (len(items) * 120, len(items), len(items) * 900, len(items))
        await broker.settle(items, 86400, max(dead, 10_000), timing)
    # ready, delayed, running
    for start in range(0, ready, 10_000):
        async with client.pipeline(transaction=False) as pipe:
            pipe.rpush(QUEUE, *(envelope(n, now) for n in range(start, min(start + 10_000, ready))))
            await pipe.execute()
    await broker.push_delayed([(envelope(2_000_000 + n, now), int((now + 3600 + n) * 1000)) for n in range(1000)])
    await client.lpush(QUEUE, *(envelope(3_000_000 + n, now) for n in range(20)))
    await broker.claim(20, 3_600_000)
    for name in ("bench_a", "bench_b", "bench_c"):
        await client.rpush(name, *(envelope(4_000_000 + n, now) for n in range(100)))
    # destinations: a minute of attempts on each host, one circuit open
    gate = FlowGate(client, QUEUE)
    limits = FlowLimits(rate=100, burst=100, circuit_failures=5)
    for host in HOSTS:
        tokens = [f"{host}-{n}" for n in range(50)]
        await gate.admit([(host, limits, token, None) for token in tokens], int((now + 60) * 1000))
        signals = [("ok", "ok", 0.05 + n / 500) for n in range(44)] + [("slow", "429", 0.2)] * 2
        signals += [("error", "5xx", 1.0)] * (5 if host == HOSTS[0] else 4)  # five in a row open the first
        await gate.done([(host, limits, token, *signal) for token, signal in zip(tokens, signals, strict=False)])
    last_ready = (await client.lindex(QUEUE, -1)) or b"{}"
    ids = {"ready": json.loads(last_ready)["id"], "dead": f"task-{1_000_000 + dead - 1:07d}"}
    if keys:
        ids["cursor"] = await fill_keys(client, broker, settings, keys, ready + 20)
    await client.aclose()
    return ids


async def fill_keys(client: Any, broker: Any, settings: Any, keys: int, before: int) -> str:
    """`keys` fair keys of one task each; returns the cursor of the ready page in the middle of them."""
    from gopherq.core.broker import SpecialPush
    from gopherq.core.inspect import Inspector

    now = time.time()
    for start in range(0, keys, 5000):
        pushes = []
        for n in range(start, min(start + 5000, keys)):
            body = json.loads(envelope(5_000_000 + n, now))
            body["fair_key"] = f"tenant-{n:06d}"
            pushes.append(SpecialPush(body["id"], json.dumps(body, separators=(",", ":")).encode()))
        await broker.push_special(pushes)
    page = await Inspector(client, settings).ready(QUEUE, before + keys // 2 - 25, 25)
    return str(page.next_cursor)


def pages(ids: dict[str, str], ready: int, dead: int, keys: int = 0) -> list[tuple[str, str]]:
    q = f"/queues/{QUEUE}"
    return [
        ("overview", "/"),
        ("overview (live fragment)", "/fragments/overview"),
        ("workers", "/workers"),
        ("queue: ready tab", f"{q}?tab=ready"),
        ("queue: ready, last page", f"{q}?tab=ready&offset={max(0, ready - 25)}"),
        ("queue: delayed tab", f"{q}?tab=delayed"),
        ("queue: running tab", f"{q}?tab=running"),
        ("queue: dead tab", f"{q}?tab=dead"),
        ("queue: dead, last page", f"{q}?tab=dead&offset={max(0, dead - 25)}"),
        ("queue: chart 24 h", f"{q}?span=24h"),
        ("queue: chart 7 days", f"{q}?span=7d"),
        ("queue (live fragment)", f"/fragments{q}?tab=ready&span=1h"),
        *(
            [
                ("queue: ready, mid-keys by cursor", f"{q}?tab=ready&cursor={ids['cursor']}"),
                ("queue: ready, mid-keys by offset", f"{q}?tab=ready&offset={ready + 20 + keys // 2}"),
            ]
            if keys
            else []
        ),
        ("task: dead", f"{q}/tasks/{ids['dead']}"),
        ("task: ready, last in line", f"{q}/tasks/{ids['ready']}"),
        ("dead letter", f"{q}/dead/{ids['dead']}"),
        ("destinations", "/destinations"),
        ("schedules", "/schedules"),
        ("redis", "/redis"),
        ("metrics", "/metrics"),
        ("API: queues", "/v1/queues"),
    ]


def measure(port: int, path: str, reps: int) -> tuple[list[float], int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    times = []
    status = 0
    for n in range(reps + 2):
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        status = response.status
        if n >= 2:
            times.append((time.perf_counter() - started) * 1000)
    connection.close()
    return times, status


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.splitlines()[0])
    parser.add_argument("--ready", type=int, default=100_000)
    parser.add_argument("--dead", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=0, help="fair keys of one ready task each")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gopherq-bench-pages-") as tmp:
        run_dir = Path(tmp)
        redis = RedisServer(run_dir).start()
        proc = None
        try:
            started = time.perf_counter()
            ids = asyncio.run(fill(redis.url, args.ready, args.dead, args.keys))
            filled = time.perf_counter() - started
            port = free_port()
            config = run_dir / "gopherq-web.toml"
            config.write_text(
                f'[redis]\nurl = "{redis.url}"\n[queue]\nname = "{QUEUE}"\n[web]\nport = {port}\n'
                f'token = "{TOKEN}"\n[logging]\nlevel = "WARNING"\n' + SCHEDULES
            )
            log = (run_dir / "web.log").open("wb")
            proc = subprocess.Popen(
                [_gopherq(), "web", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, env={**os.environ}
            )
            log.close()
            wait_for(lambda: _up(port), 30, "gopherq web")
            lines = [
                f"Page loads of `gopherq web` with {args.ready:,} ready and {args.dead:,} dead tasks "
                + (f"and {args.keys:,} fair keys " if args.keys else "")
                + f"({args.reps} loads each, ms; backlog filled in {filled:.1f} s):",
                "",
                "| page | median | p95 | worst | status |",
                "| --- | --- | --- | --- | --- |",
            ]
            worst: list[float] = []
            for name, path in pages(ids, args.ready, args.dead, args.keys):
                times, status = measure(port, path, args.reps)
                times.sort()
                p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
                worst.append(p95)
                lines.append(f"| {name} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} | {status} |")
            lines += ["", f"Slowest p95: {max(worst):.1f} ms (target: every page under 100 ms)."]
        finally:
            if proc is not None:
                stop_process(proc)
            redis.stop()
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _up(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/healthz")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


if __name__ == "__main__":
    main()
