"""The DAG SVG: layers, edges, collapsed fan-outs, escaping."""

from __future__ import annotations

import re
from typing import Any

from app.workflows.dag import (
    EXPAND_LIMIT,
    FANOUT,
    MAX_EDGES,
    MAX_EXPAND,
    MAX_LAYERS,
    MAX_NODES,
    MAX_TASK_ROWS,
    render_dag,
)


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


# -- bounded drawings: a 10,000-group workflow in every shape --------------------------------


def _size_of(svg: str) -> tuple[int, int, int]:
    return svg.count('<g class="node '), svg.count('class="task '), svg.count('class="edge"')


def _assert_bounded(svg: str) -> None:
    nodes, rows, edges = _size_of(svg)
    assert nodes <= MAX_NODES + MAX_LAYERS, nodes
    assert rows <= MAX_TASK_ROWS + MAX_EXPAND * EXPAND_LIMIT, rows
    assert edges <= MAX_EDGES, edges
    assert len(svg) < 400_000, len(svg)


def test_ten_thousand_independent_groups_draw_one_counted_node() -> None:
    groups = [_group(f"t{i}", [], [(f"t{i}", "PROCESSING")]) for i in range(10_000)]
    svg = render_dag(_wf(groups), base_url="/workflows/w-1")
    assert _size_of(svg)[0] == 1 and "10000 groups" in svg
    # Expanded, the layer draws EXPAND_LIMIT groups and counts the rest.
    opened = render_dag(_wf(groups), frozenset({"layer:0"}), "/workflows/w-1")
    _assert_bounded(opened)
    assert _size_of(opened)[0] == EXPAND_LIMIT
    assert f"{10_000 - EXPAND_LIMIT + 1} more groups" in opened


def test_a_chain_of_ten_thousand_draws_its_ends_and_counts_the_middle() -> None:
    groups = [_group("t0", [], [("t0", "COMPLETED")], "COMPLETED")]
    groups += [_group(f"t{i}", [f"t{i - 1}"], [(f"t{i}", "WAITING")]) for i in range(1, 10_000)]
    svg = render_dag(_wf(groups), base_url="/workflows/w-1")  # no RecursionError
    _assert_bounded(svg)
    nodes, _, edges = _size_of(svg)
    assert nodes == MAX_LAYERS + 1 and edges == MAX_LAYERS
    hidden = 10_000 - MAX_LAYERS
    assert f"{hidden} groups in layers {MAX_LAYERS // 2 + 1} to {10_000 - MAX_LAYERS // 2}" in svg
    assert 'id="dag-g-t0"' in svg and 'id="dag-g-t9999"' in svg and 'id="dag-g-t5000"' not in svg


def test_fan_out_fan_in_stays_bounded_even_with_every_node_expanded() -> None:
    groups = [_group("root", [], [("root", "COMPLETED")], "COMPLETED")]
    groups += [_group(f"m{i}", ["root"], [(f"m{i}", "RUNNING")]) for i in range(9_998)]
    groups.append(_group("sink", [f"m{i}" for i in range(9_998)], [("sink", "WAITING")]))
    svg = render_dag(_wf(groups), base_url="/workflows/w-1")
    assert _size_of(svg) == (3, 2, 2)  # root, one counted layer, sink
    opened = render_dag(_wf(groups), frozenset({"layer:0", "layer:1", "layer:2"}), "/w")
    _assert_bounded(opened)
    # The sink's 9,998 upstream edges fold into one per drawn node.
    assert _size_of(opened)[2] == 2 * EXPAND_LIMIT


def test_one_gang_of_ten_thousand_tasks_expands_to_a_bounded_list() -> None:
    gang = _group("gang", [], [(f"w{i}", "RUNNING") for i in range(10_000)], "RUNNING")
    opened = render_dag(_wf([gang]), frozenset({"g:gang"}))
    _assert_bounded(opened)
    assert _size_of(opened)[1] == EXPAND_LIMIT
    assert f"+{10_000 - EXPAND_LIMIT} more in the task table" in opened


def test_many_small_groups_spend_a_bounded_budget_of_task_rows() -> None:
    # 24 layers of 20 groups of 20 tasks: every layer and group is under FANOUT.
    groups = []
    for layer in range(24):
        for g in range(FANOUT):
            up = [f"g{layer - 1}-{g}"] if layer else []
            tasks = [(f"t{layer}-{g}-{k}", "WAITING") for k in range(FANOUT)]
            groups.append(_group(f"g{layer}-{g}", up, tasks))
    svg = render_dag(_wf(groups))
    _assert_bounded(svg)
    assert _size_of(svg)[1] <= MAX_TASK_ROWS


def test_dense_edges_between_expanded_layers_are_capped() -> None:
    top = [_group(f"a{i}", [], [(f"a{i}", "WAITING")]) for i in range(EXPAND_LIMIT)]
    bottom = [
        _group(f"b{i}", [f"a{j}" for j in range(EXPAND_LIMIT)], [(f"b{i}", "WAITING")])
        for i in range(EXPAND_LIMIT)
    ]
    svg = render_dag(_wf(top + bottom), frozenset({"layer:0", "layer:1"}))
    assert _size_of(svg)[2] == min(MAX_EDGES, (EXPAND_LIMIT - 1) * EXPAND_LIMIT)
    assert "edges not drawn" in svg


def test_more_expand_keys_than_the_limit_are_not_drawn_open() -> None:
    layers = [
        [_group(f"l{n}-{i}", [f"l{n - 1}-0"] if n else [], [(f"l{n}-{i}", "WAITING")])
         for i in range(FANOUT + 1)]
        for n in range(MAX_EXPAND + 2)
    ]  # fmt: skip
    keys = frozenset(f"layer:{n}" for n in range(MAX_EXPAND + 2))
    svg = render_dag(_wf([g for layer in layers for g in layer]), keys, "/w")
    assert svg.count(f">{FANOUT + 1} groups<title>") == 2  # the keys past MAX_EXPAND
    assert "expand ▸" not in svg  # and nothing more can be opened


def test_each_expanded_node_has_a_link_that_closes_it() -> None:
    groups = [_group(f"t{i}", [], [(f"t{i}", "WAITING")]) for i in range(FANOUT + 1)]
    svg = render_dag(_wf(groups), frozenset({"layer:0", "g:t1"}), "/workflows/w-1")
    assert 'href="/workflows/w-1?expand=g%3At1#dag" class="collapse">layer:0' in svg
    assert 'href="/workflows/w-1?expand=layer%3A0#dag" class="collapse">g:t1' in svg
    assert "collapse" not in render_dag(_wf(groups), base_url="/workflows/w-1")
