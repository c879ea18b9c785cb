"""JSON controllers under /api/v1/workflows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from litestar import Controller, MediaType, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, JSONBody, Parameter
from litestar.response import Response, ServerSentEvent, Stream

from app.audit.middleware import Note
from app.auth.service import Principal
from app.bounds import count_query, text_query
from app.errors import Invalid, NotFound
from app.live.events import workflow_events
from app.live.watch import WatchRegistry
from app.logs.service import LogService
from app.logs.text import once
from app.logs.windows import Windows
from app.problems import problems, text_answer
from app.spec.errors import SpecIssue
from app.workflows.filters import FILTER, WorkflowFilter
from app.workflows.schemas import (
    CancelRequest,
    DryRunPlan,
    EventOut,
    EventPage,
    SubmitRequest,
    WorkflowDetail,
    WorkflowOut,
    WorkflowPage,
    WorkflowSpecOut,
)
from app.workflows.service import WorkflowService

__all__ = ("WorkflowController",)

# A workflow id (workflow.id is varchar(80)) and a task name (varchar(64)) in a path.
WORKFLOW_ID = text_query(80, description="A workflow id")
TASK = text_query(64, description="A task name")


class SharedReads:
    """Single flight: callers asking for the same key while a build is running get its
    result instead of building again; nothing is kept once it is done, so a read that starts
    after a change reflects it (or joins a build at most one build's time older)."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[bytes]] = {}

    async def get(self, key: str, build: Callable[[], Awaitable[bytes]]) -> bytes:
        future = self._running.get(key)
        if future is None:
            future = asyncio.ensure_future(build())
            self._running[key] = future
            future.add_done_callback(lambda _: self._running.pop(key, None))
        # Shielded: one reader going away does not cancel the build for the others.
        return await asyncio.shield(future)


_shared_reads = SharedReads()


async def _detail_json(service: WorkflowService, workflow_id: str) -> bytes:
    body = await service.detail_json(workflow_id)
    if body is None:
        raise NotFound(f"workflow '{workflow_id}' does not exist")
    return body


class WorkflowController(Controller):
    path = "/api/v1/workflows"
    tags = ["workflows"]

    @post(
        "/",
        status_code=201,
        summary="Submit a workflow (or validate it with dry_run)",
        responses={
            200: ResponseSpec(
                DryRunPlan,
                description="dry_run: the rendered plan; nothing is stored",
                generate_examples=False,
            ),
            **problems(400, 403, 413, 422),
        },
    )
    async def submit(
        self,
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        note: NamedDependency[Note],
        data: JSONBody[SubmitRequest],
    ) -> Response[WorkflowOut]:
        result = await workflows.submit(
            principal,
            data.spec,
            pool=data.pool,
            set_values=data.set_values,
            priority=data.priority,
            dry_run=data.dry_run,
            encoded=True,
        )
        if data.dry_run:
            # The plan of 10,000 tasks is some 4 MB of JSON, encoded in threads: its groups
            # by the service, a group at a time, and the envelope here.
            body = await asyncio.to_thread(_encode_dry_run, result)
            return Response(body, status_code=200, media_type=MediaType.JSON)  # type: ignore[arg-type]
        note.target = result["id"]
        return Response(
            msgspec.convert(result, WorkflowOut, from_attributes=False), status_code=201
        )

    @get(
        "/",
        dependencies=FILTER,
        summary="List workflows, newest first (keyset pagination)",
        responses=problems(422),
    )
    async def list_workflows(
        self,
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        filters: NamedDependency[WorkflowFilter],
        # Checked by the service (422 naming `sort`), as the pages share it.
        sort: str = text_query(
            16, default="submitted", description="submitted, started or duration"
        ),
        limit: int = Parameter(default=50, ge=1, le=500),
        cursor: str | None = text_query(500, default=None),
    ) -> WorkflowPage:
        page = await workflows.search(principal, filters, sort=sort, limit=limit, cursor=cursor)
        return msgspec.convert(page, WorkflowPage)

    @get(
        "/{workflow_id:str}",
        summary="A workflow with its groups and tasks",
        responses=problems(404),
    )
    async def get_workflow(
        self,
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
    ) -> Response[WorkflowDetail]:
        await workflows.check_visible(principal, workflow_id)
        # Readers of one workflow at the same moment share one read, layout and encoding: 16
        # clients reading a 10,000-task workflow in a loop built it 16 times over, and held
        # /healthz for seconds (a hostile test). Visibility was checked above, per reader.
        body = await _shared_reads.get(workflow_id, lambda: _detail_json(workflows, workflow_id))
        return Response(body, media_type=MediaType.JSON)  # type: ignore[arg-type]  # encoded above

    @get(
        "/{workflow_id:str}/spec",
        summary="The spec as submitted and as rendered, and the values it was submitted with",
        responses=problems(404),
    )
    async def get_spec(
        self,
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
    ) -> WorkflowSpecOut:
        return msgspec.convert(await workflows.spec_of(principal, workflow_id), WorkflowSpecOut)

    @post(
        "/{workflow_id:str}/cancel",
        status_code=200,
        summary="Cancel a workflow",
        responses=problems(403, 404, 409),
    )
    async def cancel(
        self,
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
        data: JSONBody[CancelRequest | None] = None,
    ) -> WorkflowOut:
        body = data or CancelRequest()
        result = await workflows.cancel(principal, workflow_id, body.reason, body.force)
        return msgspec.convert(result, WorkflowOut)

    @get(
        "/{workflow_id:str}/tasks/{task:str}/logs",
        summary="A task attempt's log as text (follow=true streams until the attempt ends)",
        media_type="text/plain",
        responses={
            **text_answer(
                "The attempt's output, stdout and stderr in the order they were printed "
                "(empty before it starts)"
            ),
            **problems(404),
        },
    )
    async def task_logs(
        self,
        logs: NamedDependency[LogService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
        task: str = TASK,
        retry: int | None = count_query(default=None),
        follow: FromQuery[bool] = False,
        download: FromQuery[bool] = False,
        timestamps: bool = Parameter(
            default=False, description="start each line with the time it was written"
        ),
    ) -> Stream:
        attempt = await logs.attempt(principal, workflow_id, task, retry)
        if follow:
            body = logs.follow_bytes(attempt, timestamps)
        else:
            body = logs.all_bytes(attempt, timestamps)
        headers = {"x-accel-buffering": "no", "cache-control": "no-cache"}
        if download:
            name = f"{workflow_id}-{task}-retry{attempt['retry']}.log"
            headers["content-disposition"] = f'attachment; filename="{name}"'
        return Stream(body, media_type="text/plain; charset=utf-8", headers=headers)

    @get(
        "/{workflow_id:str}/logs",
        summary="Every task's log merged, each line prefixed with its task (follow=true streams "
        "until every task has ended)",
        media_type="text/plain",
        responses={
            **text_answer(
                "`[task] line` for the latest attempt of every task, in the order the lines "
                "arrived (as the log page's merged view)"
            ),
            **problems(404),
        },
    )
    async def workflow_logs(
        self,
        logs: NamedDependency[LogService],
        log_windows: NamedDependency[Windows],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
        follow: FromQuery[bool] = False,
        timestamps: bool = Parameter(
            default=False, description="put the time each line was written after its prefix"
        ),
    ) -> Stream:
        attempts, names = await logs.workflow_attempts(principal, workflow_id)
        removed = await logs.removed_notice(workflow_id)
        body: AsyncIterator[bytes]
        if removed is not None:
            body = once(removed.encode())
        elif follow:
            topics = [f"log:{a}" for a in attempts] + [f"wf:{workflow_id}"]
            body = log_windows.follow_text(
                attempts, names, lambda: logs.all_complete(attempts), topics, timestamps
            )
        else:
            body = log_windows.text(attempts, names, timestamps)
        headers = {"x-accel-buffering": "no", "cache-control": "no-cache"}
        return Stream(body, media_type="text/plain; charset=utf-8", headers=headers)

    @get(
        "/{workflow_id:str}/history",
        summary="The workflow's events so far, newest first (the page's timeline), in pages",
        responses=problems(404, 422),
    )
    async def history(
        self,
        workflows: NamedDependency[WorkflowService],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
        limit: int = Parameter(default=100, ge=1, le=500),
        cursor: str | None = text_query(20, default=None, description="the next_cursor given"),
    ) -> EventPage:
        await workflows.check_visible(principal, workflow_id)
        before = None
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or not 0 < int(cursor) < 2**63:
                raise Invalid(
                    "cursor is not one this API returned",
                    [SpecIssue("cursor", None, "pass next_cursor from the previous page")],
                )
            before = int(cursor)
        rows = await workflows.events_page(workflow_id, before, limit + 1)
        items = [
            EventOut(r["id"], r["at"], r["name"], r["retry"], r["status"], r["source"],
                     r["reason"], r["exit_code"])
            for r in rows[:limit]
        ]  # fmt: skip
        more = len(rows) > limit
        return EventPage(items, str(items[-1].id) if more else None)

    @get(
        "/{workflow_id:str}/events",
        summary="Server-sent events: a snapshot, then workflow and task changes, then end",
        responses={
            **text_answer(
                "`snapshot` (the workflow as GET gives it), then `workflow` and `task` events "
                "with JSON bodies, and `end` once the workflow is over",
                "text/event-stream",
            ),
            **problems(404),
        },
    )
    async def events(
        self,
        workflows: NamedDependency[WorkflowService],
        watches: NamedDependency[WatchRegistry],
        principal: NamedDependency[Principal],
        workflow_id: str = WORKFLOW_ID,
    ) -> ServerSentEvent:
        await workflows.check_visible(principal, workflow_id)
        return ServerSentEvent(workflow_events(watches, workflow_id))


_json = msgspec.json.Encoder()


def _encode_dry_run(plan: dict[str, Any]) -> bytes:
    """A dry run's answer as ``DryRunPlan`` JSON, its ``groups`` already encoded."""
    groups = plan["groups"]
    assert isinstance(groups, msgspec.Raw)
    answer = msgspec.convert({**plan, "groups": []}, DryRunPlan)
    answer.groups = groups  # type: ignore[assignment]  # msgspec.Raw is spliced in as it is
    return _json.encode(answer)
