"""HTML pages for workflows and their live fragments over SSE.

Each live stream sends the current fragment first (a fresh snapshot on every (re)connect),
then a new fragment whenever the workflow changes. Detail fragments are rendered once per
change and shared by every viewer of that workflow in this replica (``Watch.render``).
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage, Template

from app.auth.middleware import principal_of
from app.bounds import refuse_nul, text_query
from app.errors import Forbidden, Invalid, NotFound
from app.live.events import PING_SECONDS, SharedMessage
from app.templating import render_block
from app.templating import template_environment as templating_env
from app.web import flash, page
from app.workflows.dag import render_dag
from app.workflows.service import WorkflowService
from app.workflows.states import PRIORITIES, WorkflowStatus

__all__ = ("WorkflowViews",)

WORKFLOW_ID = text_query(80)
EXPAND = Parameter(default=None, max_items=1000)

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
MultiForm = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]
UploadForm = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)]
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


def _filters(
    status: str | None, pool: str | None, name: str | None, user: str | None
) -> dict[str, str]:
    pairs = (("status", status), ("pool", pool), ("name", name), ("user", user))
    return {k: v for k, v in pairs if v}


def _banner(count: int, query: str) -> str:
    if not count:
        return '<div id="new-banner" hx-swap-oob="true"></div>'
    plural = "s" if count != 1 else ""
    return (
        f'<div id="new-banner" class="flash info" hx-swap-oob="true" role="status">'
        f'<a href="/workflows?{html.escape(query)}">{count} new workflow{plural}: show</a></div>'
    )


class WorkflowViews(Controller):
    include_in_schema = False

    @get("/")
    async def home(self) -> Redirect:
        return Redirect(path="/workflows")

    @get("/workflows")
    async def list_page(
        self,
        request: Request[Any, Any, Any],
        status: str | None = text_query(32, default=None),
        pool: str | None = text_query(64, default=None),
        name: str | None = text_query(200, default=None),
        user: str | None = text_query(64, default=None),
        sort: str = text_query(16, default="submitted"),
        cursor: str | None = text_query(500, default=None),
    ) -> Template:
        service: WorkflowService = request.app.state.workflows
        principal = principal_of(request)
        filters = _filters(status, pool, name, user)
        listing = await service.search(
            principal, status=status, pool=pool, name=name, user=user, sort=sort, cursor=cursor
        )
        counts = await service.status_counts(principal, pool=pool, name=name, user=user)
        query = urlencode({**filters, "sort": sort})
        newest = max((w["submitted_at"] for w in listing["items"]), default=None)
        since = newest.isoformat() if newest else ""
        return page(
            request,
            "workflows/list.html",
            items=listing["items"],
            next_cursor=listing["next_cursor"],
            counts=counts,
            filters=filters,
            sort=sort,
            sorts=_SORT_LABELS,
            query=query,
            live_query=urlencode({**filters, "sort": sort, "since": since}),
            statuses=[s.value for s in WorkflowStatus],
            pools=await request.app.state.pools.accessible(principal),
            live=cursor is None,
        )

    @get("/workflows/live")
    async def list_live(
        self,
        request: Request[Any, Any, Any],
        status: str | None = text_query(32, default=None),
        pool: str | None = text_query(64, default=None),
        name: str | None = text_query(200, default=None),
        user: str | None = text_query(64, default=None),
        sort: str = text_query(16, default="submitted"),
        since: str | None = text_query(64, default=None),
    ) -> ServerSentEvent:
        service: WorkflowService = request.app.state.workflows
        principal = principal_of(request)
        filters = _filters(status, pool, name, user)
        hub = request.app.state.hub
        try:
            newest = datetime.fromisoformat(since) if since else None
        except ValueError:
            newest = None
        query = urlencode({**filters, "sort": sort})
        env = templating_env()
        cells_of: Any = env.globals["wf_cells"]
        counts_of: Any = env.globals["status_counts"]

        async def updates() -> AsyncIterator[ServerSentEventMessage]:
            first = await service.search(
                principal, status=status, pool=pool, name=name, user=user, sort=sort
            )
            shown = {w["id"] for w in first["items"]}
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
                    first = await service.search(
                        principal, status=status, pool=pool, name=name, user=user, sort=sort
                    )
                    parts = []
                    for w in first["items"]:
                        if w["id"] in shown:
                            html_ = str(cells_of(w, oob=True))
                            if sent.get(w["id"]) != html_:
                                sent[w["id"]] = html_
                                parts.append(html_)
                    fresh = [
                        w for w in first["items"]
                        if w["id"] not in shown and (newest is None or w["submitted_at"] > newest)
                    ]  # fmt: skip
                    banner = _banner(len(fresh), query)
                    if banner != sent_banner:
                        sent_banner = banner
                        parts.append(banner)
                    counts = await service.status_counts(principal, pool=pool, name=name, user=user)
                    counts_html = str(counts_of(counts, filters, oob=True))
                    if counts_html != sent_counts:
                        sent_counts = counts_html
                        parts.append(counts_html)
                    if parts:
                        yield ServerSentEventMessage(event="rows", data=_one_line("".join(parts)))

        return ServerSentEvent(updates())

    @post("/workflows/cancel", status_code=303)
    async def bulk_cancel(self, request: Request[Any, Any, Any], data: MultiForm) -> Redirect:
        """Cancel the selected workflows: the ones you may cancel are, the others are named."""
        service: WorkflowService = request.app.state.workflows
        principal = principal_of(request)
        ids = data.get("ids") or []
        ids = [ids] if isinstance(ids, str) else list(ids)
        refuse_nul({"ids": 80 * 1000, "reason": 4000}, ids=" ".join(map(str, ids)),
                   reason=data.get("reason"), back=data.get("back"))  # fmt: skip
        reason = str(data.get("reason") or "").strip()[:500]
        done, refused = [], []
        for workflow_id in ids:
            try:
                await service.cancel(principal, workflow_id, reason, force=False)
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
        workflow_id: str = WORKFLOW_ID,
        expand: list[str] | None = EXPAND,
    ) -> Template:
        service: WorkflowService = request.app.state.workflows
        principal = principal_of(request)
        spec = await service.spec_of(principal, workflow_id)  # also checks visibility
        wf = await service.snapshot(workflow_id)
        if wf is None:
            raise NotFound(f"workflow '{workflow_id}' does not exist")
        keys = frozenset(expand or [])
        return page(
            request,
            "workflows/detail.html",
            wf=wf,
            spec=spec,
            dag_svg=render_dag(wf, keys, f"/workflows/{workflow_id}"),
            expand_query=urlencode([("expand", k) for k in sorted(keys)]),
        )

    @get("/workflows/{workflow_id:str}/live")
    async def detail_live(
        self,
        request: Request[Any, Any, Any],
        workflow_id: str = WORKFLOW_ID,
        expand: list[str] | None = EXPAND,
    ) -> ServerSentEvent:
        """One shared message per change: out-of-band swaps of the blocks that changed."""
        service: WorkflowService = request.app.state.workflows
        await service.get(principal_of(request), workflow_id, with_groups=False)  # visibility
        watches = request.app.state.watches
        keys = frozenset(expand or [])
        expand_key = ",".join(sorted(keys))
        base = f"/workflows/{workflow_id}"

        def blocks(wf: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {
                name: _one_line(render_block("workflows/detail.html", name, {"wf": wf}))
                for name in ("header", "tasks")
            }
            out["dag"] = _one_line(render_dag(wf, keys, base))
            out["events"] = [
                (e["id"], _one_line(render_block("workflows/detail.html", "event", {"e": e})))
                for e in wf.get("timeline", [])
            ]
            out["terminal"] = bool(wf.get("terminal"))
            if out["terminal"]:
                out["actions"] = _one_line(
                    render_block("workflows/detail.html", "actions", {"wf": wf})
                )
            return out

        async def message(watch: Any, last_version: int) -> SharedMessage:
            current = await watch.render(f"blocks:{expand_key}", blocks)
            before = watch.previous(f"blocks:{expand_key}")
            if before is not None and before[0] == last_version:
                return await watch.render(
                    f"delta:{expand_key}", lambda _: _update(current, before[1])
                )
            return await watch.render(f"full:{expand_key}", lambda _: _update(current, None))

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
        self, request: Request[Any, Any, Any], data: Form, workflow_id: str = WORKFLOW_ID
    ) -> Redirect:
        service: WorkflowService = request.app.state.workflows
        refuse_nul({"reason": 4000}, reason=data.get("reason"))
        await service.cancel(
            principal_of(request),
            workflow_id,
            (data.get("reason") or "").strip()[:500],
            data.get("mode") == "force" or data.get("force") == "on",
        )
        flash(request, f"{workflow_id} was canceled.", "good")
        return Redirect(path=f"/workflows/{workflow_id}", status_code=303)

    @post("/workflows/{workflow_id:str}/resubmit", status_code=303)
    async def resubmit(
        self, request: Request[Any, Any, Any], workflow_id: str = WORKFLOW_ID
    ) -> Redirect:
        service: WorkflowService = request.app.state.workflows
        result = await service.resubmit(principal_of(request), workflow_id)
        flash(request, f"Resubmitted {workflow_id} as {result['id']}.", "good")
        return Redirect(path=f"/workflows/{result['id']}", status_code=303)

    @get("/submit")
    async def submit_page(self, request: Request[Any, Any, Any]) -> Template:
        pools = await request.app.state.pools.accessible(principal_of(request))
        form = {"pool": "default" if "default" in pools else (pools[0] if pools else ""),
                "priority": "NORMAL", "spec": "", "set": ""}  # fmt: skip
        return _submit_page(request, pools, form, [], [], None)

    @post("/submit", status_code=303)
    async def submit(
        self, request: Request[Any, Any, Any], data: UploadForm
    ) -> Template | Redirect:
        service: WorkflowService = request.app.state.workflows
        principal = principal_of(request)
        pools = await request.app.state.pools.accessible(principal)
        spec = str(data.get("spec") or "")
        upload = data.get("file")
        if isinstance(upload, UploadFile):
            content = await upload.read()
            if content.strip():
                spec = content.decode("utf-8", errors="replace")
        variables = await _default_values(service, spec)
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
            result = await service.submit(
                principal,
                spec,
                pool=form["pool"] or None,
                set_values=set_values or None,
                priority=form["priority"],
                dry_run=dry_run,
            )
        except Invalid as exc:
            return _submit_page(request, pools, form, shown, exc.issues, None, exc.title, 422)
        if dry_run:
            return _submit_page(request, pools, form, shown, [], result)
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
