"""Item 7 (page part): a 10,000-task workflow's page stays small in every shape.

Before, the page of a 20,000-task workflow was 10 MB (every task row, every graph node, every
event and the whole rendered spec) and took 3.3 s. Now the task table shows one page at a time
with links to the others, the graph is bounded (app/workflows/dag.py), the timeline shows the
latest events with a link to earlier ones, and the live stream renders the same bounded view.
Sizes are asserted here; times are measured by ``python -m bench.large_page``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import asyncpg
import httpx
import pytest

from app.workflows.dag import (
    EXPAND_LIMIT,
    MAX_EDGES,
    MAX_EXPAND,
    MAX_LAYERS,
    MAX_NODES,
    MAX_TASK_ROWS,
)
from app.workflows.views import TASK_PAGE_SIZE, TIMELINE_SIZE
from bench.large_page import shape_spec
from tests.support import ADMIN_TOKEN, InProcessServer, submit

TASKS = 10_000
PAGE_LIMIT = 1_000_000
MAX_GRAPH_NODES = MAX_NODES + MAX_LAYERS + 1
MAX_GRAPH_ROWS = MAX_TASK_ROWS + MAX_EXPAND * EXPAND_LIMIT


def _client(server: InProcessServer) -> httpx.AsyncClient:
    # Submitting 10,000 tasks takes seconds on a busy machine: a generous timeout.
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    return httpx.AsyncClient(base_url=server.base, headers=auth, timeout=120)


def _task_names(page: str) -> list[str]:
    return re.findall(r'<tr id="task-([^"]+)"', page)


def _link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}"', page)
    return html.unescape(found.group(1)) if found else None


def _graph_size(page: str) -> tuple[int, int, int]:
    svg = page[page.index('<svg class="dag"') : page.index("</svg>")]
    return svg.count('<g class="node '), svg.count('class="task '), svg.count('class="edge"')


def _assert_small(page: str) -> None:
    assert len(page.encode()) < PAGE_LIMIT, len(page.encode())
    nodes, rows, edges = _graph_size(page)
    assert nodes <= MAX_GRAPH_NODES and rows <= MAX_GRAPH_ROWS and edges <= MAX_EDGES
    assert len(_task_names(page)) <= TASK_PAGE_SIZE
    assert page.count("<li data-event=") <= TIMELINE_SIZE


async def _first_live_message(client: Any, path: str) -> bytes:
    async with client.stream("GET", path, headers={"accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        buf = b""
        async for chunk in r.aiter_bytes():
            buf += chunk.replace(b"\r\n", b"\n")
            start = buf.find(b"data:")
            if start >= 0 and b"\n\n" in buf[start:]:
                return buf[start : buf.index(b"\n\n", start)]
    raise AssertionError("the stream ended before its first message")


@pytest.mark.parametrize("shape", ["independent", "chain", "fan"])
async def test_the_page_of_a_ten_thousand_task_workflow_is_small(
    server: InProcessServer, shape: str
) -> None:
    async with _client(server) as api:
        wid = await submit(api, shape_spec(shape, TASKS))
        r = await api.get(f"/workflows/{wid}")
        assert r.status_code == 200
        first = r.text
        _assert_small(first)
        assert f"tasks 1\N{EN DASH}{TASK_PAGE_SIZE} of {TASKS}" in first
        assert f"all {TASKS}" in first  # totals count every task, not just the page
        # The spec as rendered (one line per task) is shown in part, the whole text linked.
        assert f'href="/workflows/{wid}/spec.txt?which=rendered_spec"' in first
        whole = await api.get(f"/workflows/{wid}/spec.txt?which=rendered_spec")
        assert whole.status_code == 200 and whole.text.count("image: x") == TASKS

        # next, then last, then previous: one page each, the last holds the last task.
        next_url = _link(first, "next")
        assert next_url is not None and _link(first, "prev") is None
        second = (await api.get(next_url)).text
        assert set(_task_names(second)).isdisjoint(_task_names(first))
        assert len(_task_names(second)) == TASK_PAGE_SIZE
        last_url = _link(first, "last")
        assert last_url is not None
        last = (await api.get(last_url)).text
        _assert_small(last)
        assert _link(last, "next") is None
        last_task = {"independent": f"t{TASKS - 1}", "chain": f"t{TASKS - 1}", "fan": "sink"}
        assert last_task[shape] in _task_names(last)
        previous_url = _link(last, "prev")
        assert previous_url is not None and "page=" in previous_url
        previous = (await api.get(previous_url)).text
        assert len(_task_names(previous)) == TASK_PAGE_SIZE

        # The live stream's first message is the same bounded view.
        message = await _first_live_message(api, f"/workflows/{wid}/live")
        assert len(message) < PAGE_LIMIT, len(message)
        assert message.count(b'<tr id="task-') == TASK_PAGE_SIZE
        assert message.count(b'<g class="node ') <= MAX_GRAPH_NODES
        page_two = await _first_live_message(api, f"/workflows/{wid}/live?page=2")
        names = re.findall(rb'<tr id="task-([^"]+)"', page_two)
        assert [n.decode() for n in names] == _task_names(second)


async def test_every_task_is_on_exactly_one_page_and_the_filter_pages_too(
    server: InProcessServer,
) -> None:
    async with _client(server) as api:
        wid = await submit(api, shape_spec("independent", TASKS))
        seen: list[str] = []
        url: str | None = f"/workflows/{wid}"
        while url is not None:
            page = (await api.get(url)).text
            seen += _task_names(page)
            url = _link(page, "next")
        assert len(seen) == TASKS and set(seen) == {f"t{i}" for i in range(TASKS)}
        # A page past the end shows the last page rather than nothing.
        beyond = (await api.get(f"/workflows/{wid}?page=99999")).text
        assert _task_names(beyond) == seen[-TASKS % TASK_PAGE_SIZE or -TASK_PAGE_SIZE :]
        # Totals per status link to a filtered table, paged the same way.
        status = re.search(r'class="status-filter" data-status="([A-Z_]+)"', beyond)
        assert status is not None
        filtered = (await api.get(f"/workflows/{wid}?status={status.group(1)}")).text
        assert f"of {TASKS}" in filtered and len(_task_names(filtered)) == TASK_PAGE_SIZE
        # Unbounded or unknown view parameters are refused, never a 500.
        for query in ("page=0", "page=99999999999999999999", "status=NOPE"):
            assert (await api.get(f"/workflows/{wid}?{query}")).status_code in (400, 422)


async def test_expand_cannot_blow_the_graph_up_again(server: InProcessServer) -> None:
    async with _client(server) as api:
        wid = await submit(api, shape_spec("fan", TASKS))
        page = (await api.get(f"/workflows/{wid}")).text
        opened = re.search(r'<a href="([^"]+)" class="expand">', page)
        assert opened is not None  # the 9,998-wide layer offers to expand
        wide = (await api.get(html.unescape(opened.group(1)))).text
        _assert_small(wide)
        assert _graph_size(wide)[0] >= EXPAND_LIMIT  # it did open, up to the limit
        keys = "&".join(f"expand=layer:{n}" for n in range(MAX_EXPAND))
        _assert_small((await api.get(f"/workflows/{wid}?{keys}")).text)
        live = await _first_live_message(api, f"/workflows/{wid}/live?{keys}")
        assert len(live) < PAGE_LIMIT
        too_many = "&".join(f"expand=g:m{n}" for n in range(MAX_EXPAND + 1))
        for path in (f"/workflows/{wid}?{too_many}", f"/workflows/{wid}/live?{too_many}"):
            assert (await api.get(path)).status_code == 422
        huge_key = "expand=" + "x" * 5000
        assert (await api.get(f"/workflows/{wid}?{huge_key}")).status_code == 422


async def test_the_timeline_shows_the_latest_events_and_pages_to_earlier_ones(
    server: InProcessServer, database_url: str
) -> None:
    async with _client(server) as api:
        wid = await submit(api, shape_spec("independent", TASKS))
        conn = await asyncpg.connect(database_url)
        try:
            events = await conn.fetchval("SELECT count(*) FROM task_event WHERE workflow = $1", wid)
            newest = await conn.fetchval("SELECT max(id) FROM task_event WHERE workflow = $1", wid)
        finally:
            await conn.close()
        assert events >= TASKS  # one per task at least
        page = (await api.get(f"/workflows/{wid}")).text
        shown = [int(i) for i in re.findall(r'<li data-event="(\d+)"', page)]
        assert len(shown) == TIMELINE_SIZE and shown[0] == newest
        earlier = re.search(r'<a href="([^"]+)" id="events-earlier"', page)
        assert earlier is not None
        seen = set(shown)
        url: str | None = html.unescape(earlier.group(1))
        for _ in range(3):  # a few pages back: each bounded, none repeated
            assert url is not None
            older = (await api.get(url)).text
            ids = [int(i) for i in re.findall(r'<li data-event="(\d+)"', older)]
            assert len(ids) == TIMELINE_SIZE and seen.isdisjoint(ids) and max(ids) < min(seen)
            seen |= set(ids)
            found = re.search(r'<a href="([^"]+)" rel="next" id="events-earlier"', older)
            url = html.unescape(found.group(1)) if found else None
        assert (await api.get(f"/workflows/{wid}/events?before=0")).status_code == 400
