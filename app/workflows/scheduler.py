"""Background loops of every replica: the scheduler and the sweeper (leases and timeouts).

Every replica runs them; each unit of work is done once. The scheduler works a pool only while
it holds that pool's transaction-level advisory lock, claims ready groups with
``FOR UPDATE SKIP LOCKED`` and dispatches to a connected backend whose last reported capacity,
minus what is already dispatched there, fits the whole group. The sweeper runs under an
advisory lock of its own. Both wake on NOTIFY hints and on a timer, back off with jitter after
errors, and record when they last completed a pass (their liveness signal for /readyz).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.db import Database, Hub, notify
from app.pools.capacity import CONNECTED, Amount, BackendRoom, Need, read_capacity, room_of
from app.pools.config import DEFAULT_START_TIMEOUT
from app.settings import Settings
from app.spec.quantities import format_duration
from app.workflows.states import DISPATCHED, START_TIMEOUT_EXIT, Status
from app.workflows.transitions import (
    end_groups,
    finish_task,
    lock_group,
    lock_workflow,
    record_events,
    stop_attempt,
)

__all__ = (
    "Loop",
    "Retention",
    "Scheduler",
    "Sweeper",
    "connected_backends",
    "group_needs",
)

log = logging.getLogger(__name__)
_DISPATCHED = list(DISPATCHED)
_BATCH = 2000


class Loop:
    """A background loop: wake on hints or every ``interval``, back off after errors."""

    name = "loop"
    topics: tuple[str, ...] = ()

    def __init__(self, db: Database, hub: Hub, settings: Settings, interval: float) -> None:
        self.db = db
        self.hub = hub
        self.settings = settings
        self.interval = interval
        self.last_ok = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def pass_once(self) -> bool:
        """One pass; True when there may be more work right away."""
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_ok < max(30.0, self.interval * 10)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"gantry-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        with self.hub.subscribe(*self.topics) as sub:
            while True:
                try:
                    async with asyncio.timeout(60):
                        more = await self.pass_once()
                    self.last_ok = time.monotonic()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception:
                    failures += 1
                    log.exception("%s: pass failed", self.name)
                    await asyncio.sleep(min(30.0, 0.5 * 2**failures) * (0.5 + random.random()))
                    continue
                if more:
                    continue
                await sub.get(timeout=self.interval * (0.8 + 0.4 * random.random()))
                sub.drain()


async def group_needs(conn: asyncpg.Connection, group_ids: list[int]) -> dict[int, list[Need]]:
    """What each group's queued tasks need, per platform: what ``BackendRoom.fits`` takes."""
    rows = await conn.fetch(
        """
        SELECT task_group, platform, sum(cpu)::float8 AS cpu,
               sum(memory)::float8 AS memory, sum(gpu)::float8 AS gpu, count(*) AS n
        FROM task WHERE task_group = ANY($1::bigint[]) AND status = 'PROCESSING'
        GROUP BY task_group, platform
        """,
        group_ids,
    )
    need_of: dict[int, list[Need]] = defaultdict(list)
    for n in rows:
        need_of[n["task_group"]].append(Need(n["platform"], Amount.of(n), n["n"]))
    return need_of


async def connected_backends(
    conn: asyncpg.Connection, pool: str, lease_ttl: float
) -> list[BackendRoom]:
    """The pool's backends with a live runner session, and their free capacity."""
    rows = await conn.fetch(
        f"""
        SELECT b.name, b.epoch, b.capacity::text AS capacity,
               p.config ->> 'default_platform' AS default_platform
        FROM backend b JOIN pool p ON p.name = b.pool
        JOIN runner_session s ON s.id = b.session_id AND s.ended_at IS NULL
        WHERE b.pool = $1 AND {CONNECTED.format(ttl="$2")}
        """,  # noqa: S608  (a constant)
        pool,
        lease_ttl,
    )
    if not rows:
        return []
    used = await conn.fetch(
        """
        SELECT backend, platform, sum(cpu)::float8 AS cpu, sum(memory)::float8 AS memory,
               sum(gpu)::float8 AS gpu, count(*) AS n
        FROM task WHERE backend = ANY($1::text[]) AND launch_seq IS NOT NULL
          AND runner_ended_at IS NULL
        GROUP BY backend, platform
        """,
        [r["name"] for r in rows],
    )
    out = []
    for r in rows:
        capacity: dict[str, Any] = read_capacity(r["capacity"])  # only plausible nodes
        slots = int(capacity.get("slots", 0))
        room = room_of(capacity.get("nodes", []), r["default_platform"])
        out.append(BackendRoom(r["name"], r["epoch"], slots, slots, dict(room), room))
    by_name = {b.name: b for b in out}
    for u in used:
        by_name[u["backend"]].reserve([Need(u["platform"], Amount.of(u), u["n"])])
    return out


class Scheduler(Loop):
    name = "scheduler"
    topics = ("sched", "backends")

    async def pass_once(self) -> bool:
        async with self.db.connection() as conn:
            # A pool in maintenance dispatches nothing new; what runs there goes on.
            pools = await conn.fetch(
                """
                SELECT DISTINCT w.pool FROM task_group g JOIN workflow w ON w.id = g.workflow
                JOIN pool p ON p.name = w.pool
                WHERE g.status = 'PROCESSING'
                  AND NOT coalesce((p.config ->> 'maintenance')::boolean, false)
                """
            )
        more = False
        for row in pools:
            more |= await self._schedule_pool(row["pool"])
        return more

    async def _schedule_pool(self, pool: str) -> bool:
        async with self.db.transaction() as conn:
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('gantry-scheduler'), hashtext($1))", pool
            ):
                return False  # another replica is scheduling this pool right now
            backends = await connected_backends(conn, pool, self.settings.lease_ttl)
            if not backends:
                return False
            groups = await conn.fetch(
                """
                SELECT g.id, g.workflow FROM task_group g JOIN workflow w ON w.id = g.workflow
                WHERE g.status = 'PROCESSING' AND w.pool = $1
                ORDER BY w.priority_rank, w.submitted_at, g.workflow, g.position
                LIMIT $2 FOR UPDATE OF g SKIP LOCKED
                """,
                pool,
                _BATCH,
            )
            if not groups:
                return False
            need_of = await group_needs(conn, [g["id"] for g in groups])
            assigned: dict[str, list[int]] = defaultdict(list)
            for g in groups:
                target = _place(need_of[g["id"]], backends)
                if target is not None:
                    assigned[target.name].append(g["id"])
            by_name = {b.name: b for b in backends}
            for name, group_ids in assigned.items():
                await self._dispatch(conn, by_name[name], group_ids)
        return len(groups) == _BATCH and bool(assigned)

    async def _dispatch(
        self, conn: asyncpg.Connection, backend: BackendRoom, group_ids: list[int]
    ) -> None:
        rows = await conn.fetch(
            """
            UPDATE task SET status = 'SCHEDULING', scheduling_at = now(), backend = $2,
                            epoch = $3, launch_seq = nextval('launch_seq'), launch_acked = false,
                            lease_expires = now() + make_interval(secs => $4)
            WHERE task_group = ANY($1::bigint[]) AND status = 'PROCESSING'
            RETURNING id, workflow
            """,
            group_ids,
            backend.name,
            backend.epoch,
            self.settings.lease_ttl,
        )
        await conn.execute(
            """
            UPDATE task_group SET status = 'SCHEDULING', scheduling_at = now(), backend = $2
            WHERE id = ANY($1::bigint[]) AND status = 'PROCESSING'
            """,
            group_ids,
            backend.name,
        )
        await record_events(
            conn, [(r["id"], r["workflow"], "SCHEDULING", None, None) for r in rows], "scheduler"
        )
        workflows = {r["workflow"] for r in rows}
        await notify(conn, f"dispatch:{backend.name}", "wfs", *(f"wf:{w}" for w in workflows))


def _place(needs: list[Need], backends: list[BackendRoom]) -> BackendRoom | None:
    """The backend with the most free slots that fits the whole group; reserves it there."""
    if sum(n.tasks for n in needs) == 0:
        return None
    fitting = [b for b in backends if b.fits(needs)]
    if not fitting:
        return None
    best = max(fitting, key=lambda b: b.slots)
    best.reserve(needs)
    return best


class Sweeper(Loop):
    """Fails attempts whose leases expired beyond the grace, and groups past their timeouts."""

    name = "sweeper"
    topics = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started = time.monotonic()

    @property
    def leases_judgeable(self) -> bool:
        """Whether an old lease means a lost runner: after this replica was down, runners need
        one lease period to reconnect and renew before their leases say anything."""
        up_for = time.monotonic() - self._started
        return up_for > self.settings.lease_ttl + self.settings.heartbeat_interval

    async def pass_once(self) -> bool:
        async with self.db.transaction() as conn:
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('gantry-sweeper'))"
            ):
                return False
            expired = await self._expire_leases(conn) if self.leases_judgeable else 0
            slow = await self._start_timeouts(conn)
            timed_out = await conn.fetch(
                """
                SELECT id, workflow, 'exec' AS kind, exec_timeout AS limit_s FROM task_group
                WHERE status = 'RUNNING'
                  AND started_at + make_interval(secs => exec_timeout) < now()
                UNION ALL
                SELECT id, workflow, 'queue', queue_timeout FROM task_group
                WHERE status IN ('PROCESSING', 'SCHEDULING', 'INITIALIZING')
                  AND processing_at + make_interval(secs => queue_timeout) < now()
                LIMIT 500
                """
            )
            # The groups of one workflow that timed out alike end together, in a bounded
            # number of statements (a 10,000-group workflow's queue timeout is one step).
            alike: dict[tuple[str, str, int], list[int]] = defaultdict(list)
            for g in timed_out:
                alike[(g["workflow"], g["kind"], g["limit_s"])].append(g["id"])
            for (workflow_id, kind, limit_s), group_ids in alike.items():
                await lock_workflow(conn, workflow_id)
                if kind == "exec":
                    status = Status.FAILED_EXEC_TIMEOUT
                    reason = (
                        f"the group ran longer than its exec_timeout ({format_duration(limit_s)})"
                    )
                else:
                    status = Status.FAILED_QUEUE_TIMEOUT
                    reason = (
                        f"the group waited longer than its queue_timeout ({format_duration(limit_s)}) "
                        "to start"
                    )
                await end_groups(conn, workflow_id, group_ids, status, reason, "sweeper")
        return expired == 500 or slow == 500 or len(timed_out) == 500

    async def _start_timeouts(self, conn: asyncpg.Connection) -> int:
        """End attempts placed longer ago than their pool's start_timeout that are still not
        running (an image that never pulls, a container that never starts)."""
        slow = await conn.fetch(
            """
            SELECT t.id, t.workflow, t.task_group, s.limit_s FROM task t
            JOIN workflow w ON w.id = t.workflow JOIN pool p ON p.name = w.pool
            CROSS JOIN LATERAL (
                SELECT coalesce((p.config ->> 'start_timeout')::int, $1) AS limit_s) s
            WHERE t.status = 'INITIALIZING'
              AND t.initializing_at + make_interval(secs => s.limit_s) < now()
            LIMIT 500
            """,
            DEFAULT_START_TIMEOUT,
        )
        for t in slow:
            await lock_group(conn, t["workflow"], t["task_group"])
            await stop_attempt(
                conn,
                t["id"],
                t["task_group"],
                Status.FAILED_START_TIMEOUT,
                f"the attempt did not start running within its pool's start_timeout "
                f"({format_duration(t['limit_s'])})",
                "sweeper",
                exit_code=START_TIMEOUT_EXIT,
            )
        return len(slow)

    async def _expire_leases(self, conn: asyncpg.Connection) -> int:
        expired = await conn.fetch(
            """
            SELECT t.id, t.workflow, t.task_group, t.backend FROM task t
            WHERE t.status = ANY($1::text[])
              AND t.lease_expires < now() - make_interval(secs => $2)
            LIMIT 500
            """,
            _DISPATCHED,
            self.settings.lease_grace,
        )
        now = datetime.now(UTC)
        for t in expired:
            await lock_group(conn, t["workflow"], t["task_group"])
            await finish_task(
                conn,
                t["id"],
                Status.FAILED_BACKEND_ERROR,
                now,
                None,
                f"backend '{t['backend']}' stopped renewing the attempt's lease "
                "(its runner is gone or cut off)",
                "sweeper",
                runner_done=True,
            )
        # Stops the runner never confirmed, once its lease is long gone: it has none now.
        await conn.execute(
            """
            UPDATE task SET runner_ended_at = now()
            WHERE runner_ended_at IS NULL AND stop_requested_at IS NOT NULL
              AND lease_expires < now() - make_interval(secs => $1)
            """,
            self.settings.lease_grace,
        )
        return len(expired)


class Retention(Loop):
    """Removes finished workflows' log chunks after ``GANTRY_RETENTION_DAYS`` (0 keeps them).

    The workflow, group, task and event rows stay; ``workflow.logs_removed_at`` records that the
    logs are gone, which the log endpoints then say. Deletes go in batches of ``CHUNK_BATCH``
    rows, each its own short transaction, so no lock is held long and replication keeps up.
    One replica works at a time: the pass holds a session-level advisory lock on its connection.
    """

    name = "retention"
    topics = ()
    CHUNK_BATCH = 5000
    WORKFLOW_BATCH = 100
    BATCHES_PER_PASS = 50  # then yield and come back at once (the loop's pass has 60 s)

    async def pass_once(self) -> bool:
        days = self.settings.retention_days
        if days <= 0:
            return False
        async with self.db.connection() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('gantry-retention'))"):
                return False
            try:
                return await self._remove(conn, days)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext('gantry-retention'))")

    async def _remove(self, conn: asyncpg.Connection, days: float) -> bool:
        batches = 0
        while batches < self.BATCHES_PER_PASS:
            workflows = [
                r["id"]
                for r in await conn.fetch(
                    """
                    SELECT id FROM workflow
                    WHERE ended_at IS NOT NULL AND logs_removed_at IS NULL
                      AND ended_at < now() - make_interval(secs => $1)
                    ORDER BY ended_at LIMIT $2
                    """,
                    days * 86400,
                    self.WORKFLOW_BATCH,
                )
            ]
            if not workflows:
                return False
            while batches < self.BATCHES_PER_PASS:
                batches += 1
                deleted = await conn.execute(
                    """
                    DELETE FROM log_chunk WHERE id IN (
                      SELECT c.id FROM task t JOIN log_chunk c ON c.task = t.id
                      WHERE t.workflow = ANY($1::text[]) LIMIT $2)
                    """,
                    workflows,
                    self.CHUNK_BATCH,
                )
                if int(deleted.split()[-1]) < self.CHUNK_BATCH:
                    await conn.execute(
                        "UPDATE workflow SET logs_removed_at = now() WHERE id = ANY($1::text[])",
                        workflows,
                    )
                    log.info("retention: removed the logs of %d workflows", len(workflows))
                    break
        return True
