"""HTML pages for workflows and their live fragments over SSE.

Each live stream sends the current fragment first (a fresh snapshot on every (re)connect),
then a new fragment whenever the workflow changes. Detail fragments are rendered once per
change and shared by every viewer of that workflow in this replica (``Watch.render``).
"""

from __future__ import annotations

import asyncio
import html
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery, Parameter, QueryParameter
from litestar.response import (
    Redirect,
    Response,
    ServerSentEvent,
    ServerSentEventMessage,
    Template,
)

from app.access.policy import pool_resource
from app.audit.middleware import note_of
from app.auth.service import Principal
from app.bounds import refuse_nul, text_query
from app.db import Hub
from app.errors import Forbidden, Invalid, NotFound
from app.live.events import PING_SECONDS, SharedMessage
from app.live.watch import WatchRegistry
from app.pools.service import PoolService
from app.spec.errors import SpecIssue
from app.templating import render_block
from app.templating import template_environment as templating_env
from app.web import flash, page
from app.workflows.dag import MAX_EXPAND, render_dag
from app.workflows.filters import FILTER, WorkflowFilter
from app.workflows.service import WorkflowService, check_sort
from app.workflows.states import PRIORITIES, Status, WorkflowStatus

__all__ = ("WorkflowViews",)

WORKFLOW_ID = text_query(80)
MAX_BULK_CANCEL = 500
MAX_REASON = 2000  # a cancel reason, as the API's (app/bounds.py Reason): longer is refused
EXPAND = Parameter(default=None, max_items=1000)

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
MultiForm = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]
UploadForm = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)]
# ?page= of the task table; a bound keeps OFFSET in range (no workflow has that many pages).
TaskPage = Annotated[int, QueryParameter(name="page", ge=1, le=100_000)]
_LIST_COALESCE = 0.25
_TICK = 10.0  # while rows run, their durations are refreshed this often
_SORT_LABELS = [
    ("submitted", "newest first"),
    ("started", "recently started"),
    ("duration", "longest first"),
]


def _update(current: dict[str, Any], before: dict[str, Any] | None) -> SharedMessage:
    """The blocks that changed since ``before`` (all of them without it) as one message.

    The actions change only when the workflow ends: sending them on every change would wipe
    a cancel reason someone is typing. New events are prepended; a full message replaces the
    whole timeline.
    """
    parts = []
    for name, target in (("header", "wf-header"), ("dag", "wf-dag"), ("tasks", "wf-tasks")):
        if before is None or before[name] != current[name]:
            parts.append(f'<div hx-swap-oob="innerHTML:#{target}">{current[name]}</div>')
    if before is None:
        items = "".join(html_ for _, html_ in current["events"])
        parts.append(f'<div hx-swap-oob="innerHTML:#timeline">{items}</div>')
    else:
        newest = max((event_id for event_id, _ in before["events"]), default=0)
        fresh = "".join(html_ for event_id, html_ in current["events"] if event_id > newest)
        if fresh:
            parts.append(f'<div hx-swap-oob="afterbegin:#timeline">{fresh}</div>')
    if current["terminal"] and (before is None or not before["terminal"]):
        parts.append(f'<div hx-swap-oob="innerHTML:#wf-actions">{current["actions"]}</div>')
    return SharedMessage(event="update", data="".join(parts))


def _one_line(fragment: str) -> str:
    # SSE splits data on newlines and the browser rejoins them with "\n": keep it one line.
    return fragment.replace("\r", "").replace("\n", " ")


def _banner(count: int, query: str) -> str:
    if not count:
        return '<div id="new-banner" hx-swap-oob="true"></div>'
    plural = "s" if count != 1 else ""
    return (
        f'<div id="new-banner" class="flash info" hx-swap-oob="true" role="status">'
        f'<a href="/workflows?{html.escape(query)}">{count} new workflow{plural}: show</a></div>'
    )


# A large workflow's page stays small: one page of its task table, the latest events, the start
# of its spec, and a bounded graph (app/workflows/dag.py).
TASK_PAGE_SIZE = 200
TIMELINE_SIZE = 100  # latest events on the page; earlier ones at /workflows/{id}/events
SPEC_SHOWN = 20_000  # characters of each spec shown inline
_MAX_EXPAND_KEY = 300
_STATUS_ORDER = {s.value: i for i, s in enumerate(Status)}


def _table_view(expand: list[str] | None, status: str | None) -> tuple[frozenset[str], str | None]:
    """The graph's open nodes and the task table's status filter, refused when unbounded."""
    keys = frozenset(expand or [])
    status = status or None  # an empty filter (a cleared form field) is no filter
    if len(keys) > MAX_EXPAND or any(len(k) > _MAX_EXPAND_KEY for k in keys):
        raise Invalid(
            f"at most {MAX_EXPAND} graph nodes can be expanded at once",
            [SpecIssue("expand", None, f"pass at most {MAX_EXPAND} expand values")],
        )
    if status is not None and status not in _STATUS_ORDER:
        raise Invalid(
            f"status {status[:40]!r} is not a task status",
            [SpecIssue("status", None, f"use one of {', '.join(_STATUS_ORDER)}")],
        )
    return keys, status


def _detail_query(expand: frozenset[str], status: str | None, number: int = 1) -> str:
    pairs = [("expand", k) for k in sorted(expand)]
    if status:
        pairs.append(("status", status))
    if number > 1:
        pairs.append(("page", str(number)))
    return urlencode(pairs)


def _snapshot_rows(
    wf: dict[str, Any], number: int, status: str | None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Page ``number`` of the snapshot's tasks (in group order, leads first) and the totals
    per status, as ``WorkflowService.task_rows`` reads them from the database. Only the
    page's rows are built; the rest are counted."""
    counts: Counter[str] = Counter()
    matched = 0
    start = (number - 1) * TASK_PAGE_SIZE
    rows: list[dict[str, Any]] = []
    for g in wf.get("groups", []):
        size = len(g["tasks"])
        for t in g["tasks"]:
            counts[t["status"]] += 1
            if status is not None and t["status"] != status:
                continue
            if start <= matched < start + TASK_PAGE_SIZE:
                rows.append({"group": g["name"], "task": t, "lead_shown": t["lead"] and size > 1})
            matched += 1
    return rows, dict(counts)


def _pages(counts: dict[str, int], status: str | None) -> int:
    matched = counts.get(status, 0) if status else sum(counts.values())
    return max(1, -(-matched // TASK_PAGE_SIZE))


def _task_page(
    workflow_id: str,
    rows: list[dict[str, Any]],
    counts: dict[str, int],
    number: int,
    status: str | None,
    expand: frozenset[str],
) -> dict[str, Any]:
    """The task table's page ``number``: its rows, totals per status, and the links to the
    other pages and filters (plain links: they work without JavaScript and under hx-boost).

    Offset paging in a fixed order (group position, leads first, name): the order does not
    depend on status, so a task stays on its page while the workflow runs.
    """
    pages = _pages(counts, status)
    start = (number - 1) * TASK_PAGE_SIZE
    base = f"/workflows/{workflow_id}"

    def link(query: str) -> str:
        return f"{base}{'?' + query if query else ''}#tasks"

    return {
        "rows": rows,
        "page": number,
        "pages": pages,
        "total": counts.get(status, 0) if status else sum(counts.values()),
        "all_total": sum(counts.values()),
        "first": start + 1 if rows else 0,
        "last": start + len(rows),
        "status": status,
        "counts": sorted(counts.items(), key=lambda kv: _STATUS_ORDER.get(kv[0], 99)),
        "links": {
            "first": link(_detail_query(expand, status, 1)) if number > 1 else None,
            "prev": link(_detail_query(expand, status, number - 1)) if number > 1 else None,
            "next": link(_detail_query(expand, status, number + 1)) if number < pages else None,
            "last": link(_detail_query(expand, status, pages)) if number < pages else None,
            "by_status": {s: link(_detail_query(expand, s)) for s in counts},
            "all": link(_detail_query(expand, None)),
        },
    }


def _earlier_events(workflow_id: str, timeline: list[dict[str, Any]]) -> str | None:
    if len(timeline) <= TIMELINE_SIZE:
        return None
    return f"/workflows/{workflow_id}/events?before={timeline[TIMELINE_SIZE - 1]['id']}"


class WorkflowViews(Controller):
    include_in_schema = False

    @get("/")
    async def home(self) -> Redirect:
        return Redirect(path="/workflows")

    @get("/workflows", dependencies=FILTER)
    async def list_page(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        filters: NamedDependency[WorkflowFilter],
        sort: str = text_query(16, default="submitted"),
        cursor: str | None = text_query(500, default=None),
    ) -> Template:
        listing = await workflows.search(principal, filters, sort=sort, cursor=cursor)
        counts = await workflows.status_counts(principal, filters)
        shown = filters.query()
        query = urlencode({**shown, "sort": sort})
        newest = max((w["submitted_at"] for w in listing["items"]), default=None)
        since = newest.isoformat() if newest else ""
        return page(
            request,
            "workflows/list.html",
            items=listing["items"],
            next_cursor=listing["next_cursor"],
            counts=counts,
            filters=shown,
            sort=sort,
            sorts=_SORT_LABELS,
            query=query,
            live_query=urlencode({**shown, "sort": sort, "since": since}),
            statuses=[s.value for s in WorkflowStatus],
            pools=await pools.accessible(principal, "workflow:List"),
            live=cursor is None,
        )

    @get("/workflows/live", dependencies=FILTER)
    async def list_live(
        self,
        workflows: NamedDependency[WorkflowService],
        hub: NamedDependency[Hub],
        principal: NamedDependency[Principal],
        filters: NamedDependency[WorkflowFilter],
        sort: str = text_query(16, default="submitted"),
        since: str | None = text_query(64, default=None),
    ) -> ServerSentEvent:
        check_sort(sort)  # a refusal once the stream has started could only break it
        shown = filters.query()
        try:
            newest = datetime.fromisoformat(since) if since else None
            if newest is not None and newest.tzinfo is None:
                # Compared with aware times below: a naive one ended the stream (a review).
                newest = newest.replace(tzinfo=UTC)
        except ValueError:
            newest = None
        query = urlencode({**shown, "sort": sort})
        env = templating_env()
        cells: Any = env.globals["wf_cells"]
        submitted: Any = env.globals["wf_submitted"]

        def cells_of(w: dict[str, Any], oob: bool) -> str:
            return str(cells(w, oob=oob)) + str(submitted(w, oob=oob))

        counts_of: Any = env.globals["status_counts"]

        async def updates() -> AsyncIterator[ServerSentEventMessage]:
            first = await workflows.search(principal, filters, sort=sort)
            listed = {w["id"] for w in first["items"]}
            sent = {w["id"]: str(cells_of(w, oob=True)) for w in first["items"]}
            sent_counts = ""
            sent_banner = ""
            with hub.subscribe("wfs") as sub:
                while True:
                    running = any(not w["terminal"] for w in first["items"])
                    hint = await sub.get(timeout=_TICK if running else PING_SECONDS)
                    if hint is None and not running:
                        yield ServerSentEventMessage(comment="ping", data=None)
                        continue
                    await asyncio.sleep(_LIST_COALESCE)
                    sub.drain()
                    first = await workflows.search(principal, filters, sort=sort)
                    parts = []
                    for w in first["items"]:
                        if w["id"] in listed:
                            html_ = str(cells_of(w, oob=True))
                            if sent.get(w["id"]) != html_:
                                sent[w["id"]] = html_
                                parts.append(html_)
                    fresh = [
                        w for w in first["items"]
                        if w["id"] not in listed and (newest is None or w["submitted_at"] > newest)
                    ]  # fmt: skip
                    banner = _banner(len(fresh), query)
                    if banner != sent_banner:
                        sent_banner = banner
                        parts.append(banner)
                    counts = await workflows.status_counts(principal, filters)
                    counts_html = str(counts_of(counts, shown, oob=True))
                    if counts_html != sent_counts:
                        sent_counts = counts_html
                        parts.append(counts_html)
                    if parts:
                        yield ServerSentEventMessage(event="rows", data=_one_line("".join(parts)))

        return ServerSentEvent(updates())

    @post("/workflows/cancel", status_code=303)
    async def bulk_cancel(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        data: MultiForm,
    ) -> Redirect:
        """Cancel the selected workflows: the ones you may cancel are, the others are named."""
        ids = data.get("ids") or []
        ids = [ids] if isinstance(ids, str) else list(ids)
        refuse_nul({"ids": 80 * 1000, "reason": MAX_REASON}, ids=" ".join(map(str, ids)),
                   reason=data.get("reason"), back=data.get("back"))  # fmt: skip
        reason = str(data.get("reason") or "").strip()
        if len(ids) > MAX_BULK_CANCEL:  # a page shows at most 500 rows; more is no one's click
            raise Invalid(
                f"select at most {MAX_BULK_CANCEL} workflows to cancel at once, not {len(ids)}",
                [SpecIssue("ids", None, f"at most {MAX_BULK_CANCEL}")],
            )
        note_of(request).target = " ".join(map(str, ids))  # one event for the form, cut to fit
        done, refused = [], []
        for workflow_id in dict.fromkeys(ids):
            try:
                await workflows.cancel(principal, workflow_id, reason, force=False)
                done.append(workflow_id)
            except (Forbidden, NotFound) as exc:
                refused.append(f"{workflow_id} ({exc.detail})")
        if done:
            flash(request, f"Canceled {len(done)}: {', '.join(done)}.", "good")
        if refused:
            flash(request, f"Not canceled: {'; '.join(refused)}.", "bad")
        if not ids:
            flash(request, "Select the workflows to cancel first.", "bad")
        back = str(data.get("back") or "/workflows")
        return Redirect(
            path=back if back.startswith("/workflows") else "/workflows", status_code=303
        )

    @get("/workflows/{workflow_id:str}")
    async def detail_page(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
        expand: list[str] | None = EXPAND,
        task_page: TaskPage = 1,
        status: FromQuery[str | None] = None,
    ) -> Template:
        keys, status = _table_view(expand, status)
        # Narrow reads, not the full snapshot: a 10,000-task workflow's page reads the graph
        # as names and statuses (which also give the totals), one page of task rows, the
        # latest events and the start of the spec.
        wf, spec = await workflows.page_header(principal, workflow_id, SPEC_SHOWN)
        graph = await workflows.graph(workflow_id)
        counts = dict(Counter(t["status"] for g in graph["groups"] for t in g["tasks"]))
        wf["tasks_total"] = sum(counts.values())
        wf["tasks_completed"] = counts.get("COMPLETED", 0)
        task_page = min(task_page, _pages(counts, status))  # past the end: the last page
        offset = (task_page - 1) * TASK_PAGE_SIZE
        rows = await workflows.task_rows(workflow_id, status, offset, TASK_PAGE_SIZE)
        tp = _task_page(workflow_id, rows, counts, task_page, status, keys)
        timeline = await workflows.events_page(workflow_id, None, TIMELINE_SIZE + 1)
        return page(
            request,
            "workflows/detail.html",
            wf=wf,
            spec=spec,
            spec_shown=SPEC_SHOWN,
            tp=tp,
            timeline=timeline[:TIMELINE_SIZE],
            timeline_size=TIMELINE_SIZE,
            earlier_events=_earlier_events(workflow_id, timeline),
            dag_svg=render_dag(graph, keys, f"/workflows/{workflow_id}"),
            live_query=_detail_query(keys, status, tp["page"]),
            # Only who may cancel it is offered the form (the server checks again).
            may_cancel=principal.can(
                "workflow:Cancel", pool_resource(wf["pool"]), own=wf["user"] == principal.name
            ),
        )

    @get("/workflows/{workflow_id:str}/events")
    async def events_page(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
        before: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None,
    ) -> Template:
        """The workflow's events, newest first, ``TIMELINE_SIZE`` at a time."""
        wf = await workflows.get(principal, workflow_id)
        events = await workflows.events_page(workflow_id, before, TIMELINE_SIZE + 1)
        earlier = None
        if len(events) > TIMELINE_SIZE:
            events = events[:TIMELINE_SIZE]
            earlier = f"/workflows/{workflow_id}/events?before={events[-1]['id']}"
        return page(
            request, "workflows/events.html", wf=wf, events=events, before=before, earlier=earlier
        )

    @get("/workflows/{workflow_id:str}/spec.txt")
    async def spec_text(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
        which: str = Parameter(default="spec", max_length=20),
    ) -> Response[str]:
        """The whole spec as plain text (the page shows only its start)."""
        if which not in ("spec", "rendered_spec"):
            raise Invalid(
                "which must be spec or rendered_spec",
                [SpecIssue("which", None, "use spec or rendered_spec")],
            )
        spec = await workflows.spec_of(principal, workflow_id)
        return Response(spec[which], media_type="text/plain; charset=utf-8")

    @get("/workflows/{workflow_id:str}/live")
    async def detail_live(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        watches: NamedDependency[WatchRegistry],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
        expand: list[str] | None = EXPAND,
        task_page: TaskPage = 1,
        status: FromQuery[str | None] = None,
    ) -> ServerSentEvent:
        """One shared message per change: out-of-band swaps of the blocks that changed.

        Viewers of the same view (graph nodes open, page and filter of the task table) share
        one render per change; each render holds only that page of tasks and a bounded graph.
        """
        await workflows.check_visible(principal, workflow_id)
        keys, status = _table_view(expand, status)
        view_key = f"{','.join(sorted(keys))}|{status or ''}|{task_page}"
        base = f"/workflows/{workflow_id}"

        def blocks(wf: dict[str, Any]) -> dict[str, Any]:
            number = min(task_page, _pages(_snapshot_rows(wf, 1, None)[1], status))
            rows, counts = _snapshot_rows(wf, number, status)
            tp = _task_page(workflow_id, rows, counts, number, status, keys)
            out: dict[str, Any] = {
                "header": _one_line(render_block("workflows/detail.html", "header", {"wf": wf})),
                "tasks": _one_line(
                    render_block("workflows/detail.html", "tasks", {"wf": wf, "tp": tp})
                ),
            }
            out["dag"] = _one_line(render_dag(wf, keys, base))
            out["events"] = [
                (e["id"], _one_line(render_block("workflows/detail.html", "event", {"e": e})))
                for e in wf.get("timeline", [])[:TIMELINE_SIZE]
            ]
            out["terminal"] = bool(wf.get("terminal"))
            if out["terminal"]:
                out["actions"] = _one_line(
                    render_block("workflows/detail.html", "actions", {"wf": wf})
                )
            return out

        async def message(watch: Any, last_version: int) -> SharedMessage:
            current = await watch.render(f"blocks:{view_key}", blocks)
            before = watch.previous(f"blocks:{view_key}")
            if before is not None and before[0] == last_version:
                return await watch.render(
                    f"delta:{view_key}", lambda _: _update(current, before[1])
                )
            return await watch.render(f"full:{view_key}", lambda _: _update(current, None))

        async def fragments() -> AsyncIterator[ServerSentEventMessage]:
            async with watches.watch(workflow_id) as watch:
                version = -1
                while True:
                    new_version = await watch.next_version(version, PING_SECONDS)
                    if new_version == version:
                        yield ServerSentEventMessage(comment="ping", data=None)
                        continue
                    if watch.snapshot is None:
                        return
                    update = await message(watch, version)
                    version = new_version
                    yield update
                    if watch.snapshot.get("terminal"):
                        yield ServerSentEventMessage(event="end", data="end")
                        return

        return ServerSentEvent(fragments())

    @post("/workflows/{workflow_id:str}/cancel", status_code=303)
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        data: Form,
        workflow_id: str = WORKFLOW_ID,
    ) -> Redirect:
        refuse_nul({"reason": MAX_REASON}, reason=data.get("reason"))
        await workflows.cancel(
            principal,
            workflow_id,
            (data.get("reason") or "").strip(),
            data.get("mode") == "force" or data.get("force") == "on",
        )
        flash(request, f"{workflow_id} was canceled.", "good")
        return Redirect(path=f"/workflows/{workflow_id}", status_code=303)

    @post("/workflows/{workflow_id:str}/resubmit", status_code=303)
    async def resubmit(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
    ) -> Redirect:
        result = await workflows.resubmit(principal, workflow_id)
        flash(request, f"Resubmitted {workflow_id} as {result['id']}.", "good")
        return Redirect(path=f"/workflows/{result['id']}", status_code=303)

    @get("/submit")
    async def submit_page(
        self,
        request: Request[Any, Any, Any],
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
    ) -> Template:
        usable = await pools.accessible(principal, "workflow:Create")
        # "": the spec's own `pool:` (else default), as the API does; a pool chosen here wins.
        form = {"pool": "",
                "priority": "NORMAL", "spec": "", "set": ""}  # fmt: skip
        return _submit_page(request, usable, form, [], [], None)

    @post("/submit", status_code=303)
    async def submit(
        self,
        request: Request[Any, Any, Any],
        workflows: NamedDependency[WorkflowService],
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        data: UploadForm,
    ) -> Template | Redirect:
        usable = await pools.accessible(principal, "workflow:Create")
        spec = str(data.get("spec") or "")
        upload = data.get("file")
        if isinstance(upload, UploadFile):
            content = await upload.read()
            if content.strip():
                spec = content.decode("utf-8", errors="replace")
        variables = await _default_values(workflows, spec)
        set_values: dict[str, Any] = {}
        for name, default in variables:
            value = data.get(f"var.{name}")
            if isinstance(value, str) and value != default:
                set_values[name] = value
        for line in str(data.get("set") or "").splitlines():
            if "=" in line:
                key, _, value = line.partition("=")
                set_values[key.strip()] = value.strip()
        form = {
            "spec": spec,
            "pool": str(data.get("pool") or ""),
            "priority": str(data.get("priority") or "NORMAL"),
            "set": str(data.get("set") or ""),
        }
        shown = [(name, str(set_values.get(name, default))) for name, default in variables]
        dry_run = data.get("action") == "validate"
        try:
            refuse_nul({"pool": 64, "priority": 8, "set": 1024 * 1024}, pool=form["pool"],
                       priority=form["priority"], set=form["set"], spec=spec)  # fmt: skip
            result = await workflows.submit(
                principal,
                spec,
                pool=form["pool"] or None,
                set_values=set_values or None,
                priority=form["priority"],
                dry_run=dry_run,
            )
        except Invalid as exc:
            return _submit_page(request, usable, form, shown, exc.issues, None, exc.title, 422)
        if dry_run:
            return _submit_page(request, usable, form, shown, [], result)
        note_of(request).target = result["id"]
        flash(request, f"Submitted {result['id']}.", "good")
        return Redirect(path=f"/workflows/{result['id']}", status_code=303)


async def _default_values(service: WorkflowService, spec: str) -> list[tuple[str, str]]:
    """The spec's template variables and their defaults, as text for form fields.

    Read in a capped spec worker: an alias bomb in `default-values` must not stall the loop.
    """
    return await asyncio.to_thread(service.renderer.default_values, spec)


def _submit_page(
    request: Request[Any, Any, Any],
    pools: list[str],
    form: dict[str, str],
    variables: list[tuple[str, str]],
    errors: list[Any],
    plan: dict[str, Any] | None,
    title: str | None = None,
    status_code: int = 200,
) -> Template:
    return page(
        request,
        "workflows/submit.html",
        status_code=status_code,
        pools=pools,
        priorities=list(PRIORITIES),
        form=form,
        variables=variables,
        errors=errors,
        error_lines={e.line for e in errors if e.line},
        line_count=max(1, form.get("spec", "").count("\n") + 1),
        plan=plan,
        title=title,
    )
