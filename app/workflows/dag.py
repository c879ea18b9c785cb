"""The workflow DAG as server-rendered SVG: layered layout, status colours, collapsed fan-outs.

Pure: a workflow snapshot in, SVG text out. Groups are placed in layers by their longest
path from a root (a group sits one layer right of its deepest upstream group) and ordered
within a layer by the average row of their upstream groups, which keeps most edges short and
uncrossed. A layer with more than ``FANOUT`` groups becomes one counted node, and so does a
group with more than ``FANOUT`` tasks, unless the viewer expanded it (``?expand=``); the
counted node shows how many are in each state. Colours come from CSS classes, so the light
and dark themes both apply. Every name is escaped.

The drawing is bounded whatever the workflow's shape, so a 10,000-task workflow's page stays
small: a graph deeper than ``MAX_LAYERS`` shows its first and last layers with the middle as
one counted node; an expanded node shows at most ``EXPAND_LIMIT`` groups or tasks and counts
the rest; at most ``MAX_EXPAND`` nodes can be open at once; and past ``MAX_NODES`` nodes,
``MAX_TASK_ROWS`` task rows or ``MAX_EDGES`` edges the remainder is counted, not drawn. The
task table on the same page lists every task, a page at a time.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote

from app.templating import status_class

__all__ = (
    "EXPAND_LIMIT",
    "FANOUT",
    "MAX_EDGES",
    "MAX_EXPAND",
    "MAX_LAYERS",
    "MAX_NODES",
    "MAX_TASK_ROWS",
    "render_dag",
)

FANOUT = 20  # a layer or group wider than this is drawn as one counted node
EXPAND_LIMIT = 50  # an expanded node draws at most this many groups or tasks
MAX_EXPAND = 4  # nodes open at once (``?expand=`` keys)
MAX_LAYERS = 24  # deeper graphs draw the first and last half of this, the middle counted
MAX_NODES = 300  # nodes in the whole drawing; later groups of a layer are counted instead
MAX_TASK_ROWS = 200  # task rows in the whole drawing; later groups are drawn counted
MAX_EDGES = 1000
_W = 200  # node width
_GAP_X = 70
_GAP_Y = 18
_HEAD = 26  # group title height
_ROW = 22  # task row height
_PAD = 8


@dataclass(slots=True)
class _Node:
    key: str  # "g:<name>" a group, "layer:<n>" a collapsed layer, "rest:…"/"layers:…" counted
    label: str
    status: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] | None = None  # a collapsed node: how many in each state
    collapsed_tasks: bool = False
    expandable: bool = True
    more_tasks: int = 0  # tasks of an expanded group beyond EXPAND_LIMIT
    x: float = 0.0
    y: float = 0.0
    h: float = 0.0


def _layers(groups: list[dict[str, Any]]) -> list[list[int]]:
    """Groups by longest path from a root, in one topological pass (no recursion: a chain of
    10,000 groups is 10,000 deep)."""
    index = {g["name"]: i for i, g in enumerate(groups)}
    ups = [[index[u] for u in g["upstream"] if u in index] for g in groups]
    downs: list[list[int]] = [[] for _ in groups]
    waiting = [len(u) for u in ups]
    for i, us in enumerate(ups):
        for u in us:
            downs[u].append(i)
    depth = [0] * len(groups)
    ready = deque(i for i, n in enumerate(waiting) if n == 0)
    while ready:
        i = ready.popleft()
        for d in downs[i]:
            depth[d] = max(depth[d], depth[i] + 1)
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    # The parser refuses cycles; a group left in one anyway keeps the depth reached so far.
    layers: list[list[int]] = [[] for _ in range(max(depth, default=-1) + 1)]
    for i in range(len(groups)):
        layers[depth[i]].append(i)
    # Order each layer by the mean row of its upstream groups (one barycenter pass).
    row: dict[int, float] = {}
    for layer in layers:
        layer.sort(key=lambda i: (sum(row.get(u, 0.0) for u in ups[i]) / max(1, len(ups[i])), i))
        for r, i in enumerate(layer):
            row[i] = float(r)
    return layers


def _counted(key: str, label: str, statuses: list[str], expandable: bool) -> _Node:
    counts = Counter(statuses)
    return _Node(key, label, _dominant(counts), counts=counts, expandable=expandable)


def render_dag(wf: dict[str, Any], expand: frozenset[str] = frozenset(), base_url: str = "") -> str:
    """The SVG of ``wf``'s groups and tasks; ``expand`` holds node keys the viewer opened
    (at most ``MAX_EXPAND`` of them are honoured; callers refuse more)."""
    groups: list[dict[str, Any]] = wf.get("groups", [])
    if not groups:
        return '<p class="empty">This workflow has no groups.</p>'
    expand = frozenset(sorted(expand)[:MAX_EXPAND])
    can_open = len(expand) < MAX_EXPAND
    layers = _layers(groups)
    numbered = list(enumerate(layers))
    middle: list[tuple[int, list[int]]] = []
    if len(numbered) > MAX_LAYERS:
        half = MAX_LAYERS // 2
        middle = numbered[half:-half]
        numbered = [*numbered[:half], (-1, []), *numbered[-half:]]
    columns: list[list[_Node]] = []
    node_of: dict[str, str] = {}  # group name -> key of the node that draws it
    nodes = 0
    task_rows = 0
    for n, layer in numbered:
        if n == -1:
            key = f"layers:{middle[0][0]}-{middle[-1][0]}"
            members = [i for _, lay in middle for i in lay]
            label = f"{len(members)} groups in layers {middle[0][0] + 1} to {middle[-1][0] + 1}"
            columns.append([_counted(key, label, [groups[i]["status"] for i in members], False)])
            for i in members:
                node_of[groups[i]["name"]] = key
            nodes += 1
            continue
        key = f"layer:{n}"
        opened = key in expand
        if len(layer) > FANOUT and not opened:
            statuses = [groups[i]["status"] for i in layer]
            columns.append([_counted(key, f"{len(layer)} groups", statuses, can_open)])
            for i in layer:
                node_of[groups[i]["name"]] = key
            nodes += 1
            continue
        room = max(1, min(EXPAND_LIMIT if opened else FANOUT, MAX_NODES - nodes))
        drawn, rest = (layer, []) if len(layer) <= room else (layer[: room - 1], layer[room - 1 :])
        column = []
        for i in drawn:
            g = groups[i]
            gkey = f"g:{g['name']}"
            node = _Node(gkey, g["name"], g["status"], tasks=g["tasks"])
            many = len(g["tasks"]) > FANOUT
            if gkey in expand and many:
                node.tasks = g["tasks"][:EXPAND_LIMIT]
                node.more_tasks = len(g["tasks"]) - len(node.tasks)
            elif many or task_rows + len(g["tasks"]) > MAX_TASK_ROWS:
                node.collapsed_tasks = True
                node.counts = Counter(t["status"] for t in g["tasks"])
                node.expandable = can_open and many
            if not node.collapsed_tasks:
                task_rows += len(node.tasks)
            column.append(node)
            node_of[g["name"]] = gkey
        if rest:
            rkey = f"rest:{n}"
            statuses = [groups[i]["status"] for i in rest]
            column.append(_counted(rkey, f"{len(rest)} more groups", statuses, False))
            for i in rest:
                node_of[groups[i]["name"]] = rkey
        nodes += len(column)
        columns.append(column)
    # Place nodes.
    by_key: dict[str, _Node] = {}
    height = 0.0
    for c, column in enumerate(columns):
        y = float(_PAD)
        for node in column:
            node.x = _PAD + c * (_W + _GAP_X)
            node.y = y
            if (node.counts is not None and not node.tasks) or node.collapsed_tasks:
                node.h = _HEAD + _ROW * 2 + _PAD
            else:
                node.h = _HEAD + _ROW * (len(node.tasks) + (1 if node.more_tasks else 0)) + _PAD
            y += node.h + _GAP_Y
            by_key[node.key] = node
        height = max(height, y)
    width = _PAD * 2 + len(columns) * _W + (len(columns) - 1) * _GAP_X

    edges: set[tuple[str, str]] = set()
    for g in groups:
        b = node_of.get(g["name"])
        for up in g["upstream"]:
            a = node_of.get(up)
            if a is not None and b is not None and a != b:
                edges.add((a, b))
    drawn_edges = sorted(edges)[:MAX_EDGES]
    hidden = len(edges) - len(drawn_edges)
    note = f"; {hidden} edges not drawn" if hidden else ""
    out = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="Dependency graph of {escape(wf["id"])}{note}" '
        f'data-nodes="{len(by_key)}" data-edges="{len(drawn_edges)}">'
    ]
    for a, b in drawn_edges:
        na, nb = by_key[a], by_key[b]
        x1, y1 = na.x + _W, na.y + _HEAD / 2
        x2, y2 = nb.x, nb.y + _HEAD / 2
        mid = (x1 + x2) / 2
        out.append(
            f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} '
            f'{x2 - 6:.0f},{y2:.0f}" marker-end="url(#arrow)"/>'
        )
    out.append(
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="edge-head"/></marker></defs>'
    )
    for column in columns:
        for node in column:
            out.append(_node_svg(node, wf["id"], expand, base_url))
    out.append("</svg>")
    return _open_nodes(expand, base_url) + "".join(out)


def _open_nodes(expand: frozenset[str], base_url: str) -> str:
    """Links that close each expanded node: only ``MAX_EXPAND`` can be open at once."""
    if not expand:
        return ""
    links = []
    for key in sorted(expand):
        rest = sorted(expand - {key})
        query = "&".join(f"expand={quote(k)}" for k in rest)
        href = base_url + ("?" + query if query else "") + "#dag"
        links.append(f'<a href="{escape(href)}" class="collapse">{escape(key)} ✕</a>')
    shown = " ".join(links)
    return f'<p class="dag-open small">Expanded ({len(expand)} of {MAX_EXPAND}): {shown}</p>'


def _dominant(counts: Counter[str]) -> str:
    for status in ("RUNNING", "INITIALIZING"):
        if counts.get(status):
            return status
    if any(s.startswith("FAILED") for s in counts):
        return next(s for s in counts if s.startswith("FAILED"))
    if set(counts) == {"COMPLETED"}:
        return "COMPLETED"
    return "WAITING"


def _expand_link(base_url: str, expand: frozenset[str], key: str) -> str:
    keys = sorted(expand | {key})
    return base_url + "?" + "&".join(f"expand={quote(k)}" for k in keys) + "#dag"


def _node_svg(node: _Node, workflow_id: str, expand: frozenset[str], base_url: str) -> str:
    cls = status_class(node.status)
    dom_id = "dag-" + node.key.replace(":", "-")
    parts = [
        f'<g class="node {cls}" id="{escape(dom_id)}" data-status="{escape(node.status)}">',
        f'<rect class="box" x="{node.x:.0f}" y="{node.y:.0f}" width="{_W}" height="{node.h:.0f}" rx="6"/>',
        f'<text class="title" x="{node.x + _PAD:.0f}" y="{node.y + 17:.0f}">{escape(_clip(node.label, 24))}'
        f"<title>{escape(node.label)}: {escape(node.status)}</title></text>",
    ]
    row_y = node.y + _HEAD
    if node.counts is not None and (not node.tasks or node.collapsed_tasks):
        summary = ", ".join(f"{n} {escape(s.lower())}" for s, n in node.counts.most_common())
        parts.append(
            f'<text class="count" x="{node.x + _PAD:.0f}" y="{row_y + 15:.0f}">'
            f"{escape(_clip(summary, 30))}<title>{escape(summary)}</title></text>"
        )
        if node.expandable:
            link = _expand_link(base_url, expand, node.key)
            parts.append(
                f'<a href="{escape(link)}" class="expand"><text x="{node.x + _PAD:.0f}" '
                f'y="{row_y + _ROW + 15:.0f}">expand ▸</text></a>'
            )
        else:
            parts.append(
                f'<text class="count muted" x="{node.x + _PAD:.0f}" y="{row_y + _ROW + 15:.0f}">'
                "listed in the task table</text>"
            )
    else:
        for t in node.tasks:
            tcls = status_class(t["status"])
            href = f"/workflows/{quote(workflow_id)}/tasks/{quote(t['name'])}/logs"
            parts.append(
                f'<a href="{escape(href)}" class="task {tcls}" id="dag-t-{escape(t["name"])}" '
                f'data-status="{escape(t["status"])}">'
                f'<rect x="{node.x + 4:.0f}" y="{row_y + 2:.0f}" width="{_W - 8}" height="{_ROW - 4}" rx="4"/>'
                f'<text x="{node.x + _PAD + 2:.0f}" y="{row_y + 15:.0f}">'
                f"{escape(_clip(t['name'], 22))}<title>{escape(t['name'])}: {escape(t['status'])}</title>"
                f"</text></a>"
            )
            row_y += _ROW
        if node.more_tasks:
            parts.append(
                f'<text class="count" x="{node.x + _PAD:.0f}" y="{row_y + 15:.0f}">'
                f"+{node.more_tasks} more in the task table</text>"
            )
    parts.append("</g>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
