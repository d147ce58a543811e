"""Flows (DAGs of tasks): a join runs once, when its parents are final, under its failure policy; a fenced settle
never moves a flow; a dead-lettered member requeued from the dead-letter queue moves its flow on; cancelling a flow
cancels what has not started; the reconciler repairs counts that were tampered with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gopherq import AsyncClient, ExecutionContext, PermanentFailure, Settings, Task
from gopherq.canvas import Flow, chain, chord, group, step
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement
from gopherq.core.flows.announce import FlowAnnouncer
from gopherq.core.flows.reconcile import Reconciler
from gopherq.core.plugins import load_plugins
from gopherq.web.exposition import render_metrics
from tests.support.common import async_wait_until
from tests.support.plugins import CaptureSink, ExecutorPlugin, SinkPlugin

#: The marker a push to another list leaves in an empty plain list for a sleeping worker (lua/levels.lua).
WAKE = b"gopherq:wake"


class Recorder:
    """Returns its `value` field (or the sum of its parents' values and `value`); fails when `fail` is set;
    records each run with the inputs it got."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Any]] = []
        self.healed: set[str] = set()  # task ids that no longer fail (the cause was fixed)

    async def execute(self, task: Task, context: ExecutionContext) -> Any:
        self.runs.append((task.id, context.flow_inputs))
        if task.fields.get("fail") and task.id not in self.healed:
            raise PermanentFailure("asked to fail")
        value = task.fields.get("value", 0)
        for entry in context.flow_inputs or []:
            if entry.get("status") == "succeeded" and isinstance(entry.get("result"), int):
                value += entry["result"]
        return value

    def ran(self, flow_id: str, node: str) -> int:
        return sum(1 for task_id, _ in self.runs if task_id == f"{flow_id}.{node}")


def setup(
    settings: Settings, recorder: Recorder, sink: CaptureSink | None = None
) -> tuple[dict[str, Any], AsyncClient]:
    extra: dict[str, Any] = {"rec": ExecutorPlugin("rec", recorder)}
    if sink is not None:
        extra["capture"] = SinkPlugin(sink)
    return extra, AsyncClient(settings, plugins=load_plugins(settings, extra=extra))


async def test_a_chain_into_a_chord_passes_results_and_each_join_runs_once(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings(worker={"concurrency": 8})
    recorder, sink = Recorder(), CaptureSink()
    extra, client = setup(settings, recorder, sink)
    async with client:
        await start_worker(settings, extra_plugins=extra)
        canvas = chain(
            step("rec", value=1).named("a"),
            step("rec", value=2).named("b"),
            chord(group(*[step("rec", value=10).named(f"g{i}") for i in range(5)]), step("rec").named("join")),
        )
        handle = await canvas.aapply(client, flow_id="chain-chord")
        assert await handle.result(timeout=10) == 5 * (10 + 3)
        view = await handle.wait()
        assert view.state == "succeeded" and view.open == 0
        assert {m.state for m in view.members} == {"succeeded"}
        for node in ["a", "b", "join", *[f"g{i}" for i in range(5)]]:
            assert recorder.ran("chain-chord", node) == 1
        again, created = await client.flows.create(canvas.nodes(client.task), "chain-chord")
        assert again == "chain-chord" and created is False  # idempotent by flow id
        [done] = await sink.wait_named("flow.succeeded")
        assert done.data == {"flow": "chain-chord"}
        body, _ = await render_metrics(client.inspect, [client.queue])
        text = body.decode()
        assert f'gopherq_flows_finished{{queue="{client.queue}"}} 1.0' in text
        assert f'gopherq_flows_in_progress{{queue="{client.queue}"}} 0.0' in text


async def test_policies_decide_whether_and_with_what_a_join_runs(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings(worker={"concurrency": 8}, queue={"max_attempts": 1})
    recorder = Recorder()
    extra, client = setup(settings, recorder)
    async with client:
        await start_worker(settings, extra_plugins=extra)

        def fan(policy: str | None) -> chord:
            header = group(*[step("rec", value=1, fail=(i == 0)).named(f"p{i}") for i in range(4)])
            return chord(header, step("rec").named("join"), policy=policy)

        settled = await fan("all_settled").aapply(client, "settled")
        ignored = await fan("ignore_failures").aapply(client, "ignored")
        quorum = await fan("quorum:3").aapply(client, "quorum")
        out_of_reach = await fan("quorum:4").aapply(client, "reach")
        fast = await chain(fan(None), step("rec").named("after")).aapply(client, "fast")
        for handle in (settled, ignored, quorum):
            view = await handle.wait(10)
            assert view.state == "succeeded", view
            assert recorder.ran(handle.id, "join") == 1
        statuses = sorted(
            entry["status"] for task_id, inputs in recorder.runs if task_id == "settled.join" for entry in inputs
        )
        assert statuses == ["dead", "succeeded", "succeeded", "succeeded"]
        for handle in (out_of_reach, fast):
            view = await handle.wait(10)
            assert view.state == "failed"
            states = {m.node: m.state for m in view.members}
            assert states["join"] == "blocked" and recorder.ran(handle.id, "join") == 0
        assert {m.node: m.state for m in (await fast.wait()).members}["after"] == "waiting"


async def test_a_fenced_settle_moves_no_flow_and_a_repeated_one_counts_once(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    _, client = setup(settings, Recorder())
    async with client:
        flow = Flow()
        a = flow.add(step("rec", value=1), name="a")
        b = flow.add(step("rec", value=1), name="b")
        flow.add(step("rec"), depends_on=[a, b], name="join")
        await flow.aapply(client, "fenced")
        broker = Broker(aredis, queue_name, worker_id="w1")
        claimed = await broker.claim(10, 60_000)
        assert claimed is not None and len(claimed) == 2
        token = {codec.loads(envelope)["id"]: token for token, envelope in claimed}

        async def states() -> dict[str, str]:
            view = await client.flows.get("fenced")
            assert view is not None
            return {m.node: m.state for m in view.members}

        # A stale token (its lease expired and the reaper handed the task on): refused; the flow does not move.
        await aredis.zadd(broker.keys.reaped, {"stale-token": 1})
        ack = Settlement("ack", "stale-token", "fenced.a", b"{}", dag=("fenced", "a"))
        assert await broker.settle([ack], 60, 100) == [False]
        assert (await states())["a"] == "ready"
        # The real settle moves it; the same settle sent again (its reply lost) and a second run count once.
        ack = Settlement("ack", token["fenced.a"], "fenced.a", b"{}", dag=("fenced", "a"))
        assert await broker.settle([ack], 60, 100) == [True]
        assert await broker.settle([ack], 60, 100) == [True]
        assert (await states()) == {"a": "succeeded", "b": "ready", "join": "waiting"}
        raw = await aredis.hget(broker.keys.dag("fenced"), "j:join")
        assert raw == b"F0:1:1:0"
        dead = Settlement("dead", token["fenced.b"], "fenced.b", b"{}", b"{}", "fenced.b", dag=("fenced", "b"))
        assert await broker.settle([dead], 60, 100) == [True]
        assert (await states()) == {"a": "succeeded", "b": "failed", "join": "blocked"}
        assert await aredis.llen(queue_name) == 0  # the join was not pushed


async def test_a_dead_member_requeued_from_the_dlq_that_succeeds_moves_its_flow_on(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings(queue={"max_attempts": 1})
    recorder = Recorder()
    extra, client = setup(settings, recorder)
    async with client:
        await start_worker(settings, extra_plugins=extra)
        handle = await chain(step("rec", value=5, fail=True).named("a"), step("rec").named("b")).aapply(
            client, "revive"
        )
        view = await handle.wait(10)
        assert view.state == "failed"
        # The cause is fixed, the dead letter requeued: it succeeds, and its flow moves on.
        recorder.healed.add("revive.a")
        [entry] = await client.dead_letters.list(limit=10)
        assert await client.dead_letters.requeue([entry["id"]]) == 1
        await async_wait_until(lambda: recorder.ran("revive", "b") == 1, what="the join to run after the revival")
        view = await handle.wait(10)
        assert view.state == "succeeded"


async def test_cancelling_a_flow_cancels_what_has_not_started_and_the_reconciler_repairs_counts(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    sink = CaptureSink()
    _, client = setup(settings, Recorder())
    async with client:
        canvas = chain(group(step("rec").named("x"), step("rec").named("y")), step("rec").named("z"))
        handle = await canvas.aapply(client, "tamper")
        store = client.flows.store()
        # Tamper with the counts as a bug might: the reconciler finds and repairs both.
        await aredis.hset(store.keys.dag("tamper"), mapping={"open": 7, "j:z": "F0:5:0:0"})
        bus = type("Bus", (), {"emit": lambda self, *a, **k: sink.events.append((a, k))})()
        reconciler = Reconciler(store, FlowAnnouncer(store, bus, 60), 1.0)
        assert await reconciler.tick(1000, "test") == 2
        assert reconciler.repairs == 2
        assert await reconciler.tick(1000, "test") == 0  # the lock is held for a second: nothing
        assert await store.reconcile("tamper", {}) == (0, "pending", 0)
        assert await handle.cancel() == "cancelled"
        assert [flow_id for flow_id, _ in await store.ids(finished=True)] == ["tamper"]  # announced at once
        assert await store.ids() == []
        view = await handle.wait(1)
        assert {m.node: m.state for m in view.members} == {"x": "ready", "y": "ready", "z": "cancelled"}
        requests = {item.decode() for item in await aredis.zrange(store.keys.cancels, 0, -1)}
        assert requests == {"tamper.x", "tamper.y"}


async def test_fail_fast_cancels_the_members_that_have_not_started(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings(worker={"concurrency": 1}, queue={"max_attempts": 1})
    recorder = Recorder()
    extra, client = setup(settings, recorder)
    async with client:
        header = group(step("rec", fail=True).named("p0"), *[step("rec").named(f"p{i}") for i in range(1, 6)])
        handle = await chord(header, step("rec").named("join")).aapply(client, "halt")
        await start_worker(settings, extra_plugins=extra)
        view = await handle.wait(10)
        assert view.state == "failed"

        async def settled() -> bool:
            current = await client.flows.get("halt")
            return current is not None and current.open == 1  # only the blocked join is left

        await async_wait_until(settled, what="every sibling to be cancelled or to end")
        states = {m.node: m.state for m in (await client.flows.get("halt") or view).members}
        ran = [node for node in states if recorder.ran("halt", node)]
        assert states["join"] == "blocked" and "join" not in ran
        # p1 may have been claimed before the failure was recorded; the rest never started.
        assert set(ran) <= {"p0", "p1"}
        assert sorted(node for node, state in states.items() if state == "cancelled") == sorted(
            node for node in ("p1", "p2", "p3", "p4", "p5") if node not in ran
        )


async def test_an_open_join_waits_for_children_added_while_the_flow_runs_until_it_is_sealed(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings(worker={"concurrency": 4})
    recorder = Recorder()
    extra, client = setup(settings, recorder)
    async with client:
        await start_worker(settings, extra_plugins=extra)
        flow = Flow()
        a = flow.add(step("rec", value=1), name="a")
        flow.add(step("rec"), depends_on=[a], policy="all_settled", name="join", open=True)
        handle = await flow.aapply(client, "dynamic")
        await async_wait_until(lambda: recorder.ran("dynamic", "a") == 1, what="the root to run")
        children = [(f"kid{i}", client.task("rec", value=10)) for i in range(3)]
        assert await client.flows.extend("dynamic", "join", children) == 3
        assert await client.flows.extend("dynamic", "join", children[:1]) == 0  # a retry adds nothing
        await async_wait_until(lambda: all(recorder.ran("dynamic", f"kid{i}") for i in range(3)), what="the kids")
        view = await client.flows.get("dynamic")
        assert view is not None and {m.node: m.state for m in view.members}["join"] == "waiting"  # not sealed
        assert await client.flows.seal("dynamic", "join") is True
        assert await client.flows.seal("dynamic", "join") is False
        assert await handle.result(timeout=10) == 31  # 1 + 3 x 10: every parent's value reached the join
        with pytest.raises(ResponseError, match="not an open join"):
            await client.flows.extend("dynamic", "join", [("late", client.task("rec"))])
        assert recorder.ran("dynamic", "join") == 1


async def test_one_settle_of_many_members_counts_each_once_and_readies_the_join_in_that_call(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """The settle script records a batch's members of one flow together (one read, one write of the flow): each
    counts once (a fenced item not at all), the join is pushed by that same call, and the call names the flows whose
    state it changed (what the worker announces)."""
    settings = make_settings()
    _, client = setup(settings, Recorder())
    async with client:
        flow = Flow()
        parents = [flow.add(step("rec", value=1), name=f"c{i}") for i in range(6)]
        flow.add(step("rec"), depends_on=parents, name="join", policy="all_settled")
        await flow.aapply(client, "batched")
        broker = Broker(aredis, queue_name, worker_id="w1")
        claimed = await broker.claim(10, 60_000)
        assert claimed is not None and len(claimed) == 6
        token = {codec.loads(envelope)["id"]: token for token, envelope in claimed}
        await aredis.zadd(broker.keys.reaped, {"stale-token": 1})
        items = [Settlement("ack", "stale-token", "batched.c0", b"{}", dag=("batched", "c0"))]  # fenced
        items += [
            Settlement("ack", token[f"batched.c{i}"], f"batched.c{i}", b"{}", dag=("batched", f"c{i}"))
            for i in range(5)
        ]
        moved: list[str] = []
        assert await broker.settle(items, 60, 100, moved=moved) == [False] + [True] * 5
        assert moved == ["batched"]  # pending -> running
        assert await aredis.hget(broker.keys.dag("batched"), "j:join") == b"A0:1:5:0"
        assert await aredis.llen(queue_name) == 0  # one parent still pending
        last = Settlement("dead", token["batched.c5"], "batched.c5", b"{}", b"{}", "batched.c5", dag=("batched", "c5"))
        moved = []
        assert await broker.settle([last, last], 60, 100, moved=moved) == [True, True]  # the second: a repeat
        assert moved == []  # still running: nothing to announce
        fields = await aredis.hmget(broker.keys.dag("batched"), ["j:join", "m:join", "open", "state"])
        assert fields == [b"A0:0:5:1", b"r", b"1", b"running"]
        [pushed] = await aredis.lrange(queue_name, 0, -1)
        assert codec.loads(pushed)["id"] == "batched.join"  # made ready by that settle call


async def test_a_batch_of_a_fan_ins_children_moves_its_join_as_each_child_would_have(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """A settle counts a run of one join's children together (dag_steps): the outcome is the one child after child
    gives. A quorum join is made ready once, however many children follow its quorum in the call; a fail_fast join
    is blocked by a failure among successes; a task settled twice in one call (two copies of it claimed) counts
    once."""
    settings = make_settings()
    _, client = setup(settings, Recorder())
    async with client:
        for flow_id, policy in (("quorum", "quorum:2"), ("fast", "fail_fast")):
            flow = Flow()
            parents = [flow.add(step("rec", value=1), name=f"c{i}") for i in range(5)]
            flow.add(step("rec"), depends_on=parents, name="join", policy=policy)
            await flow.aapply(client, flow_id)
        broker = Broker(aredis, queue_name, worker_id="w1")
        claimed = await broker.claim(20, 60_000)
        assert claimed is not None and len(claimed) == 10
        token = {codec.loads(envelope)["id"]: token for token, envelope in claimed}
        copy = next(envelope for _, envelope in claimed if codec.loads(envelope)["id"] == "quorum.c0")
        await aredis.rpush(queue_name, copy)  # a second copy of one child (e.g. pushed twice)
        [(again, _)] = await broker.claim(1, 60_000) or []

        def item(flow_id: str, i: int, kind: str = "ack", token_: str | None = None) -> Settlement:
            task_id = f"{flow_id}.c{i}"
            tok = token_ or token[task_id]
            if kind == "dead":
                return Settlement("dead", tok, task_id, b"{}", b"{}", task_id, dag=(flow_id, f"c{i}"))
            return Settlement("ack", tok, task_id, b"{}", dag=(flow_id, f"c{i}"))

        items = [item("quorum", 0), item("quorum", 0, token_=again), item("quorum", 1), item("quorum", 2, "dead")]
        items += [item("quorum", 3), item("fast", 0), item("fast", 1, "dead"), item("fast", 2), item("fast", 3)]
        assert await broker.settle(items, 60, 100) == [True] * len(items)
        quorum = await aredis.hmget(broker.keys.dag("quorum"), ["j:join", "m:join", "open", "fatal"])
        assert quorum == [b"Q2:1:3:1", b"r", b"2", b"0"]  # c0 once; ready, and pushed, once
        fast = await aredis.hmget(broker.keys.dag("fast"), ["j:join", "m:join", "open", "fatal", "halt"])
        assert fast == [b"F0:1:3:1", b"b", b"2", b"1", b"1"]  # blocked by the failure among the successes
        assert [codec.loads(raw)["id"] for raw in await aredis.lrange(queue_name, 0, -1)] == ["quorum.join"]


async def test_roots_with_a_priority_or_a_fair_key_go_to_their_lists_and_plain_ones_to_the_plain_list(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """A creation call whose roots have no priority and no fair key pushes them to the plain list without looking
    into their bytes; one with any looks into each (FlowStore.create says which): both land where a push would put
    them, each with its whereabouts record under its id."""
    settings = make_settings()
    _, client = setup(settings, Recorder())
    async with client:
        mixed = Flow()
        a = mixed.add(step("rec").set(priority="high"), name="a")
        b = mixed.add(step("rec", fair_key="tenant"), name="b")
        c = mixed.add(step("rec"), name="c")
        mixed.add(step("rec"), depends_on=[a, b, c], name="join")
        await mixed.aapply(client, "mixed")
        plain = Flow()
        plain.add(step("rec"), name="only")
        await plain.aapply(client, "plain")
        keys = Broker(aredis, queue_name).keys
        high = [codec.loads(raw)["id"] for raw in await aredis.lrange(keys.level("high"), 0, -1)]
        default = [codec.loads(raw)["id"] for raw in await aredis.lrange(queue_name, 0, -1) if raw != WAKE]
        fair = [codec.loads(raw)["id"] for raw in await aredis.lrange(keys.fair_list("d", "tenant"), 0, -1)]
        assert (high, default, fair) == (["mixed.a"], ["mixed.c", "plain.only"], ["mixed.b"])
        records = await aredis.hmget(keys.where, ["mixed.a", "mixed.b", "mixed.c", "plain.only"])
        places = [record.split(b"|") for record in records if isinstance(record, bytes)]
        assert [(p[0], p[1], p[3], p[4:]) for p in places] == [
            (b"ready", b"high", b"flow", []),
            (b"ready", b"default", b"flow", [b"tenant"]),
            (b"ready", b"default", b"flow", []),
            (b"ready", b"default", b"flow", []),
        ]


async def test_a_join_its_parents_complete_goes_to_the_head_of_its_list_and_one_with_a_fair_key_to_its_keys_tail(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """A join made ready by its last parent's settle is claimed next, ahead of tasks that became ready while its
    parents ran (a busy queue does not hold a flow's continuation back); a join with a fair key goes behind its
    key's earlier tasks (an ordered key's order holds)."""
    settings = make_settings()
    _, client = setup(settings, Recorder())
    async with client:
        for flow_id, fair in (("head", None), ("keyed", "tenant")):
            flow = Flow()
            parent = flow.add(step("rec"), name="p")
            flow.add(step("rec", fair_key=fair) if fair else step("rec"), depends_on=[parent], name="join")
            await flow.aapply(client, flow_id)
        broker = Broker(aredis, queue_name, worker_id="w1")
        claimed = await broker.claim(10, 60_000)
        assert claimed is not None and len(claimed) == 2
        keys = broker.keys
        backlog = [codec.dumps({"id": f"b{i}", "type": "rec"}) for i in range(3)]
        await aredis.rpush(queue_name, *backlog)
        await aredis.rpush(
            keys.fair_list("d", "tenant"), codec.dumps({"id": "k0", "type": "rec", "fair_key": "tenant"})
        )
        token = {codec.loads(envelope)["id"]: token for token, envelope in claimed}
        items = [Settlement("ack", token[f"{f}.p"], f"{f}.p", b"{}", dag=(f, "p")) for f in ("head", "keyed")]
        assert await broker.settle(items, 60, 100) == [True, True]
        ready = [codec.loads(raw)["id"] for raw in await aredis.lrange(queue_name, 0, -1) if raw != WAKE]
        assert ready == ["head.join", "b0", "b1", "b2"]
        fair = [codec.loads(raw)["id"] for raw in await aredis.lrange(keys.fair_list("d", "tenant"), 0, -1)]
        assert fair == ["k0", "keyed.join"]
