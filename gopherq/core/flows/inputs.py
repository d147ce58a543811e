"""A flow member's inputs: its parents' outcomes, read from their result records when it runs.

By reference, never copied into the envelope: the worker reads the parents' result records (one MGET) just before
the attempt and hands them to the executor as `ExecutionContext.flow_inputs`. Bounded: a member lists at most
MAX_LISTED_PARENTS parents (a join with more gets none here and reads the flow itself), and a parent's result over
MAX_INPUT_BYTES is passed as a reference to its task (`truncated`), never inline.
"""

from __future__ import annotations

from typing import Any

from gopherq.core import codec
from gopherq.core.flows.members import MAX_LISTED_PARENTS, listed_parents, member_task_id
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.task import Task

#: Most bytes of one parent's result record passed inline; a larger one is passed by reference (its task id).
MAX_INPUT_BYTES = 64 * 1024


def has_inputs(member: dict[str, Any]) -> bool:
    """Whether a member (its `flow_member` field) may have parents' outcomes to read: not a root (every child of a
    fan-in is one), whose attempt then costs no read and no await."""
    return "parents" in member or bool(member.get("open"))


async def read_inputs(redis: RedisClient, queue: str, task: Task) -> list[dict[str, Any]] | None:
    """The outcomes of `task`'s parents, in the order it depends on them: each {node, task_id, status, result,
    error}, or with `truncated` instead of `result` when the record is large. None for a task with no listed
    parents (not a flow member, a root, or a join of more than MAX_LISTED_PARENTS)."""
    member = task.flow_member
    if member is None or not has_inputs(member):
        return None
    parents = listed_parents(member)
    keys = QueueKeys(queue)
    if member.get("open"):  # an open join: the children added while the flow ran are its parents too
        added = await redis.hget(keys.dag(member["flow"]), f"p:{member['node']}")
        parents = parents + (added.decode().split(",") if added else [])
        if len(parents) > MAX_LISTED_PARENTS:
            return None
    if not parents:
        return None
    ids = [member_task_id(member["flow"], node) for node in parents]
    records = await redis.mget([keys.result(task_id) for task_id in ids])
    inputs: list[dict[str, Any]] = []
    for node, task_id, raw in zip(parents, ids, records, strict=True):
        entry: dict[str, Any] = {"node": node, "task_id": task_id}
        if raw is None:
            entry["status"] = "unknown"  # its record expired (queue.result_ttl) before this member ran
        elif len(raw) > MAX_INPUT_BYTES:
            record = codec.loads(raw)
            entry.update(status=record.get("status"), truncated=True)
        else:
            record = codec.loads(raw)
            entry.update(status=record.get("status"), result=record.get("result"), error=record.get("error"))
        inputs.append(entry)
    return inputs


def parent_values(inputs: list[dict[str, Any]]) -> Any:
    """What a function member receives as its first argument: its one parent's return value (a chain's step), or
    the list of its parents' values (a chord's join), None for a parent that did not succeed."""
    values = [entry.get("result") if entry.get("status") == "succeeded" else None for entry in inputs]
    return values[0] if len(values) == 1 else values
