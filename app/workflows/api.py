"""JSON controllers under /api/v1/workflows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, MediaType, Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Response, ServerSentEvent, Stream

from app.audit.middleware import note_of
from app.auth.middleware import principal_of
from app.bounds import count_query, text_query
from app.errors import NotFound
from app.live.events import workflow_events
from app.logs.service import LogService
from app.problems import problems
from app.workflows.schemas import (
    CancelRequest,
    DryRunPlan,
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
SUBMITTED_AFTER = Parameter(
    default=None, description="only those submitted at or after this time (ISO 8601)"
)
SUBMITTED_BEFORE = Parameter(
    default=None, description="only those submitted before this time (ISO 8601)"
)


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
        self, request: Request[Any, Any, Any], data: SubmitRequest
    ) -> Response[WorkflowOut]:
        service: WorkflowService = request.app.state.workflows
        result = await service.submit(
            principal_of(request),
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
        note_of(request).target = result["id"]
        return Response(
            msgspec.convert(result, WorkflowOut, from_attributes=False), status_code=201
        )

    @get(
        "/",
        summary="List workflows, newest first (keyset pagination)",
        responses=problems(422),
    )
    async def list_workflows(
        self,
        request: Request[Any, Any, Any],
        status: str | None = text_query(32, default=None),
        pool: str | None = text_query(64, default=None),
        name: str | None = text_query(200, default=None),
        user: str | None = text_query(64, default=None),
        # Checked by the service (422 naming `sort`), as the pages share it.
        sort: str = text_query(
            16, default="submitted", description="submitted, started or duration"
        ),
        limit: int = Parameter(default=50, ge=1, le=500),
        cursor: str | None = text_query(500, default=None),
        submitted_after: datetime | None = SUBMITTED_AFTER,
        submitted_before: datetime | None = SUBMITTED_BEFORE,
    ) -> WorkflowPage:
        service: WorkflowService = request.app.state.workflows
        page = await service.search(
            principal_of(request),
            status=status,
            pool=pool,
            name=name,
            user=user,
            sort=sort,
            limit=limit,
            cursor=cursor,
            submitted_after=submitted_after,
            submitted_before=submitted_before,
        )
        return msgspec.convert(page, WorkflowPage)

    @get(
        "/{workflow_id:str}",
        summary="A workflow with its groups and tasks",
        responses=problems(404),
    )
    async def get_workflow(
        self, request: Request[Any, Any, Any], workflow_id: str = WORKFLOW_ID
    ) -> Response[WorkflowDetail]:
        service: WorkflowService = request.app.state.workflows
        await service.check_visible(principal_of(request), workflow_id)
        # Readers of one workflow at the same moment share one read, layout and encoding: 16
        # clients reading a 10,000-task workflow in a loop built it 16 times over, and held
        # /healthz for seconds (a hostile test). Visibility was checked above, per reader.
        body = await _shared_reads.get(workflow_id, lambda: _detail_json(service, workflow_id))
        return Response(body, media_type=MediaType.JSON)  # type: ignore[arg-type]  # encoded above

    @get(
        "/{workflow_id:str}/spec",
        summary="The spec as submitted and as rendered, and the values it was submitted with",
        responses=problems(404),
    )
    async def get_spec(
        self, request: Request[Any, Any, Any], workflow_id: str = WORKFLOW_ID
    ) -> WorkflowSpecOut:
        service: WorkflowService = request.app.state.workflows
        return msgspec.convert(await service.spec_of(principal_of(request), workflow_id),
                               WorkflowSpecOut)  # fmt: skip

    @post(
        "/{workflow_id:str}/cancel",
        status_code=200,
        summary="Cancel a workflow",
        responses=problems(403, 404, 409),
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        workflow_id: str = WORKFLOW_ID,
        data: CancelRequest | None = None,
    ) -> WorkflowOut:
        service: WorkflowService = request.app.state.workflows
        body = data or CancelRequest()
        result = await service.cancel(principal_of(request), workflow_id, body.reason, body.force)
        return msgspec.convert(result, WorkflowOut)

    @get(
        "/{workflow_id:str}/tasks/{task:str}/logs",
        summary="A task attempt's log as text (follow=true streams until the attempt ends)",
        media_type="text/plain",
        responses=problems(404),
    )
    async def task_logs(
        self,
        request: Request[Any, Any, Any],
        workflow_id: str = WORKFLOW_ID,
        task: str = TASK,
        retry: int | None = count_query(default=None),
        follow: bool = False,
        download: bool = False,
        timestamps: bool = Parameter(
            default=False, description="start each line with the time it was written"
        ),
    ) -> Stream:
        logs: LogService = request.app.state.logs
        attempt = await logs.attempt(principal_of(request), workflow_id, task, retry)
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
        "/{workflow_id:str}/events",
        summary="Server-sent events: a snapshot, then workflow and task changes, then end",
        responses=problems(404),
    )
    async def events(
        self, request: Request[Any, Any, Any], workflow_id: str = WORKFLOW_ID
    ) -> ServerSentEvent:
        service: WorkflowService = request.app.state.workflows
        await service.check_visible(principal_of(request), workflow_id)
        return ServerSentEvent(workflow_events(request.app.state.watches, workflow_id))


_json = msgspec.json.Encoder()


def _encode_dry_run(plan: dict[str, Any]) -> bytes:
    """A dry run's answer as ``DryRunPlan`` JSON, its ``groups`` already encoded."""
    groups = plan["groups"]
    assert isinstance(groups, msgspec.Raw)
    answer = msgspec.convert({**plan, "groups": []}, DryRunPlan)
    answer.groups = groups  # type: ignore[assignment]  # msgspec.Raw is spliced in as it is
    return _json.encode(answer)
