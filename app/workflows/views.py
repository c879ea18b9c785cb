"""HTML pages for workflows and their live fragments over SSE.

Each live stream sends the current fragment first (a fresh snapshot on every (re)connect),
then a new fragment whenever the workflow changes. Detail fragments are rendered once per
change and shared by every viewer of that workflow in this replica (``Watch.render``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage, Template

from app.auth.middleware import principal_of
from app.errors import Invalid, NotFound
from app.live.events import PING_SECONDS
from app.templating import render_block
from app.web import flash, page
from app.workflows.dag import render_dag
from app.workflows.service import WorkflowService
from app.workflows.states import PRIORITIES, WorkflowStatus

__all__ = ("WorkflowViews",)

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
_LIST_COALESCE = 0.25


def _one_line(fragment: str) -> str:
    # SSE splits data on newlines and the browser rejoins them with "\n": keep it one line.
    return fragment.replace("\r", "").replace("\n", " ")


def _filters(status: str | None, pool: str | None, name: str | None) -> dict[str, str]:
    return {k: v for k, v in (("status", status), ("pool", pool), ("name", name)) if v}


class WorkflowViews(Controller):
    include_in_schema = False

    @get("/")
    async def home(self) -> Redirect:
        return Redirect(path="/workflows")

    @get("/workflows")
    async def list_page(
        self,
        request: Request[Any, Any, Any],
        status: str | None = None,
        pool: str | None = None,
        name: str | None = None,
        cursor: str | None = None,
    ) -> Template:
        service: WorkflowService = request.app.state.workflows
        listing = await service.search(
            principal_of(request), status=status, pool=pool, name=name, cursor=cursor
        )
        filters = _filters(status, pool, name)
        return page(
            request,
            "workflows/list.html",
            items=listing["items"],
            next_cursor=listing["next_cursor"],
            filters=filters,
            query=urlencode(filters),
            statuses=[s.value for s in WorkflowStatus],
            live=cursor is None,
        )

    @get("/workflows/live")
    async def list_live(
        self,
        request: Request[Any, Any, Any],
        status: str | None = None,
        pool: str | None = None,
        name: str | None = None,
    ) -> ServerSentEvent:
        service: WorkflowService = request.app.state.workflows
        principal = principal_of(request)
        hub = request.app.state.hub

        async def rows() -> AsyncIterator[ServerSentEventMessage]:
            with hub.subscribe("wfs") as sub:
                while True:
                    listing = await service.search(principal, status=status, pool=pool, name=name)
                    fragment = render_block(
                        "workflows/list.html", "rows", {"items": listing["items"]}
                    )
                    yield ServerSentEventMessage(event="rows", data=_one_line(fragment))
                    while await sub.get(timeout=PING_SECONDS) is None:
                        yield ServerSentEventMessage(comment="ping", data=None)
                    await asyncio.sleep(_LIST_COALESCE)
                    sub.drain()

        return ServerSentEvent(rows())

    @get("/workflows/{workflow_id:str}")
    async def detail_page(
        self, request: Request[Any, Any, Any], workflow_id: str, expand: list[str] | None = None
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
        self, request: Request[Any, Any, Any], workflow_id: str, expand: list[str] | None = None
    ) -> ServerSentEvent:
        service: WorkflowService = request.app.state.workflows
        await service.get(principal_of(request), workflow_id, with_groups=False)  # visibility
        watches = request.app.state.watches
        keys = frozenset(expand or [])
        base = f"/workflows/{workflow_id}"

        def fragment(block: str) -> Callable[[dict[str, Any]], str]:
            if block == "dag":
                return lambda wf: _one_line(render_dag(wf, keys, base))
            return lambda wf: _one_line(render_block("workflows/detail.html", block, {"wf": wf}))

        async def fragments() -> AsyncIterator[ServerSentEventMessage]:
            async with watches.watch(workflow_id) as watch:
                version = -1
                while True:
                    new_version = await watch.next_version(version, PING_SECONDS)
                    if new_version == version:
                        yield ServerSentEventMessage(comment="ping", data=None)
                        continue
                    version = new_version
                    if watch.snapshot is None:
                        return
                    terminal = bool(watch.snapshot.get("terminal"))
                    # The actions change only when the workflow ends; re-sending them on every
                    # change would wipe a cancel reason someone is typing.
                    blocks = ("header", "dag", "tasks", "timeline") + (
                        ("actions",) if terminal else ()
                    )
                    for block in blocks:
                        key = f"dag:{','.join(sorted(keys))}" if block == "dag" else block
                        html_ = await watch.render(key, fragment(block))
                        yield ServerSentEventMessage(event=block, data=html_)
                    if watch.snapshot.get("terminal"):
                        yield ServerSentEventMessage(event="end", data="end")
                        return

        return ServerSentEvent(fragments())

    @post("/workflows/{workflow_id:str}/cancel", status_code=303)
    async def cancel(
        self, request: Request[Any, Any, Any], workflow_id: str, data: Form
    ) -> Redirect:
        service: WorkflowService = request.app.state.workflows
        await service.cancel(
            principal_of(request),
            workflow_id,
            (data.get("reason") or "").strip()[:500],
            data.get("mode") == "force" or data.get("force") == "on",
        )
        flash(request, f"{workflow_id} was canceled.", "good")
        return Redirect(path=f"/workflows/{workflow_id}", status_code=303)

    @post("/workflows/{workflow_id:str}/resubmit", status_code=303)
    async def resubmit(self, request: Request[Any, Any, Any], workflow_id: str) -> Redirect:
        service: WorkflowService = request.app.state.workflows
        result = await service.resubmit(principal_of(request), workflow_id)
        flash(request, f"Resubmitted {workflow_id} as {result['id']}.", "good")
        return Redirect(path=f"/workflows/{result['id']}", status_code=303)

    @get("/submit")
    async def submit_page(self, request: Request[Any, Any, Any]) -> Template:
        pools = await request.app.state.pools.accessible(principal_of(request))
        return page(request, "workflows/submit.html", pools=pools, priorities=list(PRIORITIES),
                    form={"pool": "default", "priority": "NORMAL", "spec": ""}, errors=[], plan=None)  # fmt: skip

    @post("/submit", status_code=303)
    async def submit(self, request: Request[Any, Any, Any], data: Form) -> Template | Redirect:
        service: WorkflowService = request.app.state.workflows
        principal = principal_of(request)
        pools = await request.app.state.pools.accessible(principal)
        set_values = {}
        for line in (data.get("set") or "").splitlines():
            if "=" in line:
                key, _, value = line.partition("=")
                set_values[key.strip()] = value.strip()
        dry_run = data.get("action") == "validate"
        try:
            result = await service.submit(
                principal,
                data.get("spec") or "",
                pool=data.get("pool") or None,
                set_values=set_values or None,
                priority=data.get("priority") or "NORMAL",
                dry_run=dry_run,
            )
        except Invalid as exc:
            return page(request, "workflows/submit.html", status_code=422, pools=pools,
                        priorities=list(PRIORITIES), form=data, errors=exc.issues, plan=None,
                        title=exc.title)  # fmt: skip
        if dry_run:
            return page(request, "workflows/submit.html", status_code=200, pools=pools,
                        priorities=list(PRIORITIES), form=data, errors=[], plan=result)  # fmt: skip
        return Redirect(path=f"/workflows/{result['id']}", status_code=303)
