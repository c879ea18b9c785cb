"""The /api/runner/v1 endpoints (runner protocol v1; see runner/protocol.py)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Stream

from app.audit.middleware import note_of
from app.auth.middleware import principal_of
from app.bounds import text_query
from app.problems import problems
from app.runner_api.service import RunnerService
from runner import protocol as p

__all__ = ("RunnerController",)

SESSION_ID = text_query(64, description="The session id Welcome gave")


def _service(request: Request[Any, Any, Any]) -> RunnerService:
    return request.app.state.runners


class RunnerController(Controller):
    path = "/api/runner/v1"
    tags = ["runner protocol"]

    @post(
        "/sessions",
        status_code=201,
        summary="Open a runner session (hello)",
        responses=problems(403, 422),
    )
    async def open_session(self, request: Request[Any, Any, Any], data: p.Hello) -> p.Welcome:
        welcome = await _service(request).open_session(principal_of(request).name, data)
        note_of(request).target = welcome.session_id
        return welcome

    @get(
        "/sessions/{session_id:str}/stream",
        summary="Launches and cancels as NDJSON",
        media_type="application/x-ndjson",
        responses=problems(403, 404, 409),
    )
    async def stream(self, request: Request[Any, Any, Any], session_id: str = SESSION_ID) -> Stream:
        service = _service(request)
        session = await service.session(principal_of(request).name, session_id)
        return Stream(
            service.stream(session),
            media_type="application/x-ndjson",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @post(
        "/sessions/{session_id:str}/events",
        status_code=200,
        summary="State reports and acks",
        responses=problems(403, 404, 409, 422),
    )
    async def events(
        self, request: Request[Any, Any, Any], data: p.EventBatch, session_id: str = SESSION_ID
    ) -> p.EventReply:
        service = _service(request)
        session = await service.session(principal_of(request).name, session_id)
        return await service.events(session, data)

    @post(
        "/sessions/{session_id:str}/logs",
        status_code=200,
        summary="Log chunks by offset",
        responses=problems(403, 404, 409, 422),
    )
    async def logs(
        self, request: Request[Any, Any, Any], data: p.LogBatch, session_id: str = SESSION_ID
    ) -> p.LogReply:
        service = _service(request)
        session = await service.session(principal_of(request).name, session_id)
        return await service.logs(session, data)

    @post(
        "/sessions/{session_id:str}/heartbeat",
        status_code=200,
        summary="Capacity and leases",
        responses=problems(403, 404, 409, 422),
    )
    async def heartbeat(
        self, request: Request[Any, Any, Any], data: p.Heartbeat, session_id: str = SESSION_ID
    ) -> p.HeartbeatReply:
        service = _service(request)
        session = await service.session(principal_of(request).name, session_id)
        return await service.heartbeat(session, data)
