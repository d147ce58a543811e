"""The envelope field `flow_member` and the rules for flow ids and node names: the one place they are checked.

`flow_member` is {"flow": <flow id>, "node": <node name>, "parents": [<node>...] or <count>}; a member's task id is
always "<flow id>.<node>", so the settle script can tell a member from a task that merely claims to be one. Pure
data, no I/O (task.py calls `check_member` for every envelope that carries the field).
"""

from __future__ import annotations

import re
from typing import Any

from gopherq.core.errors import TaskRejected

#: Flow ids: letters, digits and . _ : - (they become part of key names and task ids), at most 100 characters.
FLOW_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}\Z")

#: Node names: letters, digits and _ : - (no dot, no comma: the bookkeeping joins them with commas), at most 64.
NODE_NAME = re.compile(r"^[A-Za-z0-9_:\-]{1,64}\Z")

#: Most parents a member's envelope names; a join with more gets their count instead (and reads them by reference).
MAX_LISTED_PARENTS = 64


#: The keys of `flow_member`: `open` marks a join that may get children while the flow runs.
MEMBER_KEYS = frozenset({"flow", "node", "parents", "open"})


def member_task_id(flow_id: str, node: str) -> str:
    """The task id of node `node` of flow `flow_id`."""
    return f"{flow_id}.{node}"


def check_flow_id(value: Any) -> str:
    if type(value) is not str or not FLOW_ID.match(value):
        raise TaskRejected("schema_invalid", f"flow id must be 1-100 letters, digits or . _ : -, got {value!r}")
    return value


def _plain_name(node: str) -> bool:
    """Whether `node` is a valid name of ASCII letters and digits only, as most are: three C checks, cheaper than
    the pattern (a worker checks every member's node)."""
    return len(node) <= 64 and node.isascii() and node.isalnum()


def check_node(value: Any) -> str:
    if type(value) is str and _plain_name(value):
        return value
    if type(value) is not str or not NODE_NAME.match(value):
        raise TaskRejected("schema_invalid", f"flow node name must be 1-64 letters, digits or _ : -, got {value!r}")
    return value


#: Flow ids already found valid (at most 1024): a worker reads the same flow's id on member after member.
_VALID_FLOWS: set[str] = set()


def check_member(value: Any) -> dict[str, Any]:
    """The `flow_member` field, checked: TaskRejected naming what is wrong."""
    if type(value) is dict and len(value) == 2:  # the usual: a root's {flow, node}, of a flow seen already
        flow_id, node = value.get("flow"), value.get("node")
        if type(flow_id) is str and flow_id in _VALID_FLOWS and type(node) is str and _plain_name(node):
            return value
    if not isinstance(value, dict) or "flow" not in value or "node" not in value or not value.keys() <= MEMBER_KEYS:
        raise TaskRejected("schema_invalid", f"field 'flow_member' must be {{flow, node[, parents]}}, got {value!r}")
    flow_id = value["flow"]
    if type(flow_id) is not str or flow_id not in _VALID_FLOWS:
        check_flow_id(flow_id)
        if len(_VALID_FLOWS) < 1024:
            _VALID_FLOWS.add(flow_id)
    check_node(value["node"])
    parents = value.get("parents")
    if parents is not None:
        if type(parents) is int:
            if parents < 0:
                raise TaskRejected("schema_invalid", f"field 'flow_member': bad parent count {parents!r}")
        elif not isinstance(parents, list) or len(parents) > MAX_LISTED_PARENTS:
            raise TaskRejected("schema_invalid", "field 'flow_member': parents must be a count or a short list")
        else:
            for parent in parents:
                check_node(parent)
    if value.get("open") not in (None, True):
        raise TaskRejected("schema_invalid", "field 'flow_member': open must be true when present")
    return value


def listed_parents(member: dict[str, Any]) -> list[str]:
    """The parents a member's envelope lists (none when it has none, or only their count)."""
    parents = member.get("parents")
    return parents if isinstance(parents, list) else []
