"""Flows in Redis: created from a plan in one script call, read, cancelled, listed, and their state changes
announced. Used by clients, the HTTP API, the inspection layer and the worker alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gopherq.core.broker import now_ms
from gopherq.core.flows.members import member_task_id
from gopherq.core.flows.spec import Plan
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import scripts

#: A member's state letter in the bookkeeping, and the word every surface shows.
MEMBER_STATES = {
    "w": "waiting",
    "r": "ready",
    "s": "succeeded",
    "f": "failed",
    "c": "cancelled",
    "b": "blocked",
}

#: Flow states that are final unless a dead-letter requeue revives a failed member.
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})

#: The fields of a flow's summary (FlowStore.read without members).
SUMMARY_FIELDS = ("state", "size", "open", "created", "finished")

#: Most roots a flow's creation pushes in its first call; a flow with more sends the rest in further calls of this
#: many (dag_roots.lua), so that workers start on the first roots while the others are written.
ROOTS_PER_CALL = 5000

#: Policy letters back to names.
_POLICY_NAMES = {"F": "fail_fast", "A": "all_settled", "I": "ignore_failures", "Q": "quorum"}


@dataclass(slots=True)
class Join:
    """A member with parents: its policy and how many of its parents are pending, succeeded and failed."""

    policy: str
    pending: int
    ok: int
    bad: int


@dataclass(slots=True)
class Member:
    """One member of a flow: its node, task id, state, the nodes that depend on it, and its join (when it has
    parents)."""

    node: str
    task_id: str
    state: str
    children: list[str]
    join: Join | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "task_id": self.task_id, "state": self.state}
        out["children"] = self.children
        if self.join is not None:
            out["policy"] = self.join.policy
            out["parents"] = {"pending": self.join.pending, "succeeded": self.join.ok, "failed": self.join.bad}
        return out


@dataclass(slots=True)
class FlowView:
    """What a flow looks like now."""

    id: str
    queue: str
    state: str
    size: int
    open: int
    created: float | None
    finished: float | None
    members: list[Member] = field(default_factory=list)
    #: Roots its creation has still to write (dag_roots.lua); 0 once created whole. Read with the members.
    building: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.queue,
            "state": self.state,
            "size": self.size,
            "open": self.open,
            "created_at": self.created,
            "finished_at": self.finished,
            "members": [member.to_dict() for member in self.members],
        }

    def parents(self) -> dict[str, list[str]]:
        """Each node's parents."""
        out: dict[str, list[str]] = {member.node: [] for member in self.members}
        for member in self.members:
            for child in member.children:
                out.setdefault(child, []).append(member.node)
        return out


def _join(spec: str) -> Join:
    head, pending, ok, bad = spec.split(":")
    policy = _POLICY_NAMES.get(head[:1], head[:1])
    if policy == "quorum":
        policy = f"quorum:{head[1:]}"
    return Join(policy, int(pending), int(ok), int(bad))


def _packed(members: list[tuple[str, str, str, bytes]]) -> tuple[str, bytes]:
    """Members as dag_create.lua and dag_roots.lua take them: one line each, then the envelopes end to end. Each
    envelope's length in hex: the scripts read it with strtoul (tonumber(s, 16)); a decimal costs a strtod."""
    lines = "".join(f"{node}|{member}|{spec}|{len(envelope):x}\n" for node, member, spec, envelope in members)
    return lines, b"".join(envelope for _, _, _, envelope in members)


def _plain(plan: Plan, members: list[tuple[str, str, str, bytes]]) -> str:
    """'1' when no task among `members` has a priority or a fair key: the creation scripts then push each to the
    plain list without searching its bytes for those fields (lua/flow_where.lua: flow_gather); '0' otherwise."""
    for node, *_ in members:
        task = plan.tasks.get(node)
        if task is None or task.priority is not None or task.fair_key is not None:
            return "0"
    return "1"


def _ms(value: bytes | None) -> float | None:
    return None if value is None else int(value) / 1000


class FlowStore:
    """The flows of one queue."""

    def __init__(self, redis: RedisClient, queue: str) -> None:
        self.redis = redis
        self.keys = QueueKeys(queue)
        registry = scripts(redis)
        self._create, self._cancel = registry["dag_create"], registry["dag_cancel"]
        self._announce, self._reconcile = registry["dag_announce"], registry["dag_reconcile"]
        self._extend, self._seal = registry["dag_extend"], registry["dag_seal"]
        self._roots = registry["dag_roots"]

    async def create(self, plan: Plan) -> bool:
        """Create the flow and push its roots; False when a flow of that id exists (nothing done, unless that flow's
        creation stopped before all its roots were written: they are written now, each once).

        One call writes every member but the roots past the first ROOTS_PER_CALL, which follow in calls of that many
        (every join's counts include them from the first call, so no join can run early); workers start on the
        first roots meanwhile. A creation cut short leaves the flow `building`: sent again, it resumes; never sent
        again, the reconciler cancels the flow."""
        k = self.keys
        roots = [member for member in plan.members if member[1].startswith("r")]
        first = [member for member in plan.members if not member[1].startswith("r")] + roots[:ROOTS_PER_CALL]
        later = roots[ROOTS_PER_CALL:]
        keys = [k.dag(plan.flow_id), k.dags, *k.ready_lists]
        args = [now_ms(), plan.flow_id, *_packed(first), len(later), _plain(plan, first)]
        created = int(await self._create(keys=keys, args=args))
        if created == 0:
            return False
        for start in range(0, len(later), ROOTS_PER_CALL):
            chunk = later[start : start + ROOTS_PER_CALL]
            keys = [k.dag(plan.flow_id), *k.ready_lists, k.cancels]
            await self._roots(keys=keys, args=[now_ms(), plan.flow_id, *_packed(chunk), _plain(plan, chunk)])
        return created == 1

    async def read(self, flow_id: str, members: bool = True) -> FlowView | None:
        """The flow now, or None when there is none (never created, or expired after it finished)."""
        key = self.keys.dag(flow_id)
        if members:
            raw = await self.redis.hgetall(key)
        else:  # the summary only: a few fields, whatever the flow's size
            values = await self.redis.hmget(key, SUMMARY_FIELDS)
            raw = {
                name.encode(): value for name, value in zip(SUMMARY_FIELDS, values, strict=True) if value is not None
            }
        if not raw:
            return None
        fields = {key.decode(): value for key, value in raw.items()}
        view = FlowView(
            id=flow_id,
            queue=self.keys.queue,
            state=fields.get("state", b"?").decode(),
            size=int(fields.get("size", 0)),
            open=int(fields.get("open", 0)),
            created=_ms(fields.get("created")),
            finished=_ms(fields.get("finished")),
        )
        if members:
            view.building = int(fields.get("building", 0))
            for name, value in fields.items():
                if name.startswith("m:"):
                    node, text = name[2:], value.decode()
                    spec = fields.get("j:" + node)
                    view.members.append(
                        Member(
                            node,
                            member_task_id(flow_id, node),
                            MEMBER_STATES.get(text[:1], text[:1]),
                            [child for child in text[1:].split(",") if child],
                            _join(spec.decode()) if spec else None,
                        )
                    )
        return view

    async def cancel(self, flow_id: str, halt_only: bool = False) -> str | None:
        """Cancel the flow (its waiting members are cancelled, its ready and running ones asked to cancel); with
        `halt_only`, only ask its ready and running members to cancel (a failed fail_fast flow). Returns the flow's
        state, None when there is no such flow."""
        k = self.keys
        state = await self._cancel(keys=[k.dag(flow_id), k.cancels], args=[now_ms(), "halt" if halt_only else "cancel"])
        return None if state is None else state.decode()

    async def extend(self, flow_id: str, join: str, members: list[tuple[str, bytes]]) -> int:
        """Add ready members (node, envelope) as children of open join `join`; returns how many were new.
        ResponseError when the flow or the open join does not exist (or the flow was cancelled)."""
        args: list[Any] = [now_ms(), join]
        for node, envelope in members:
            args += [node, envelope]
        return int(await self._extend(keys=[self.keys.dag(flow_id), *self.keys.ready_lists], args=args))

    async def seal(self, flow_id: str, join: str) -> bool:
        """Seal open join `join`: it runs once its parents are final. False when it was not open."""
        return bool(await self._seal(keys=[self.keys.dag(flow_id), *self.keys.ready_lists], args=[now_ms(), join]))

    async def announce(self, flow_ids: list[str], ttl: int) -> list[tuple[str, str, int]]:
        """Claim the announcement of the flows' state changes (flow id, new state, halted joins), each once."""
        if not flow_ids:
            return []
        k = self.keys
        keys = [k.dag(flow_id) for flow_id in flow_ids] + [k.dags, k.dags_done]
        flat = await self._announce(keys=keys, args=[now_ms(), ttl, *flow_ids])
        return [(flat[i].decode(), flat[i + 1].decode(), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def reconcile(self, flow_id: str, outcomes: dict[str, str]) -> tuple[int, str, int] | None:
        """Recompute the flow's counters from its members' states (after recording `outcomes`, node -> 's', 'f' or
        'c', of members whose task records are final); returns (mismatches repaired, state, outcomes recorded
        late: those whose member was still ready, included in the mismatches)."""
        k = self.keys
        args: list[Any] = [now_ms()]
        for node, outcome in outcomes.items():
            args += [node, outcome]
        reply = await self._reconcile(keys=[k.dag(flow_id), *k.ready_lists], args=args)
        if not reply:
            return None
        return int(reply[0]), reply[1].decode(), int(reply[2])

    async def ids(self, finished: bool = False, limit: int = 100) -> list[tuple[str, float]]:
        """Open (or finished) flows' ids, newest first, with their creation (finish) time."""
        key = self.keys.dags_done if finished else self.keys.dags
        entries = await self.redis.zrevrange(key, 0, limit - 1, withscores=True)
        return [(name.decode(), score / 1000) for name, score in entries]
