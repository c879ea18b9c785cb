"""Task logs: reading stored chunks in arrival order, and following an attempt live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.auth.service import Principal
from app.db import Database, Hub
from app.errors import NotFound
from app.logs.text import TextLog, follow_text, once, read_text
from app.pools.service import PoolService
from app.workflows.states import TERMINAL

__all__ = ("Attempt", "LogService")

STREAM_NAMES = {1: "stdout", 2: "stderr"}


class Attempt(dict[str, Any]):
    """The attempt a log request is about: its id, workflow, task name, retry, status."""


class LogService:
    def __init__(self, db: Database, hub: Hub, pools: PoolService) -> None:
        self.db = db
        self.hub = hub
        self.pools = pools

    async def attempt(
        self, principal: Principal, workflow_id: str, task: str, retry: int | None
    ) -> Attempt:
        pools = await self.pools.accessible(principal)  # before taking a connection
        async with self.db.connection() as conn:
            await _check_visible(conn, pools, workflow_id)
            row = await conn.fetchrow(
                """
                SELECT t.id, t.workflow, t.name, t.retry, t.status, w.logs_removed_at
                FROM task t JOIN workflow w ON w.id = t.workflow
                WHERE t.workflow = $1 AND t.name = $2 AND ($3::int IS NULL OR t.retry = $3)
                ORDER BY t.retry DESC LIMIT 1
                """,
                workflow_id,
                task,
                retry,
            )
        if row is None:
            which = f" retry {retry}" if retry is not None else ""
            raise NotFound(f"workflow '{workflow_id}' has no task '{task}'{which}")
        return Attempt(row)

    async def workflow_attempts(
        self, principal: Principal, workflow_id: str
    ) -> tuple[list[int], dict[int, str]]:
        """The latest attempt of every task of the workflow, and their task names."""
        pools = await self.pools.accessible(principal)  # before taking a connection
        async with self.db.connection() as conn:
            await _check_visible(conn, pools, workflow_id)
            rows = await conn.fetch(
                """
                SELECT DISTINCT ON (name) id, name FROM task WHERE workflow = $1
                ORDER BY name, retry DESC
                """,
                workflow_id,
            )
        return [r["id"] for r in rows], {r["id"]: r["name"] for r in rows}

    async def all_complete(self, attempts: list[int]) -> bool:
        """Every attempt ended and no more log can arrive for any of them."""
        async with self.db.connection() as conn:
            missing = await conn.fetchval(
                """
                SELECT count(*) FROM task WHERE id = ANY($1::bigint[])
                  AND NOT (status = ANY($2::text[])
                           AND (runner_ended_at IS NOT NULL OR launch_seq IS NULL))
                """,
                attempts,
                list(TERMINAL),
            )
        return missing == 0

    async def removed_notice(self, workflow_id: str) -> str | None:
        """A line saying the workflow's logs were removed by retention, or None."""
        async with self.db.connection() as conn:
            removed = await conn.fetchval(
                "SELECT logs_removed_at FROM workflow WHERE id = $1", workflow_id
            )
        return None if removed is None else _removed_line(removed)

    def all_bytes(self, attempt: Attempt, timestamps: bool = False) -> AsyncIterator[bytes]:
        """The attempt's log as it is now; with ``timestamps`` each line starts with the time
        it was written (RFC 3339, as ``kubectl logs --timestamps``). An unfinished line comes
        last, as it is."""
        if attempt.get("logs_removed_at") is not None:
            return once(_removed_line(attempt["logs_removed_at"]).encode())
        return read_text(self.db, [attempt["id"]], TextLog(timestamps), newline=False)

    def follow_bytes(self, attempt: Attempt, timestamps: bool = False) -> AsyncIterator[bytes]:
        """The attempt's log, then what it writes, until it ended and its log is complete."""
        if attempt.get("logs_removed_at") is not None:
            return once(_removed_line(attempt["logs_removed_at"]).encode())
        ids = [attempt["id"]]
        return follow_text(
            self.db,
            self.hub,
            ids,
            TextLog(timestamps),
            lambda: self.all_complete(ids),
            [f"log:{attempt['id']}", f"wf:{attempt['workflow']}"],
            newline=False,
        )


async def _check_visible(conn: asyncpg.Connection, pools: list[str], workflow_id: str) -> None:
    pool = await conn.fetchval("SELECT pool FROM workflow WHERE id = $1", workflow_id)
    if pool is None or pool not in pools:
        raise NotFound(f"workflow '{workflow_id}' does not exist")


def _removed_line(removed_at: datetime) -> str:
    # 200 with this line rather than 410: `gantry workflow logs` and scripts print it and go on,
    # and the workflow itself is still there to see.
    when = removed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"[gantry] the logs of this workflow were removed on {when}, after it had been "
        "finished for longer than the retention period (GANTRY_RETENTION_DAYS)\n"
    )
