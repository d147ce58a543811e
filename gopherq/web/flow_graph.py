"""A flow's graph drawn server-side as SVG (no build step, no script): members in columns by depth (the longest
path from a root), one box per member coloured by its state, a line per dependency. Bounded: a flow with more
members than MAX_DRAWN is summarised by state instead of drawn."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from gopherq.core.flows.store import FlowView

#: Most members drawn; a larger flow's page shows counts per state.
MAX_DRAWN = 300

#: Box fill per member state (the dashboard's palette).
FILL = {
    "waiting": "#eef0f4",
    "ready": "#dbe6fb",
    "succeeded": "#d6f0e1",
    "failed": "#f8d9d9",
    "cancelled": "#ececec",
    "blocked": "#f6e7c8",
}

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 150, 34, 60, 14, 10


@dataclass(slots=True)
class Placed:
    node: str
    state: str
    x: int
    y: int


def depths(view: FlowView) -> dict[str, int]:
    """Each member's column: 0 for a root, else one more than its deepest parent."""
    parents = view.parents()
    depth: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in depth:
            depth[node] = 0  # a cycle cannot happen (checked at creation); this only guards the recursion
            depth[node] = max((of(parent) + 1 for parent in parents.get(node, [])), default=0)
        return depth[node]

    for member in view.members:
        of(member.node)
    return depth


def layout(view: FlowView) -> list[Placed]:
    columns: dict[int, list[str]] = {}
    for node, depth in sorted(depths(view).items(), key=lambda item: (item[1], item[0])):
        columns.setdefault(depth, []).append(node)
    states = {member.node: member.state for member in view.members}
    placed = []
    for depth, nodes in columns.items():
        for row, node in enumerate(nodes):
            placed.append(Placed(node, states[node], PAD + depth * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y)))
    return placed


def flow_svg(view: FlowView, link: str) -> str | None:
    """The SVG of the flow (each box links to `link` + its task id), or None when it is too large to draw."""
    if len(view.members) > MAX_DRAWN:
        return None
    placed = layout(view)
    where = {box.node: box for box in placed}
    width = max((box.x for box in placed), default=0) + BOX_W + PAD
    height = max((box.y for box in placed), default=0) + BOX_H + PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="flow {escape(view.id)}">'
    ]
    for member in view.members:
        start = where[member.node]
        for child in member.children:
            end = where.get(child)
            if end is not None:
                parts.append(
                    f'<line x1="{start.x + BOX_W}" y1="{start.y + BOX_H // 2}" x2="{end.x}" y2="{end.y + BOX_H // 2}" '
                    'stroke="#9aa3b5" stroke-width="1.2"/>'
                )
    for box in placed:
        label = box.node if len(box.node) <= 18 else box.node[:17] + "…"
        task_id = f"{view.id}.{box.node}"
        parts.append(
            f'<a href="{escape(link + task_id)}"><title>{escape(box.node)}: {box.state}</title>'
            f'<rect x="{box.x}" y="{box.y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="{FILL.get(box.state, "#fff")}" stroke="#b7bfce"/>'
            f'<text x="{box.x + 8}" y="{box.y + 14}" font-size="12" fill="#1d2330">{escape(label)}</text>'
            f'<text x="{box.x + 8}" y="{box.y + 28}" font-size="10" fill="#6b7385">{box.state}</text></a>'
        )
    parts.append("</svg>")
    return "".join(parts)
