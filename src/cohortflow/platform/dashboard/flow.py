"""A Canvas journey drawn as a flow: boxes in layers from the entry down, arrows between them, laid out here and
drawn as inline SVG by ``_canvas_flow.html`` (no script; colours come from the stylesheet).

Layers follow the longest path from the first step, so every arrow points down. The editor may hold a journey
that does not validate yet (a loop, an unreachable step): a loop is drawn as an arrow going back up the side, and
unreached steps are drawn last, marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NODE_W = 220
NODE_H = 78
GAP_X = 36
GAP_Y = 78
PAD = 24
LINE_CHARS = 32


@dataclass(frozen=True)
class FlowStep:
    """What the drawing needs of a step: its kind, words, and where it leads ("" is the exit)."""

    id: str
    kind: str  # entry | message | delay | split | exit
    title: str
    lines: list[str]
    successors: list[tuple[str, str]]  # (target id or "", edge label)
    unreached: bool = False


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    x: float
    y: float
    title: str
    lines: list[str]
    unreached: bool


@dataclass(frozen=True)
class Edge:
    path: str
    label: str
    label_x: float
    label_y: float
    label_w: float
    back: bool = False


@dataclass(frozen=True)
class Exit:
    x: float
    y: float


@dataclass
class Flow:
    width: float
    height: float
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    node_w: int = NODE_W
    node_h: int = NODE_H


def clip(text: str, limit: int = LINE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def layout(entry: FlowStep, steps: list[FlowStep]) -> Flow:
    """Positions for ``entry`` (on top, leading to the first step) and ``steps``."""
    by_id = {s.id: s for s in steps}
    layer: dict[str, int] = {}
    if steps:
        layer[steps[0].id] = 1
        # Longest path, relaxed at most len(steps) times: a loop stops growing there instead of forever.
        for _ in range(len(steps)):
            changed = False
            for step in steps:
                if step.id not in layer:
                    continue
                for target, _label in step.successors:
                    if target in by_id and layer.get(target, 0) < layer[step.id] + 1 <= len(steps):
                        layer[target] = layer[step.id] + 1
                        changed = True
            if not changed:
                break
    last = max(layer.values(), default=0)
    unreached = [s for s in steps if s.id not in layer]
    for offset, step in enumerate(unreached, start=1):
        layer[step.id] = last + offset
    rows: dict[int, list[FlowStep]] = {0: [entry]}
    for step in steps:
        rows.setdefault(layer[step.id], []).append(step)
    widest = max(len(r) for r in rows.values())
    width = PAD * 2 + widest * NODE_W + (widest - 1) * GAP_X + 60  # room on the right for loops
    height = PAD * 2 + (max(rows) + 1) * (NODE_H + GAP_Y) - GAP_Y + 52  # room below for exits
    flow = Flow(width=width, height=height)
    where: dict[str, Node] = {}
    for number, row in sorted(rows.items()):
        span = len(row) * NODE_W + (len(row) - 1) * GAP_X
        x0 = PAD + (width - 60 - PAD * 2 - span) / 2
        y = PAD + number * (NODE_H + GAP_Y)
        for i, step in enumerate(row):
            node = Node(
                step.id,
                step.kind,
                x0 + i * (NODE_W + GAP_X),
                y,
                clip(step.title),
                [clip(line) for line in step.lines[:2]],
                step.id in {s.id for s in unreached},
            )
            flow.nodes.append(node)
            where[step.id] = node
    entry_node = where[entry.id]
    if steps:
        _arrow(flow, entry_node, where[steps[0].id], 0, 1, "")
    for step in steps:
        source = where[step.id]
        outs = step.successors
        for i, (target, label) in enumerate(outs):
            if target in where:
                _arrow(flow, source, where[target], i, len(outs), label)
            else:
                x = source.x + (i + 1) * NODE_W / (len(outs) + 1)
                y0 = source.y + NODE_H
                flow.edges.append(_straight(x, y0, y0 + 30, label))
                flow.exits.append(Exit(x, y0 + 30))
    return flow


def _straight(x: float, y0: float, y1: float, label: str) -> Edge:
    """A short stub down to an "Exit" mark, its label beside it (not on it, where the mark is)."""
    width = _label_w(label)
    return Edge(f"M {x:.1f} {y0:.1f} L {x:.1f} {y1:.1f}", clip(label, 18), x + 6 + width / 2, y0 + 14, width)


def _label_w(label: str) -> float:
    return 12 + 6.6 * len(clip(label, 18)) if label else 0


def _arrow(flow: Flow, source: Node, target: Node, index: int, count: int, label: str) -> None:
    sx = source.x + (index + 1) * NODE_W / (count + 1)
    sy = source.y + NODE_H
    tx = target.x + NODE_W / 2
    ty = target.y
    if target.y > source.y:
        bend = min(48.0, (ty - sy) / 2)
        path = f"M {sx:.1f} {sy:.1f} C {sx:.1f} {sy + bend:.1f}, {tx:.1f} {ty - bend:.1f}, {tx:.1f} {ty - 2:.1f}"
        # The label sits on the arrow, a third of the way down, where sibling arrows are still apart.
        lx, ly = sx + (tx - sx) * 0.25, sy + (ty - sy) * 0.32
        flow.edges.append(Edge(path, clip(label, 18), lx, ly, _label_w(label)))
        return
    # Back up (a loop the editor still holds; saving refuses it): out the right side and back in.
    side = max(source.x, target.x) + NODE_W + 30
    y1, y2 = source.y + NODE_H / 2, target.y + NODE_H / 2
    path = (
        f"M {source.x + NODE_W:.1f} {y1:.1f} C {side:.1f} {y1:.1f}, {side:.1f} {y2:.1f}, "
        f"{target.x + NODE_W + 2:.1f} {y2:.1f}"
    )
    flow.edges.append(Edge(path, clip(label or "loops back", 18), side - 10, (y1 + y2) / 2, 90, back=True))
