"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response

from app.db import Database, Hub
from app.pools.capacity import CONNECTED
from app.problems import problems
from app.settings import Settings
from app.workflows.scheduler import Loop

__all__ = ("healthz", "metrics", "readyz")


class Health(msgspec.Struct):
    status: str  # "ok"


class Readiness(msgspec.Struct):
    ready: bool
    checks: dict[str, bool]  # "database", "hub", and each background loop by name


@get("/healthz", summary="The process is up", tags=["operations"], responses=problems())
async def healthz() -> Health:
    return Health("ok")


@get(
    "/readyz",
    summary="The database, the hub and the loops work",
    tags=["operations"],
    responses={
        503: ResponseSpec(Readiness, description="Not ready: `checks` says what failed"),
        **problems(),
    },
)
async def readyz(
    db: NamedDependency[Database], hub: NamedDependency[Hub], loops: NamedDependency[list[Loop]]
) -> Response[Readiness]:
    checks = {
        "database": await db.ping(),
        "hub": hub.connected.is_set(),
        **{loop.name: loop.alive for loop in loops},
    }
    ok = all(checks.values())
    return Response(Readiness(ok, checks), status_code=200 if ok else 503)


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    media_type="text/plain",
    responses=problems(),
)
async def metrics(
    db: NamedDependency[Database], settings: NamedDependency[Settings]
) -> Response[bytes]:
    async with db.connection() as conn:
        workflows = await conn.fetch("SELECT status, count(*) AS n FROM workflow GROUP BY status")
        tasks = await conn.fetch(
            "SELECT status, count(*) AS n FROM task WHERE status IN ('PROCESSING', 'SCHEDULING', "
            "'INITIALIZING', 'RUNNING', 'WAITING') GROUP BY status"
        )
        backends = await conn.fetch(
            f"""
            SELECT b.name, {CONNECTED.format(ttl="$1")} AS connected
            FROM backend b LEFT JOIN runner_session s ON s.id = b.session_id AND s.ended_at IS NULL
            """,  # noqa: S608  (a constant)
            settings.lease_ttl,
        )
    lines = [
        "# HELP gantry_workflows Workflows by status.",
        "# TYPE gantry_workflows gauge",
        *(f'gantry_workflows{{status="{r["status"]}"}} {r["n"]}' for r in workflows),
        "# HELP gantry_tasks_alive Alive task attempts by status.",
        "# TYPE gantry_tasks_alive gauge",
        *(f'gantry_tasks_alive{{status="{r["status"]}"}} {r["n"]}' for r in tasks),
        "# HELP gantry_backend_connected 1 while a runner session of the backend is live.",
        "# TYPE gantry_backend_connected gauge",
        *(
            f'gantry_backend_connected{{backend="{r["name"]}"}} {int(r["connected"])}'
            for r in backends
        ),
    ]
    from prometheus_client import REGISTRY, generate_latest

    body = "\n".join(lines).encode() + b"\n" + generate_latest(REGISTRY)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
