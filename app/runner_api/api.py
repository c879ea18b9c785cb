"""The /api/runner/v1 endpoints (runner protocol v1; see runner/protocol.py)."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream

from app.audit.middleware import Note
from app.auth.service import Principal
from app.bounds import text_query
from app.problems import problems, text_answer
from app.runner_api.service import RunnerService
from runner import protocol as p

__all__ = ("RunnerController",)

SESSION_ID = text_query(64, description="The session id Welcome gave")


class RunnerController(Controller):
    path = "/api/runner/v1"
    tags = ["runner protocol"]

    @post(
        "/sessions",
        status_code=201,
        summary="Open a runner session (hello)",
        responses=problems(403, 422),
    )
    async def open_session(
        self,
        runners: NamedDependency[RunnerService],
        principal: NamedDependency[Principal],
        note: NamedDependency[Note],
        data: JSONBody[p.Hello],
    ) -> p.Welcome:
        welcome = await runners.open_session(principal.name, data)
        note.target = welcome.session_id
        return welcome

    @get(
        "/sessions/{session_id:str}/stream",
        summary="Launches and cancels as NDJSON",
        media_type="application/x-ndjson",
        responses={
            **text_answer(
                "One runner/protocol.py message per line (Launch, Cancel, Ping, Goodbye), "
                "until the server ends the stream",
                "application/x-ndjson",
            ),
            **problems(403, 404, 409),
        },
    )
    async def stream(
        self,
        runners: NamedDependency[RunnerService],
        principal: NamedDependency[Principal],
        session_id: str = SESSION_ID,
    ) -> Stream:
        session = await runners.session(principal.name, session_id)
        return Stream(
            runners.stream(session),
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
        self,
        runners: NamedDependency[RunnerService],
        principal: NamedDependency[Principal],
        data: JSONBody[p.EventBatch],
        session_id: str = SESSION_ID,
    ) -> p.EventReply:
        session = await runners.session(principal.name, session_id)
        return await runners.events(session, data)

    @post(
        "/sessions/{session_id:str}/logs",
        status_code=200,
        summary="Log chunks by offset",
        responses=problems(403, 404, 409, 422),
    )
    async def logs(
        self,
        runners: NamedDependency[RunnerService],
        principal: NamedDependency[Principal],
        data: JSONBody[p.LogBatch],
        session_id: str = SESSION_ID,
    ) -> p.LogReply:
        session = await runners.session(principal.name, session_id)
        return await runners.logs(session, data)

    @post(
        "/sessions/{session_id:str}/heartbeat",
        status_code=200,
        summary="Capacity and leases",
        responses=problems(403, 404, 409, 422),
    )
    async def heartbeat(
        self,
        runners: NamedDependency[RunnerService],
        principal: NamedDependency[Principal],
        data: JSONBody[p.Heartbeat],
        session_id: str = SESSION_ID,
    ) -> p.HeartbeatReply:
        session = await runners.session(principal.name, session_id)
        return await runners.heartbeat(session, data)
