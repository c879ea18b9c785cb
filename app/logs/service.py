"""Task logs: reading stored chunks in arrival order, and following an attempt live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.auth.service import Principal
from app.db import Database, Hub
from app.errors import NotFound
from app.logs.text import TextLog, chunk_page
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

    async def chunks(self, task_id: int, after: int = 0) -> tuple[list[asyncpg.Record], bool]:
        """A page of chunks after chunk id ``after``, in arrival order (stdout and stderr
        interleaved; bounded in bytes), and whether more follow."""
        async with self.db.connection() as conn:
            return await chunk_page(conn, [task_id], after)

    async def removed_notice(self, workflow_id: str) -> str | None:
        """A line saying the workflow's logs were removed by retention, or None."""
        async with self.db.connection() as conn:
            removed = await conn.fetchval(
                "SELECT logs_removed_at FROM workflow WHERE id = $1", workflow_id
            )
        return None if removed is None else _removed_line(removed)

    async def all_bytes(self, attempt: Attempt, timestamps: bool = False) -> AsyncIterator[bytes]:
        """The attempt's log as it is now; with ``timestamps`` each line starts with the time
        it was written (RFC 3339, as ``kubectl logs --timestamps``)."""
        if attempt.get("logs_removed_at") is not None:
            yield _removed_line(attempt["logs_removed_at"]).encode()
            return
        text = TextLog(timestamps)
        after = 0
        while True:
            rows, more = await self.chunks(attempt["id"], after)
            if rows:
                yield await asyncio.to_thread(text.feed, rows)
            if not more:
                yield text.flush()  # what exists so far, an unfinished line included
                return
            after = rows[-1]["id"]

    async def is_complete(self, task_id: int) -> bool:
        """The attempt ended and no more log can arrive for it."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT status, runner_ended_at, launch_seq FROM task WHERE id = $1", task_id
            )
        return (
            row is not None
            and row["status"] in TERMINAL
            and (row["runner_ended_at"] is not None or row["launch_seq"] is None)
        )

    async def follow(self, attempt: Attempt) -> AsyncIterator[list[asyncpg.Record]]:
        """Batches of new chunks until the attempt ended and its log is complete."""
        after = 0
        with self.hub.subscribe(f"log:{attempt['id']}", f"wf:{attempt['workflow']}") as sub:
            while True:
                complete = await self.is_complete(attempt["id"])
                while True:
                    rows, more = await self.chunks(attempt["id"], after)
                    if rows:
                        after = rows[-1]["id"]
                        yield rows
                    if not more:
                        break
                if complete:
                    return
                await sub.get(timeout=5)
                sub.drain()

    async def follow_bytes(
        self, attempt: Attempt, timestamps: bool = False
    ) -> AsyncIterator[bytes]:
        if attempt.get("logs_removed_at") is not None:
            yield _removed_line(attempt["logs_removed_at"]).encode()
            return
        text = TextLog(timestamps)
        async for rows in self.follow(attempt):
            yield await asyncio.to_thread(text.feed, rows)
        yield text.flush()  # the attempt ended: its unfinished lines are finished


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
