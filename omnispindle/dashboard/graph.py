"""A workflow drawn left to right: each task in the column after its deepest parent.

The layout is computed here and drawn by the template as SVG, so the page
needs no script to show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from omnispindle._db.rows import GraphNode

BOX_WIDTH = 190
BOX_HEIGHT = 46
COLUMN_GAP = 60
ROW_GAP = 18
MARGIN = 10


@dataclass(frozen=True, slots=True)
class Box:
    """A task drawn at (x, y); ``current``: the task whose page this is."""

    task_id: int
    task_type: str
    state: str
    x: int
    y: int
    current: bool


@dataclass(frozen=True, slots=True)
class Edge:
    """A line from a parent's right side to a dependent's left side."""

    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True, slots=True)
class Layout:
    """Everything the template draws, and the size of the drawing."""

    boxes: list[Box]
    edges: list[Edge]
    width: int
    height: int
    box_width: int = BOX_WIDTH
    box_height: int = BOX_HEIGHT


def levels(nodes: Sequence[GraphNode]) -> dict[int, int]:
    """Each task's column: 0 without a parent among ``nodes``, else one past its deepest
    parent's. Dependencies never form a cycle (the database refuses one)."""
    parents = {n["task_id"]: [p for p in n["depends_on"]] for n in nodes}
    found: dict[int, int] = {}

    def level(task_id: int) -> int:
        if task_id not in found:
            known = [p for p in parents[task_id] if p in parents]
            found[task_id] = 1 + max(map(level, known)) if known else 0
        return found[task_id]

    for task_id in parents:
        level(task_id)
    return found


def layout(nodes: Sequence[GraphNode], current: int) -> Layout:
    """Where to draw each task and each edge; columns by level, rows by id."""
    column_of = levels(nodes)
    row_counts: dict[int, int] = {}
    boxes: dict[int, Box] = {}
    for node in sorted(nodes, key=lambda n: n["task_id"]):
        column = column_of[node["task_id"]]
        row = row_counts.get(column, 0)
        row_counts[column] = row + 1
        boxes[node["task_id"]] = Box(
            node["task_id"],
            node["task_type"],
            node["state"],
            MARGIN + column * (BOX_WIDTH + COLUMN_GAP),
            MARGIN + row * (BOX_HEIGHT + ROW_GAP),
            node["task_id"] == current,
        )
    edges = [
        _edge(boxes[parent], boxes[node["task_id"]])
        for node in nodes
        for parent in node["depends_on"]
        if parent in boxes
    ]
    width = 2 * MARGIN + (max(column_of.values(), default=0) + 1) * (BOX_WIDTH + COLUMN_GAP)
    height = 2 * MARGIN + max(row_counts.values(), default=1) * (BOX_HEIGHT + ROW_GAP)
    return Layout(list(boxes.values()), edges, width - COLUMN_GAP, height - ROW_GAP)


def _edge(parent: Box, child: Box) -> Edge:
    middle = BOX_HEIGHT // 2
    return Edge(parent.x + BOX_WIDTH, parent.y + middle, child.x, child.y + middle)
