"""The log viewer: one attempt, or every task of a workflow merged, live or finished.

The same URL serves a running and a finished log. It opens at the tail (the last 512 KiB), and
loads earlier parts on demand; ``?line=N`` opens around line N (deep links ``#LN``); ``?q=``
filters by text, or by regular expression with ``re=1``. A running log follows over SSE from
exactly where the page stopped. Every byte is HTML-escaped; ANSI colours become spans.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import escape
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream, Template

from app.auth.middleware import principal_of
from app.auth.service import Principal
from app.bounds import count_query, int8_query, text_query
from app.limits import StreamSlots
from app.logs.lines import render_lines
from app.logs.service import LogService
from app.logs.windows import Resume, Window, Windows, compile_filter
from app.templating import render_block
from app.web import page

__all__ = ("LogViews",)

# Bounds on the viewer's parameters (they reach bigint and integer columns, and text queries).
WORKFLOW_ID = text_query(80)
TASK = text_query(64)
RETRY = count_query(default=None)
BEFORE = int8_query(default=None)
LINE = count_query(default=None)
FILTER = text_query(1000, default=None)
REGEX = text_query(8, default=None)
AT = text_query(65_536)


class _Target:
    """Which attempts a log view shows, and how to name and link them."""

    def __init__(self, workflow_id: str, attempts: list[int], names: dict[int, str] | None,
                 base: str, title: str, download: str, retry: int | None = None) -> None:  # fmt: skip
        self.workflow_id = workflow_id
        self.attempts = attempts
        self.names = names  # a task column in the merged view
        self.base = base
        self.title = title
        self.download = download
        self.retry = retry


def _one_line(fragment: str) -> str:
    return fragment.replace("\r", "").replace("\n", " ")


class _Viewer:
    """What reading a log takes: the attempts' rows, their windows of lines, search slots."""

    __slots__ = ("logs", "searches", "windows")

    def __init__(self, logs: LogService, windows: Windows, searches: StreamSlots) -> None:
        self.logs = logs
        self.windows = windows
        self.searches = searches


def _viewer(
    logs: NamedDependency[LogService],
    log_windows: NamedDependency[Windows],
    searches: NamedDependency[StreamSlots],
) -> _Viewer:
    return _Viewer(logs, log_windows, searches)


async def _task_target(
    logs: NamedDependency[LogService],
    principal: NamedDependency[Principal],
    workflow_id: str = WORKFLOW_ID,
    task: str = TASK,
    retry: int | None = RETRY,
) -> _Target:
    """One attempt of a task (404 where the caller may not see the workflow)."""
    attempt = await logs.attempt(principal, workflow_id, task, retry)
    base = f"/workflows/{workflow_id}/tasks/{task}/logs"
    return _Target(
        workflow_id,
        [attempt["id"]],
        None,
        base,
        f"{task} · retry {attempt['retry']}",
        f"/api/v1/workflows/{workflow_id}/tasks/{task}/logs?retry={attempt['retry']}&download=1",
        attempt["retry"],
    )


async def _workflow_target(
    logs: NamedDependency[LogService],
    principal: NamedDependency[Principal],
    workflow_id: str = WORKFLOW_ID,
) -> _Target:
    """Every task's latest attempt, merged."""
    attempts, names = await logs.workflow_attempts(principal, workflow_id)
    base = f"/workflows/{workflow_id}/logs"
    return _Target(workflow_id, attempts, names, base, "all tasks", f"{base}/download")


async def _render_page(
    request: Request[Any, Any, Any],
    viewer: _Viewer,
    target: _Target,
    before: int | None,
    line: int | None,
    q: str | None,
    regex: bool,
) -> Template:
    logs, windows = viewer.logs, viewer.windows
    removed = await logs.removed_notice(target.workflow_id)  # by retention: say so
    complete = await logs.all_complete(target.attempts) if target.attempts else True
    try:
        keep = compile_filter(q, regex)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    window: Window | None
    if keep is not None:
        try:
            # Each search may take its whole time budget: a user runs only a few at once.
            with viewer.searches.slot(principal_of(request).name):
                window = await windows.search(target.attempts, keep, complete)
        except ValueError as exc:  # the search ran out of time
            raise HTTPException(status_code=400, detail=str(exc)) from None
    elif line is not None:
        window = await windows.around(target.attempts, line)
        if window is None:
            window = await windows.tail(target.attempts, complete)
    elif before is not None:
        window = await windows.earlier(target.attempts, before)
        window.has_later = True
    else:
        window = await windows.tail(target.attempts, complete)
    query = [("retry", str(target.retry))] if target.retry is not None else []
    live_query = None
    if window.resume is not None and not complete and keep is None:
        live_query = urlencode([*query, ("at", window.resume.encode())])
    elif keep is not None and not complete:
        live_query = None  # a filtered view is a snapshot; follow the unfiltered log live
    return page(
        request,
        "logs/view.html",
        target=target,
        html=render_lines(window.lines, target.names)
        if removed is None
        else f'<p class="notice" id="logs-removed">{escape(removed)}</p>',
        window=window,
        complete=complete,
        live_query=live_query,
        q=q or "",
        regex=regex,
        matches=len(window.lines) if keep is not None else None,
        retry_query=urlencode(query),
    )


# A route under /tasks/{task}/ reads one attempt; the others every task of the workflow.
_TASK = {"target": Provide(_task_target), "viewer": Provide(_viewer, sync_to_thread=False)}
_WORKFLOW = {"target": Provide(_workflow_target), "viewer": Provide(_viewer, sync_to_thread=False)}


class LogViews(Controller):
    include_in_schema = False

    @get("/workflows/{workflow_id:str}/tasks/{task:str}/logs", dependencies=_TASK)
    async def task_log(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[_Viewer],
        target: NamedDependency[_Target],
        before: int | None = BEFORE,
        line: int | None = LINE,
        q: str | None = FILTER,
        re: str | None = REGEX,
    ) -> Template:
        return await _render_page(request, viewer, target, before, line, q, re == "1")

    @get("/workflows/{workflow_id:str}/logs", dependencies=_WORKFLOW)
    async def workflow_log(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[_Viewer],
        target: NamedDependency[_Target],
        before: int | None = BEFORE,
        line: int | None = LINE,
        q: str | None = FILTER,
        re: str | None = REGEX,
    ) -> Template:
        return await _render_page(request, viewer, target, before, line, q, re == "1")

    @get("/workflows/{workflow_id:str}/logs/download", dependencies=_WORKFLOW)
    async def workflow_download(
        self, log_windows: NamedDependency[Windows], target: NamedDependency[_Target]
    ) -> Stream:
        assert target.names is not None
        return Stream(
            log_windows.text(target.attempts, target.names),
            media_type="text/plain; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{target.workflow_id}.log"'},
        )

    @get("/workflows/{workflow_id:str}/tasks/{task:str}/logs/earlier", dependencies=_TASK)
    async def task_earlier(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[_Viewer],
        target: NamedDependency[_Target],
        before: int = int8_query(),
    ) -> Template | Response[str]:
        return await _earlier(request, viewer, target, before)

    @get("/workflows/{workflow_id:str}/logs/earlier", dependencies=_WORKFLOW)
    async def workflow_earlier(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[_Viewer],
        target: NamedDependency[_Target],
        before: int = int8_query(),
    ) -> Template | Response[str]:
        return await _earlier(request, viewer, target, before)

    @get("/workflows/{workflow_id:str}/tasks/{task:str}/logs/live", dependencies=_TASK)
    async def task_live(
        self, viewer: NamedDependency[_Viewer], target: NamedDependency[_Target], at: str = AT
    ) -> ServerSentEvent:
        return _live(viewer, target, at)

    @get("/workflows/{workflow_id:str}/logs/live", dependencies=_WORKFLOW)
    async def workflow_live(
        self, viewer: NamedDependency[_Viewer], target: NamedDependency[_Target], at: str = AT
    ) -> ServerSentEvent:
        return _live(viewer, target, at)


async def _earlier(
    request: Request[Any, Any, Any], viewer: _Viewer, target: _Target, before: int
) -> Template | Response[str]:
    """The part before chunk ``before``: a fragment for htmx, a whole page otherwise."""
    if "hx-request" not in request.headers:
        return await _render_page(request, viewer, target, before, None, None, False)
    window = await viewer.windows.earlier(target.attempts, before)
    context = {
        "target": target,
        "html": render_lines(window.lines, target.names),
        "window": window,
        "retry_query": urlencode(
            [("retry", str(target.retry))] if target.retry is not None else []
        ),
    }
    return Response(render_block("logs/view.html", "earlier", context), media_type=MediaType.HTML)


def _live(viewer: _Viewer, target: _Target, at: str) -> ServerSentEvent:
    logs = viewer.logs
    try:
        resume = Resume.decode(at)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    topics = [f"log:{a}" for a in target.attempts] + [f"wf:{target.workflow_id}"]

    async def complete() -> bool:
        return await logs.all_complete(target.attempts)

    async def lines() -> AsyncIterator[ServerSentEventMessage]:
        async for batch in viewer.windows.follow(target.attempts, resume, complete, topics):
            if batch:
                yield ServerSentEventMessage(
                    event="lines", data=_one_line(render_lines(batch, target.names))
                )
            else:
                yield ServerSentEventMessage(comment="ping", data=None)
        yield ServerSentEventMessage(event="end", data="end")

    return ServerSentEvent(lines())
