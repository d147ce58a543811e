"""A flow definition checked and turned into what Redis stores: pure, no I/O.

A definition is a list of nodes, each a name, an ordinary task (already validated as any producer's task), the
nodes it depends on and, for a node with parents, its failure policy. `plan` checks the graph (names, dependencies
that exist, no cycle), names each member's task "<flow id>.<node>", puts it on the flow's queue, gives it its
`flow_member` field and encodes it, and computes each member's bookkeeping (see lua/dag_step.lua).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gopherq.core.errors import TaskRejected
from gopherq.core.flows.members import MAX_LISTED_PARENTS, check_flow_id, check_node, member_task_id
from gopherq.core.task import Task

#: Most members one flow may have.
MAX_MEMBERS = 200_000

#: Failure policies of a join and their letters in the bookkeeping.
POLICIES = {"fail_fast": "F", "all_settled": "A", "ignore_failures": "I", "quorum": "Q"}

#: The policy of a join that names none: like Celery's chains and chords, a failed parent fails the flow.
DEFAULT_POLICY = "fail_fast"


def _reject(message: str) -> TaskRejected:
    return TaskRejected("schema_invalid", message)


@dataclass(slots=True)
class Policy:
    """A join's failure policy: `name` one of POLICIES, `quorum` the successes a `quorum` join waits for."""

    name: str = DEFAULT_POLICY
    quorum: int = 0

    @classmethod
    def parse(cls, value: Any) -> Policy:
        """ "fail_fast", "all_settled", "ignore_failures", "quorum:N" or {"quorum": N}, or a Policy."""
        if value is None:
            return cls()
        if isinstance(value, Policy):
            return value
        if isinstance(value, dict) and set(value) == {"quorum"}:
            value = f"quorum:{value['quorum']}"
        if isinstance(value, str):
            name, _, count = value.partition(":")
            if name in POLICIES and (name == "quorum") == bool(count):
                if not count:
                    return cls(name)
                if count.isdigit() and 0 < int(count) <= MAX_MEMBERS:
                    return cls(name, int(count))
        raise _reject(f"policy must be fail_fast, all_settled, ignore_failures or quorum:N (N >= 1), got {value!r}")

    def __str__(self) -> str:
        return f"quorum:{self.quorum}" if self.name == "quorum" else self.name


@dataclass(slots=True)
class Node:
    """One member of a flow as a producer describes it."""

    name: str
    task: Task
    depends_on: list[str] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)
    #: An open join: children may be added while the flow runs (`extend`) until it is sealed (`seal`).
    open: bool = False


@dataclass(slots=True)
class Plan:
    """What `dag_create.lua` takes: per member its node, member field, join spec and envelope, in an order where
    every parent comes before its children."""

    flow_id: str
    queue: str
    members: list[tuple[str, str, str, bytes]]
    tasks: dict[str, Task]


def plan(flow_id: str, queue: str, nodes: list[Node]) -> Plan:
    """Check a flow and lay it out for Redis; TaskRejected naming what is wrong."""
    check_flow_id(flow_id)
    if not nodes:
        raise _reject("a flow needs at least one task")
    if len(nodes) > MAX_MEMBERS:
        raise _reject(f"a flow has at most {MAX_MEMBERS} tasks, got {len(nodes)}")
    by_name: dict[str, Node] = {}
    for node in nodes:
        check_node(node.name)
        if node.name in by_name:
            raise _reject(f"flow node {node.name!r} is named twice")
        by_name[node.name] = node
    children: dict[str, list[str]] = {name: [] for name in by_name}
    for node in nodes:
        if len(set(node.depends_on)) != len(node.depends_on):
            raise _reject(f"flow node {node.name!r} names a dependency twice")
        for parent in node.depends_on:
            if parent not in by_name:
                raise _reject(f"flow node {node.name!r} depends on {parent!r}, which is not in the flow")
            children[parent].append(node.name)
        if node.policy.name == "quorum" and node.policy.quorum > len(node.depends_on):
            raise _reject(f"flow node {node.name!r}: quorum {node.policy.quorum} is more than its parents")
    order = _topological(by_name, children)
    members: list[tuple[str, str, str, bytes]] = []
    tasks: dict[str, Task] = {}
    for name in order:
        node = by_name[name]
        task = node.task
        if task.queue is not None and task.queue != queue:
            raise _reject(
                f"flow node {name!r} is for queue {task.queue!r}: a flow's tasks run on its queue ({queue!r})"
            )
        if task.unique_key is not None:
            raise _reject(f"flow node {name!r}: a flow member cannot be unique (unique_key/unique_for)")
        task.id, task.id_assigned, task.envelope = member_task_id(flow_id, name), False, None
        parents: list[str] | int = (
            node.depends_on if len(node.depends_on) <= MAX_LISTED_PARENTS else len(node.depends_on)
        )
        task.flow_member = {"flow": flow_id, "node": name}
        if node.depends_on:
            task.flow_member["parents"] = parents
        if node.open:
            task.flow_member["open"] = True
        spec = ""
        if node.depends_on or node.open:
            spec = f"{POLICIES[node.policy.name]}{node.policy.quorum}:{len(node.depends_on)}:0:0" + (
                "+" if node.open else ""
            )
        joins = bool(node.depends_on or node.open)
        members.append((name, ("w" if joins else "r") + ",".join(children[name]), spec, task.encode()))
        tasks[name] = task
    return Plan(flow_id, queue, members, tasks)


def added_member(flow_id: str, queue: str, join: str, name: str, task: Task) -> bytes:
    """The envelope of a child added to open join `join` while the flow runs (see FlowStore.extend)."""
    check_node(name)
    if task.queue is not None and task.queue != queue:
        raise _reject(f"flow node {name!r} is for queue {task.queue!r}: a flow's tasks run on its queue ({queue!r})")
    if task.unique_key is not None:
        raise _reject(f"flow node {name!r}: a flow member cannot be unique (unique_key/unique_for)")
    task.id, task.id_assigned, task.envelope = member_task_id(flow_id, name), False, None
    task.flow_member = {"flow": flow_id, "node": name}
    return task.encode()


def _topological(by_name: dict[str, Node], children: dict[str, list[str]]) -> list[str]:
    """The nodes with every parent before its children (Kahn's algorithm); a cycle is refused."""
    waiting = {name: len(node.depends_on) for name, node in by_name.items()}
    ready = deque(name for name, count in waiting.items() if count == 0)
    order: list[str] = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) != len(by_name):
        stuck = sorted(name for name, count in waiting.items() if count > 0)
        raise _reject(f"a flow must not have cycles: {', '.join(stuck[:5])} depend on each other")
    return order
