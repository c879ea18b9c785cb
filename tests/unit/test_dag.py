"""The DAG SVG: layers, edges, collapsed fan-outs, escaping."""

from __future__ import annotations

import re
from typing import Any

from app.workflows.dag import FANOUT, render_dag


def _wf(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "w-1", "groups": groups}


def _group(
    name: str, upstream: list[str], tasks: list[tuple[str, str]], status: str = "WAITING"
) -> dict[str, Any]:
    return {
        "name": name,
        "status": status,
        "upstream": upstream,
        "tasks": [{"name": n, "status": s} for n, s in tasks],
    }


def test_layers_follow_dependencies_and_edges_join_groups() -> None:
    svg = render_dag(
        _wf(
            [
                _group("prep", [], [("fetch", "COMPLETED")], "COMPLETED"),
                _group("train", ["prep"], [("fit", "RUNNING"), ("eval", "WAITING")], "RUNNING"),
                _group("report", ["train", "prep"], [("pdf", "WAITING")]),
            ]
        )
    )
    x = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r'id="dag-g-(\w+)".*?<rect class="box" x="(\d+)"', svg)
    }
    assert x["prep"] < x["train"] < x["report"]
    assert svg.count('class="edge"') == 3
    assert 'id="dag-t-fit" data-status="RUNNING"' in svg
    assert 'class="node st-ok" id="dag-g-prep" data-status="COMPLETED"' in svg
    assert 'href="/workflows/w-1/tasks/fit/logs"' in svg


def test_wide_fanouts_collapse_into_a_counted_node_that_expands() -> None:
    groups = [
        _group(f"t{i}", [], [(f"t{i}", "COMPLETED" if i < 5 else "RUNNING")], "RUNNING")
        for i in range(FANOUT + 30)
    ]
    svg = render_dag(_wf(groups), base_url="/workflows/w-1")
    assert 'id="dag-layer-0"' in svg and "50 groups" in svg
    assert 'href="/workflows/w-1?expand=layer%3A0#dag"' in svg
    assert "dag-t-t7" not in svg
    expanded = render_dag(_wf(groups), frozenset({"layer:0"}))
    assert expanded.count('class="task ') == FANOUT + 30


def test_a_group_with_many_tasks_collapses_its_task_list() -> None:
    big = _group("gang", [], [(f"w{i}", "RUNNING") for i in range(40)], "RUNNING")
    svg = render_dag(_wf([big]))
    assert "40 running" in svg and "dag-t-w3" not in svg
    assert render_dag(_wf([big]), frozenset({"g:gang"})).count('class="task ') == 40


def test_names_are_escaped() -> None:
    svg = render_dag(_wf([_group("<script>x</script>", [], [("<b>", "WAITING")])]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg
