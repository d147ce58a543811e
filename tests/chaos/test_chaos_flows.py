"""Flows under chaos: 300 flows of a chain of 3 feeding a fan-out of 10 into a join, plus 100 diamonds (4,600 HTTP
tasks to a loopback server), 10 % of the non-join members failing permanently under `all_settled`, 50 flows under
`fail_fast` with one failing member; two worker processes, each SIGKILLed once (and restarted), and the private
Redis (appendfsync always) SIGKILLed once, during the run. Every flow ends (0 hung), every all_settled join runs and
no fail_fast join does, a join that ran twice did so only because its worker died under it (at-least-once; the
loopback counts requests per task id), and reconciliation finds nothing to repair, during the run or after it."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from gopherq import AsyncClient, load_settings
from gopherq.canvas import Flow, chain, chord, group, http_step
from gopherq.core.flows.store import FINAL_STATES
from gopherq.core.keys import QueueKeys
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_stats
from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer

FANS = 300  # chain of 3 -> fan-out of 10 -> join: 14 tasks each
FAIL_FAST = 50  # of which this many are fail_fast with one failing member (the others all_settled)
DIAMONDS = 100  # a -> (b, c) -> d, all_settled
FAILING = 0.10  # share of the non-join members of all_settled flows that fail permanently (HTTP 404)


def build(loopback: LoopbackServer, rng: random.Random) -> list[tuple[str, Any, str]]:
    """(flow id, canvas, kind) for every flow: kind 'settled' or 'fast'."""
    ok, gone = loopback.url("/ok?min_ms=1&max_ms=20"), loopback.url("/status/404")

    def member(name: str, fail: bool) -> Any:
        return http_step(gone if fail else ok, method="GET", max_attempts=3).named(name)

    flows: list[tuple[str, Any, str]] = []
    for i in range(FANS):
        fast = i < FAIL_FAST
        policy = "fail_fast" if fast else "all_settled"
        failing = (
            {"g3"} if fast else {n for n in ["c0", "c1", "c2", *[f"g{j}" for j in range(10)]] if rng.random() < FAILING}
        )
        steps = [member(f"c{j}", f"c{j}" in failing).on_failure(policy) for j in range(3)]
        fan = group(*[member(f"g{j}", f"g{j}" in failing).on_failure(policy) for j in range(10)])
        canvas = chain(*steps, chord(fan, http_step(ok).named("join"), policy=policy))
        flows.append((f"fan{i:03d}", canvas, "fast" if fast else "settled"))
    for i in range(DIAMONDS):
        diamond = Flow()
        a = diamond.add(member("a", rng.random() < FAILING), name="a")
        b = diamond.add(member("b", rng.random() < FAILING), [a], "all_settled", name="b")
        c = diamond.add(member("c", rng.random() < FAILING), [a], "all_settled", name="c")
        diamond.add(http_step(ok).named("join"), [b, c], "all_settled", name="join")
        flows.append((f"dia{i:03d}", diamond, "settled"))
    return flows


async def create(config: Path, flows: list[tuple[str, Any, str]]) -> None:
    async with AsyncClient(load_settings(str(config))) as client:
        for flow_id, canvas, _ in flows:
            await canvas.aapply(client, flow_id)


@pytest.mark.chaos
def test_flows_end_and_joins_run_once_through_worker_and_redis_kills(
    tmp_path: Path,
    queue_name: str,
    private_redis: Callable[..., Any],
    fleet: Fleet,
    loopback: LoopbackServer,
) -> None:
    server = private_redis("--appendonly", "yes", "--appendfsync", "always")
    config = chaos_config(
        tmp_path,
        server.url,
        queue_name,
        worker={"concurrency": 40, "lease_timeout": 2.0, "flow_reconcile_interval": 2.0},
        queue_settings={"backoff_min": 0.05, "backoff_max": 0.2},
        events=("task.recovered", "flow.repaired", "worker.*"),
    )
    workers = [fleet.start(config), fleet.start(config)]
    for worker in workers:
        wait_until(lambda w=worker: "started: queue" in w.output, timeout=30, what="worker start")
    flows = build(loopback, random.Random(23))
    started = time.monotonic()
    asyncio.run(create(config, flows))
    joins = [f"{flow_id}.join" for flow_id, _, _ in flows]

    def joined() -> int:
        return sum(1 for task_id in joins if loopback.count(task_id))

    kills = []
    for step, threshold in enumerate((0.2, 0.45, 0.7)):
        wait_until(lambda t=threshold: joined() >= t * len(flows) * 0.85, timeout=60, interval=0.05, what="progress")
        if step == 1:
            server.kill()
            time.sleep(0.5)
            server.start()
            kills.append("redis")
        else:
            victim = workers[0 if step == 0 else 1]
            victim.kill()
            workers.append(fleet.start(config))
            kills.append(f"worker {victim.pid}")
    client = redis.Redis.from_url(server.url)
    keys = QueueKeys(queue_name)

    def state(flow_id: str) -> str | None:
        raw = client.hget(keys.dag(flow_id), "state")
        return None if raw is None else raw.decode()

    def open_flows() -> list[str]:
        return [flow_id for flow_id, _, _ in flows if state(flow_id) not in FINAL_STATES]

    wait_until(lambda: not open_flows(), timeout=60, interval=0.2, what="every flow to end")
    elapsed = time.monotonic() - started
    states = {flow_id: state(flow_id) for flow_id, _, _ in flows}

    # After the run, reconcile every flow once more from its members' states: nothing may differ.
    async def reconcile_all() -> list[int]:
        async with AsyncClient(load_settings(str(config))) as ac:
            store = ac.flows.store()
            replies = [await store.reconcile(flow_id, {}) for flow_id, _, _ in flows]
        return [reply[0] if reply else -1 for reply in replies]

    mismatches_after = asyncio.run(reconcile_all())
    stats = queue_stats(client, queue_name)
    client.close()
    outputs = fleet.outputs()
    recovered = set(re.findall(r"task (\S+) recovered from a dead worker", outputs))
    counts = {task_id: loopback.count(task_id) for task_id in joins}
    settled = [flow_id for flow_id, _, kind in flows if kind == "settled"]
    fast = [flow_id for flow_id, _, kind in flows if kind == "fast"]
    twice = [task_id for task_id, count in counts.items() if count > 1]
    print_figures(
        "flows under two worker SIGKILLs and a Redis SIGKILL (appendfsync always)",
        {
            "flows (chain 3 -> fan-out 10 -> join / diamonds)": f"{FANS} / {DIAMONDS}",
            "tasks": FANS * 14 + DIAMONDS * 4,
            "kills": ", ".join(kills),
            "seconds to end every flow": elapsed,
            "hung flows": len(open_flows_after := [f for f, s in states.items() if s not in FINAL_STATES]),
            "all_settled flows succeeded": sum(1 for f in settled if states[f] == "succeeded"),
            "fail_fast flows failed": sum(1 for f in fast if states[f] == "failed"),
            "joins run once / twice (a recovery) / never": f"{sum(1 for c in counts.values() if c == 1)} / "
            f"{len(twice)} / {sum(1 for c in counts.values() if c == 0)}",
            "repairs by the workers' reconcilers": stats.get("flow_repairs", 0),
            "mismatches when reconciled after the run": sum(m for m in mismatches_after if m > 0),
            "refused late settles": stats.get("refused_acks", 0),
        },
    )
    assert open_flows_after == []
    assert all(states[f] == "succeeded" for f in settled)
    assert all(states[f] == "failed" for f in fast)
    assert all(counts[f"{f}.join"] >= 1 for f in settled)
    assert all(counts[f"{f}.join"] == 0 for f in fast)
    assert all(task_id in recovered for task_id in twice), twice  # a second run only after its worker died
    assert stats.get("flow_repairs", 0) == 0
    assert mismatches_after == [0] * len(flows)
