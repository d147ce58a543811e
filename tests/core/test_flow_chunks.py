"""A flow with many roots is created in several calls (its roots past the first ROOTS_PER_CALL follow in calls of
that many, dag_roots.lua), so workers start on the first ones at once. Every join's counts include the later roots
from the first call; a creation cut short resumes when sent again (each root written once) and, never sent again,
is cancelled by the reconciler instead of hanging."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq import AsyncClient, Settings
from gopherq.canvas import Flow, step
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement
from gopherq.core.flows import store as flow_store
from gopherq.core.flows.announce import FlowAnnouncer
from gopherq.core.flows.reconcile import Reconciler
from gopherq.core.flows.spec import plan
from gopherq.core.flows.store import FlowStore
from tests.core.test_flows import Recorder, setup


def fan_in(client: AsyncClient, children: int) -> Flow:
    flow = Flow()
    parents = [flow.add(step("rec", value=1), name=f"c{i}") for i in range(children)]
    flow.add(step("rec"), depends_on=parents, name="join", policy="all_settled")
    return flow


async def test_a_fan_in_created_in_several_calls_runs_its_join_once(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow_store, "ROOTS_PER_CALL", 2)
    settings = make_settings(worker={"concurrency": 4})
    recorder = Recorder()
    extra, client = setup(settings, recorder)
    async with client:
        await start_worker(settings, extra_plugins=extra)
        handle = await fan_in(client, 7).aapply(client, flow_id="chunked")
        assert await handle.result(timeout=10) == 7
        view = await handle.wait()
        assert view.state == "succeeded" and view.size == 8 and view.building == 0
        assert {m.state for m in view.members} == {"succeeded"}
        assert [recorder.ran("chunked", f"c{i}") for i in range(7)] == [1] * 7
        assert recorder.ran("chunked", "join") == 1


async def test_a_creation_cut_short_resumes_when_sent_again_and_is_cancelled_when_never_finished(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow_store, "ROOTS_PER_CALL", 2)
    settings = make_settings()
    _, client = setup(settings, Recorder())
    async with client:
        store = FlowStore(aredis, queue_name)
        nodes = fan_in(client, 5).nodes(client.task)

        async def cut_short(flow_id: str) -> None:  # the producer dies after the first call
            calls = 0
            original = store._roots

            async def dying(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls > 1:
                    raise ConnectionError("the producer died")
                return await original(*args, **kwargs)

            store._roots = dying
            with pytest.raises(ConnectionError):
                await store.create(plan(flow_id, queue_name, nodes))
            store._roots = original

        await cut_short("resumed")
        view = await store.read("resumed")
        assert view is not None and view.building == 1 and len(view.members) == 5
        assert await store.create(plan("resumed", queue_name, nodes)) is False  # sent again: resumes
        assert await store.create(plan("resumed", queue_name, nodes)) is False  # and again: nothing more
        view = await store.read("resumed")
        assert view is not None and view.building == 0 and len(view.members) == 6
        pushed = [codec.loads(raw)["id"] for raw in await aredis.lrange(queue_name, 0, -1)]
        assert sorted(pushed) == [f"resumed.c{i}" for i in range(5)]  # each root once
        raw = await aredis.hget(store.keys.dag("resumed"), "j:join")
        assert raw == b"A0:5:0:0"

        await cut_short("stalled")
        emitted: list[tuple[str, Any]] = []
        bus = type("Bus", (), {"emit": lambda self, name, **k: emitted.append((name, k.get("data")))})()
        reconciler = Reconciler(store, FlowAnnouncer(store, bus, 60), 30)
        assert await reconciler.tick(1000, "w1") == 0  # no counts "repaired" from a flow missing roots
        view = await store.read("stalled")
        assert view is not None and view.state == "cancelled"
        assert ("flow.cancelled", {"flow": "stalled"}) in emitted
        assert ("flow.repaired", {"flow": "stalled", "unfinished_creation": 1}) in emitted
        assert await store.create(plan("stalled", queue_name, nodes)) is False  # too late: recorded cancelled
        view = await store.read("stalled")
        assert view is not None and view.building == 0
        assert {m.node: m.state for m in view.members}["c4"] == "cancelled"


async def test_roots_written_after_a_fail_fast_join_blocked_are_asked_to_cancel(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow_store, "ROOTS_PER_CALL", 2)
    _, client = setup(make_settings(), Recorder())
    async with client:
        store = FlowStore(aredis, queue_name)
        flow = Flow()
        parents = [flow.add(step("rec", value=1), name=f"c{i}") for i in range(4)]
        flow.add(step("rec"), depends_on=parents, name="join")  # fail_fast
        laid = plan("halted", queue_name, flow.nodes(client.task))
        first = [m for m in laid.members if m[0] in ("join", "c0", "c1")]
        later = [m for m in laid.members if m[0] in ("c2", "c3")]
        keys = [store.keys.dag("halted"), store.keys.dags, *store.keys.ready_lists]
        args = [1, "halted", *flow_store._packed(first), len(later)]
        assert await store._create(keys=keys, args=args) == 1
        broker = Broker(aredis, queue_name, worker_id="w1")
        claimed = await broker.claim(10, 60_000)
        assert claimed is not None and len(claimed) == 2
        token = {codec.loads(envelope)["id"]: token for token, envelope in claimed}
        dead = Settlement("dead", token["halted.c0"], "halted.c0", b"{}", b"{}", "halted.c0", dag=("halted", "c0"))
        assert await broker.settle([dead], 60, 100) == [True]
        assert await aredis.hget(store.keys.dag("halted"), "halt") == b"1"
        assert await store.create(laid) is False  # resumed: c2 and c3 are pushed, each with a cancel request
        requested = {name.decode() for name in await aredis.zrange(store.keys.cancels, 0, -1)}
        assert {"halted.c2", "halted.c3"} <= requested
        view = await store.read("halted")
        assert view is not None and view.building == 0 and view.state == "failed"
