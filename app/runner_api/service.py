"""The control plane's side of runner protocol v1: sessions, launches, reports, logs, leases.

Fencing: every session of a backend gets the next epoch, and each attempt records the epoch
that may report on it. A report or log chunk carrying an older epoch is refused for that item
and the runner kills the attempt. Each state report is applied in its own transaction; the
transitions' SQL guards make duplicates and late reports change nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from app.audit.service import Event, record_on
from app.db import Database, Hub, notify
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.settings import Settings
from app.workflows.states import ALIVE, DISPATCHED, TERMINAL, Status
from app.workflows.transitions import finish_task, lock_group, task_progress
from runner import protocol as p

__all__ = ("RunnerService", "SessionInfo", "retry_deadlocks")

RUNNER_STATUSES = {
    Status.INITIALIZING,
    Status.RUNNING,
    Status.COMPLETED,
    Status.FAILED,
    Status.FAILED_START_ERROR,
    Status.FAILED_START_TIMEOUT,
    Status.FAILED_IMAGE_PULL,
    Status.FAILED_EVICTED,
    Status.FAILED_PREEMPTED,
    Status.FAILED_BACKEND_ERROR,
}
_STREAM_CODE = {"stdout": 1, "stderr": 2}
MAX_CHUNK = 1024 * 1024  # the log viewer reads windows of chunks; it relies on this bound
# Where both streams of an attempt whose log was cut are acknowledged: far beyond any file
# (GANTRY_MAX_LOG_BYTES_PER_ATTEMPT is below it), so the runner reads and sends nothing more
# of them, with no change to the protocol. Below ext4's 16 TiB, where seek() would fail.
LOG_CUT = 2**40
_DISPATCHED = list(DISPATCHED)
_REPORTABLE = frozenset(str(s) for s in RUNNER_STATUSES)
_json = msgspec.json.Encoder()


async def retry_deadlocks(fn: Any, *args: Any, attempts: int = 5) -> Any:
    """Run ``fn`` again when Postgres aborted it for a deadlock or a serialization conflict."""
    for i in range(attempts):
        try:
            return await fn(*args)
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if i == attempts - 1:
                raise
            await asyncio.sleep(0.01 * (2**i))
    return None


def checked_capacity(
    capacity: p.Capacity, where: str = "capacity"
) -> tuple[p.Capacity, list[p.Refusal]]:
    """The capacity without the nodes that cannot be true, and a refusal for each of those.

    A refused node is neither stored nor counted, so one runner's bad numbers never reach the
    pages or the scheduler; the runner learns which node and why from the answer.
    """
    kept: list[p.Node] = []
    refused: list[p.Refusal] = []
    for i, node in enumerate(capacity.nodes):
        problem = p.node_problem(node)
        if problem is None:
            kept.append(node)
        else:
            refused.append(p.Refusal(f"{where}.nodes[{i}]", f"node {node.name!r}: {problem}"))
    if not refused:
        return capacity, []
    return p.Capacity(nodes=kept, slots=capacity.slots), refused


class SessionInfo(msgspec.Struct, frozen=True):
    id: str
    backend: str
    epoch: int


class RunnerService:
    def __init__(self, db: Database, hub: Hub, settings: Settings) -> None:
        self.db = db
        self.hub = hub
        self.settings = settings

    # -- sessions -------------------------------------------------------------------------

    async def open_session(self, backend: str, hello: p.Hello) -> p.Welcome:
        if hello.backend != backend:
            raise Forbidden("this token belongs to another backend")
        if hello.protocol_version != p.PROTOCOL_VERSION:
            raise Invalid(
                f"protocol version {hello.protocol_version} is not supported; this control plane "
                f"speaks version {p.PROTOCOL_VERSION}"
            )
        session_id = str(uuid.uuid4())
        ttl = self.settings.lease_ttl
        capacity, refused = checked_capacity(hello.capacity)
        async with self.db.transaction() as conn:
            epoch = await conn.fetchval(
                """
                UPDATE backend SET epoch = epoch + 1, session_id = $2, last_heartbeat = now(),
                                   capacity = $3::jsonb, cluster_id = $4
                WHERE name = $1 RETURNING epoch
                """,
                backend,
                session_id,
                _json.encode(capacity).decode(),
                hello.cluster_id,
            )
            ended = await conn.fetch(
                "UPDATE runner_session SET ended_at = now() WHERE backend = $1 AND ended_at IS NULL"
                " RETURNING id",
                backend,
            )
            # The only place a session ends: written with the change, so neither is without
            # the other (the new session's opening is the request's own event).
            for row in ended:
                await record_on(
                    conn, Event(backend, "token", "runner:SessionClose", str(row["id"]))
                )
            await conn.execute(
                """
                INSERT INTO runner_session (id, backend, epoch, runner_version, connected_at,
                                            last_seen)
                VALUES ($1, $2, $3, $4, now(), now())
                """,
                session_id,
                backend,
                epoch,
                hello.runner_version[:64],
            )
            decisions = await self._decide_inventory(conn, backend, epoch, hello.inventory, ttl)
            # Launches not yet acknowledged are sent again on this session's stream.
            await conn.execute(
                """
                UPDATE task SET epoch = $2, lease_expires = now() + make_interval(secs => $3)
                WHERE backend = $1 AND NOT launch_acked AND launch_seq IS NOT NULL
                  AND status = 'SCHEDULING'
                """,
                backend,
                epoch,
                ttl,
            )
            await notify(conn, "backends", f"session:{backend}")
        await self._fail_lost(backend, {i.attempt for i in hello.inventory})
        return p.Welcome(
            session_id=session_id,
            epoch=epoch,
            heartbeat_interval=self.settings.heartbeat_interval,
            lease_ttl=ttl,
            log_flush_interval=self.settings.log_flush_interval,
            decisions=decisions,
            refused=refused,
        )

    async def _decide_inventory(
        self,
        conn: asyncpg.Connection,
        backend: str,
        epoch: int,
        inventory: list[p.InventoryItem],
        ttl: float,
    ) -> list[p.Decision]:
        if not inventory:
            return []
        rows = {
            r["id"]: r
            for r in await conn.fetch(
                """
                SELECT id, backend, status, stop_requested_at, stdout_end, stderr_end
                FROM task WHERE id = ANY($1::bigint[])
                """,
                [i.attempt for i in inventory],
            )
        }
        keep: list[int] = []
        decisions = []
        for item in inventory:
            row = rows.get(item.attempt)
            if row is None or row["backend"] != backend:
                decisions.append(p.Decision(item.attempt, "kill", epoch, "unknown attempt"))
            elif row["status"] not in DISPATCHED or row["stop_requested_at"] is not None:
                decisions.append(
                    p.Decision(item.attempt, "kill", epoch, f"the attempt is {row['status']}")
                )
            else:
                keep.append(item.attempt)
                decisions.append(
                    p.Decision(
                        item.attempt,
                        "keep",
                        epoch,
                        offsets=[
                            p.LogOffset(item.attempt, "stdout", row["stdout_end"]),
                            p.LogOffset(item.attempt, "stderr", row["stderr_end"]),
                        ],
                    )
                )
        if keep:
            await conn.execute(
                """
                UPDATE task SET epoch = $2, launch_acked = true,
                                lease_expires = now() + make_interval(secs => $3)
                WHERE id = ANY($1::bigint[])
                """,
                keep,
                epoch,
                ttl,
            )
        # Attempts the runner no longer runs do not hold its capacity any more.
        killed = [d.attempt for d in decisions if d.action == "kill"]
        if killed:
            await conn.execute(
                """
                UPDATE task SET runner_ended_at = coalesce(runner_ended_at, now())
                WHERE id = ANY($1::bigint[]) AND backend = $2 AND status <> ALL($3::text[])
                """,
                killed,
                backend,
                _DISPATCHED,
            )
        return decisions

    async def _fail_lost(self, backend: str, inventory: set[int]) -> None:
        """Attempts the runner had acknowledged but no longer has: it lost them."""
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                """
                SELECT id FROM task WHERE backend = $1 AND launch_acked
                  AND status = ANY($2::text[]) AND NOT (id = ANY($3::bigint[]))
                """,
                backend,
                _DISPATCHED,
                list(inventory),
            )
        lost = [r["id"] for r in rows]
        now = datetime.now(UTC)
        for task_id in lost:
            await retry_deadlocks(
                self._finish,
                task_id,
                Status.FAILED_BACKEND_ERROR,
                now,
                None,
                f"the runner of backend '{backend}' restarted without this attempt",
                True,
            )
        # Attempts ended here whose end the runner never confirmed: it has none of them now.
        async with self.db.connection() as conn:
            await conn.execute(
                """
                UPDATE task SET runner_ended_at = now()
                WHERE backend = $1 AND runner_ended_at IS NULL AND launch_seq IS NOT NULL
                  AND status <> ALL($2::text[]) AND NOT (id = ANY($3::bigint[]))
                """,
                backend,
                _DISPATCHED,
                list(inventory),
            )

    async def session(self, backend: str, session_id: str) -> SessionInfo:
        """The live session ``session_id`` of ``backend``; 404/409 when it is not."""
        try:
            sid = uuid.UUID(session_id)
        except ValueError:
            raise NotFound("no such session") from None
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT backend, epoch, ended_at FROM runner_session WHERE id = $1", sid
            )
        if row is None or row["backend"] != backend:
            raise NotFound("no such session")
        if row["ended_at"] is not None:
            raise Conflict("this session has ended (a newer one replaced it); open a new session")
        return SessionInfo(session_id, backend, row["epoch"])

    async def session_is_current(self, session: SessionInfo) -> bool:
        async with self.db.connection() as conn:
            ended = await conn.fetchval(
                "SELECT ended_at IS NOT NULL FROM runner_session WHERE id = $1",
                uuid.UUID(session.id),
            )
        return ended is False

    # -- the stream -----------------------------------------------------------------------

    async def stream(self, session: SessionInfo) -> AsyncIterator[bytes]:
        """NDJSON: unacknowledged launches first, then new launches and cancels as they come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.stream_max_lifetime
        b = session.backend
        # What this stream already sent. Sequence numbers are not compared by size: a launch
        # whose transaction commits late may carry a smaller number than one already sent.
        sent_launches: set[int] = set()
        sent_cancels: set[int] = set()
        with self.hub.subscribe(f"dispatch:{b}", f"stop:{b}", f"session:{b}") as sub:
            next_ping = loop.time()
            wake = True
            while True:
                if wake:
                    if not await self.session_is_current(session):
                        yield p.encode_stream_line(
                            p.Goodbye("a newer session replaced this one", reconnect=False)
                        )
                        return
                    launches, cancels = await self._outbox(session, sent_launches, sent_cancels)
                    for launch in launches:
                        sent_launches.add(launch.seq)
                        yield p.encode_stream_line(launch)
                    for cancel in cancels:
                        sent_cancels.add(cancel.attempt)
                        yield p.encode_stream_line(cancel)
                now = loop.time()
                if now >= deadline:
                    yield p.encode_stream_line(p.Goodbye("stream lifetime reached; reconnect"))
                    return
                if now >= next_ping:
                    yield p.encode_stream_line(p.Ping(datetime.now(UTC)))
                    next_ping = now + self.settings.ping_interval
                hint = await sub.get(timeout=min(next_ping, deadline) - loop.time())
                wake = hint is not None
                if wake:
                    await asyncio.sleep(0.005)  # let a burst of hints arrive, then read once
                    sub.drain()

    async def _outbox(
        self, session: SessionInfo, sent_launches: set[int], sent_cancels: set[int]
    ) -> tuple[list[p.Launch], list[p.Cancel]]:
        async with self.db.connection() as conn:
            pending = await conn.fetch(
                """
                SELECT id, launch_seq FROM task
                WHERE backend = $1 AND NOT launch_acked AND status = 'SCHEDULING'
                  AND launch_seq IS NOT NULL AND runner_ended_at IS NULL
                ORDER BY launch_seq
                """,
                session.backend,
            )
            new = [r["id"] for r in pending if r["launch_seq"] not in sent_launches][:2000]
            launches: list[p.Launch] = []
            if new:
                rows = await conn.fetch(
                    """
                    SELECT t.id, t.workflow, t.name, t.retry, t.lead, t.spec::text AS spec, t.cpu,
                           t.memory, t.gpu, t.storage, t.platform, t.launch_seq, t.epoch,
                           g.name AS group_name, g.barrier, g.id AS group_id
                    FROM task t JOIN task_group g ON g.id = t.task_group
                    WHERE t.id = ANY($1::bigint[])
                    ORDER BY t.launch_seq
                    """,
                    new,
                )
                launches = await self._launches(conn, list(rows), session.epoch)
            cancel_rows = await conn.fetch(
                """
                SELECT id, stop_force, reason FROM task
                WHERE backend = $1 AND stop_requested_at IS NOT NULL
                  AND runner_ended_at IS NULL AND launch_seq IS NOT NULL
                  AND NOT (id = ANY($2::bigint[]))
                """,
                session.backend,
                list(sent_cancels),
            )
        cancels = [self._cancel(r) for r in cancel_rows]
        return launches, cancels

    def _cancel(self, row: asyncpg.Record) -> p.Cancel:
        return p.Cancel(
            attempt=row["id"],
            force=row["stop_force"],
            grace=0.0 if row["stop_force"] else self.settings.cancel_grace,
            reason=row["reason"] or "",
        )

    async def _launches(
        self, conn: asyncpg.Connection, rows: list[asyncpg.Record], epoch: int
    ) -> list[p.Launch]:
        group_ids = list({r["group_id"] for r in rows})
        members = await conn.fetch(
            """
            SELECT task_group, array_agg(DISTINCT name) AS names FROM task
            WHERE task_group = ANY($1::bigint[]) GROUP BY task_group
            """,
            group_ids,
        )
        names_of = {m["task_group"]: sorted(m["names"]) for m in members}
        workflows = list({r["workflow"] for r in rows})
        upstream = await conn.fetch(
            """
            SELECT DISTINCT ON (workflow, name) workflow, name, id FROM task
            WHERE workflow = ANY($1::text[]) AND status = 'COMPLETED'
            ORDER BY workflow, name, retry DESC
            """,
            workflows,
        )
        completed = {(u["workflow"], u["name"]): u["id"] for u in upstream}
        owners = await conn.fetch(
            """
            SELECT w.id, coalesce('admin' = ANY(u.roles), false) AS admin FROM workflow w
            LEFT JOIN gantry_user u ON u.name = w.owner WHERE w.id = ANY($1::text[])
            """,
            workflows,
        )
        owner_admin = {o["id"]: o["admin"] for o in owners}
        out = []
        for r in rows:
            spec = msgspec.json.decode(r["spec"])
            inputs = [
                p.InputMount(index=i, task=name, attempt=completed.get((r["workflow"], name), 0))
                for i, name in enumerate(spec.get("inputs", []))
            ]
            attempt = p.Attempt(
                id=r["id"],
                workflow_id=r["workflow"],
                group=r["group_name"],
                group_size=len(names_of.get(r["group_id"], [])),
                barrier=r["barrier"],
                task=r["name"],
                retry=r["retry"],
                lead=r["lead"],
                image=spec["image"],
                command=spec["command"],
                args=spec["args"],
                environment=spec["environment"],
                files=[p.AttemptFile(**f) for f in spec["files"]],
                inputs=inputs,
                cpu=r["cpu"],
                memory=r["memory"],
                gpu=r["gpu"],
                storage=r["storage"],
                platform=r["platform"],
                hosts=names_of.get(r["group_id"], []),
            )
            out.append(
                p.Launch(
                    seq=r["launch_seq"],
                    epoch=max(r["epoch"], epoch),
                    attempt=attempt,
                    owner_admin=owner_admin.get(r["workflow"], False),
                )
            )
        return out

    # -- reports --------------------------------------------------------------------------

    async def events(self, session: SessionInfo, batch: p.EventBatch) -> p.EventReply:
        if batch.acks:
            async with self.db.connection() as conn:
                await conn.execute(
                    """
                    UPDATE task SET launch_acked = true
                    WHERE backend = $1 AND launch_seq = ANY($2::bigint[])
                    """,
                    session.backend,
                    batch.acks,
                )
        results = []
        refused = []
        for i, report in enumerate(batch.events):
            # Each report is checked alone: a bad one is refused in the answer, the rest apply.
            problem = p.report_problem(report, _REPORTABLE)
            if problem is not None:
                refused.append(p.Refusal(f"events[{i}]", problem, report.attempt))
                continue
            outcome = await retry_deadlocks(self._apply, session, report)
            results.append(p.ReportResult(report.attempt, outcome))
        cancels = await self._pending_cancels(session.backend, [r.attempt for r in batch.events])
        return p.EventReply(results=results, cancels=cancels, refused=refused)

    async def _apply(self, session: SessionInfo, report: p.StateReport) -> str:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT backend, epoch, workflow, task_group FROM task WHERE id = $1",
                report.attempt,
            )
            if row is None or row["backend"] != session.backend:
                return "unknown"
            if report.epoch < row["epoch"]:
                return "stale"
            await lock_group(conn, row["workflow"], row["task_group"])
            if report.status in (Status.INITIALIZING, Status.RUNNING):
                applied = await task_progress(
                    conn, report.attempt, report.status, report.time, report.node, "runner"
                )
            else:
                applied = await finish_task(
                    conn,
                    report.attempt,
                    report.status,
                    report.time,
                    report.exit_code,
                    report.reason,
                    "runner",
                    runner_done=True,
                )
        return "applied" if applied else "duplicate"

    async def _finish(
        self,
        task_id: int,
        status: str,
        at: datetime,
        exit_code: int | None,
        reason: str,
        runner_done: bool,
    ) -> bool:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT workflow, task_group FROM task WHERE id = $1", task_id
            )
            if row is None:
                return False
            await lock_group(conn, row["workflow"], row["task_group"])
            return await finish_task(
                conn,
                task_id,
                status,
                at,
                exit_code,
                reason,
                "control-plane",
                runner_done=runner_done,
            )

    async def _pending_cancels(self, backend: str, attempts: list[int]) -> list[p.Cancel]:
        if not attempts:
            return []
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                """
                SELECT id, stop_force, reason FROM task
                WHERE id = ANY($1::bigint[]) AND backend = $2 AND runner_ended_at IS NULL
                  AND (stop_requested_at IS NOT NULL OR status <> ALL($3::text[]))
                """,
                attempts,
                backend,
                list(ALIVE),
            )
        return [self._cancel(r) for r in rows]

    # -- logs -----------------------------------------------------------------------------

    async def logs(self, session: SessionInfo, batch: p.LogBatch) -> p.LogReply:
        too_big = [c for c in batch.chunks if len(c.data) > MAX_CHUNK]
        if too_big:
            raise Invalid(
                f"a log chunk may hold at most {MAX_CHUNK} bytes; attempt {too_big[0].attempt} "
                f"sent {len(too_big[0].data)}: split it"
            )
        # By attempt (rows are locked in one order, so two sessions cannot deadlock), and
        # within an attempt as sent: the runner sends both streams in the order the task wrote
        # them, and ids number lines in that order. (Sorting by stream too put every stderr
        # chunk of a batch before the stdout ones.)
        chunks = sorted(batch.chunks, key=lambda c: c.attempt)
        cap = self.settings.max_log_bytes_per_attempt
        ends: dict[tuple[int, str], int] = {}
        refused: set[int] = set()
        touched: set[int] = set()
        async with self.db.transaction() as conn:
            for c in chunks:
                if c.attempt in refused:
                    continue
                column = "stdout_end" if c.stream == "stdout" else "stderr_end"
                row = await conn.fetchrow(
                    f"SELECT backend, epoch, {column} AS end_, stdout_end + stderr_end AS stored"  # noqa: S608
                    " FROM task WHERE id = $1 FOR UPDATE",
                    c.attempt,
                )
                if row is None or row["backend"] != session.backend or c.epoch < row["epoch"]:
                    refused.add(c.attempt)
                    continue
                end = row["end_"]
                if end >= LOG_CUT:  # the log was cut: whatever comes now changes nothing
                    ends[(c.attempt, c.stream)] = LOG_CUT
                    continue
                stop = c.offset + len(c.data)
                if c.offset <= end < stop:
                    data = c.data[end - c.offset :]
                    if cap and row["stored"] + len(data) > cap:
                        await _cut_log(
                            conn, c.attempt, c.stream, end, data[: cap - row["stored"]], cap
                        )
                        for stream in ("stdout", "stderr"):
                            ends[(c.attempt, stream)] = LOG_CUT
                        touched.add(c.attempt)
                        continue
                    await conn.execute(
                        """
                        INSERT INTO log_chunk
                            (task, stream, start, data, newlines, received_at, printed_at)
                        VALUES ($1, $2, $3, $4, $5, now(), to_timestamp($6))
                        """,
                        c.attempt,
                        _STREAM_CODE[c.stream],
                        end,
                        data,
                        data.count(b"\n"),
                        _printed_at(c.at),
                    )
                    await conn.execute(
                        f"UPDATE task SET {column} = $2 WHERE id = $1",  # noqa: S608
                        c.attempt,
                        stop,
                    )
                    end = stop
                    touched.add(c.attempt)
                ends[(c.attempt, c.stream)] = end
            await notify(conn, *(f"log:{t}" for t in touched))
        return p.LogReply(
            offsets=[p.LogOffset(a, s, o) for (a, s), o in ends.items()],  # type: ignore[arg-type]
            refused=sorted(refused),
        )

    # -- heartbeat ------------------------------------------------------------------------

    async def heartbeat(self, session: SessionInfo, hb: p.Heartbeat) -> p.HeartbeatReply:
        capacity, refused = checked_capacity(hb.capacity)
        async with self.db.transaction() as conn:
            current = await conn.fetchval(
                """
                UPDATE runner_session SET last_seen = now()
                WHERE id = $1 AND ended_at IS NULL RETURNING id
                """,
                uuid.UUID(session.id),
            )
            if current is None:
                raise Conflict(
                    "this session has ended (a newer one replaced it); open a new session"
                )
            await conn.execute(
                """
                UPDATE backend SET last_heartbeat = now(), capacity = $2::jsonb
                WHERE name = $1
                """,
                session.backend,
                _json.encode(capacity).decode(),
            )
            rows = await conn.fetch(
                """
                UPDATE task SET lease_expires = now() + make_interval(secs => $4)
                WHERE id = ANY($1::bigint[]) AND backend = $2 AND epoch <= $3
                RETURNING id, status, stop_requested_at, stop_force, reason, runner_ended_at
                """,
                hb.live,
                session.backend,
                session.epoch,
                self.settings.lease_ttl,
            )
        known = {r["id"]: r for r in rows}
        kill = [a for a in hb.live if a not in known]
        cancels = [
            self._cancel(r)
            for r in rows
            if r["stop_requested_at"] is not None or r["status"] in TERMINAL
        ]
        return p.HeartbeatReply(cancels=cancels, kill=kill, refused=refused)


def _printed_at(at: float | None) -> float | None:
    """A runner's time for a chunk, if it is a plausible one (a runner's clock may be wrong,
    never so wrong that it could break a page): within a day of now, else none."""
    if at is None or not math.isfinite(at) or abs(at - time.time()) > 86400:
        return None
    return at


async def _cut_log(
    conn: asyncpg.Connection, attempt: int, stream: str, end: int, data: bytes, cap: int
) -> None:
    """Store what fits under the cap, then a line saying the log was cut, and close both
    streams at LOG_CUT so later chunks change nothing (GANTRY_MAX_LOG_BYTES_PER_ATTEMPT)."""
    marker = (
        f"[gantry] log cut: this attempt wrote more than {cap} bytes of log "
        "(GANTRY_MAX_LOG_BYTES_PER_ATTEMPT); the rest of its output was dropped\n"
    ).encode()
    if data and not data.endswith(b"\n"):
        marker = b"\n" + marker
    for start, piece in ((end, data), (end + len(data), marker)):
        if piece:
            await conn.execute(
                """
                INSERT INTO log_chunk (task, stream, start, data, newlines, received_at)
                VALUES ($1, $2, $3, $4, $5, now())
                """,
                attempt,
                _STREAM_CODE[stream],
                start,
                piece,
                piece.count(b"\n"),
            )
    await conn.execute(
        "UPDATE task SET stdout_end = $2, stderr_end = $2 WHERE id = $1", attempt, LOG_CUT
    )
