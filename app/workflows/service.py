"""Workflows: submit (with dry run), read, list and cancel.

The only layer that opens transactions for workflows; transitions live in ``transitions.py``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from app.access.policy import pool_resource
from app.auth.service import Principal
from app.db import Database, notify
from app.errors import Forbidden, Invalid, NotFound
from app.limits import SubmissionLimits
from app.pools.capacity import Amount, room_of
from app.pools.config import PoolConfig
from app.pools.service import PoolService
from app.spec.errors import Path, SpecError, SpecIssue, format_path
from app.spec.model import Resources, TaskSpec
from app.spec.parse import ParsedSpec
from app.spec.plan import Plan, PlannedGroup, PlannedTask, substitute_tokens
from app.spec.quantities import format_bytes, format_duration
from app.spec.template import TemplateRenderer
from app.workflows.filters import NO_FILTER, WorkflowFilter
from app.workflows.schemas import WorkflowHead
from app.workflows.states import PRIORITIES, TERMINAL, WORKFLOW_ALIVE, Status, WorkflowStatus
from app.workflows.transitions import end_groups, lock_workflow
from app.workflows.waiting import why_waiting

__all__ = ("WorkflowService",)

_json = msgspec.json.Encoder()


class WorkflowService:
    # Per-user submission limits; create_app sets them (app/limits.py). None: unlimited.
    limits: SubmissionLimits | None = None

    def __init__(
        self,
        db: Database,
        pools: PoolService,
        renderer: TemplateRenderer,
        default_exec_timeout: int,
        default_queue_timeout: int,
    ) -> None:
        self.db = db
        self.pools = pools
        self.renderer = renderer
        self.default_exec_timeout = default_exec_timeout
        self.default_queue_timeout = default_queue_timeout

    # -- submit ---------------------------------------------------------------------------

    async def submit(
        self,
        principal: Principal,
        spec_text: str,
        *,
        pool: str | None,
        set_values: dict[str, Any] | None,
        priority: str,
        dry_run: bool,
        encoded: bool = False,
    ) -> dict[str, Any]:
        """The stored workflow, or for a dry run the plan; ``encoded``: the plan's ``groups``
        as a JSON array (``msgspec.Raw``), for an answer that is JSON anyway."""
        if self.limits is not None:  # before any parsing: a refused submission costs nothing
            await self.limits.check(principal, dry_run=dry_run)
        if priority not in PRIORITIES:
            raise Invalid(
                f"priority {priority!r} is not one of HIGH, NORMAL, LOW",
                [SpecIssue("priority", None, "use HIGH, NORMAL or LOW")],
            )
        try:
            # The whole pipeline runs in a capped spec worker, never on the event loop; it
            # also refuses more than GANTRY_MAX_TASKS_PER_WORKFLOW tasks, dry run or not.
            parsed = await asyncio.to_thread(self.renderer.parse, spec_text, set_values)
        except SpecError as exc:
            raise Invalid(exc.detail, exc.issues, title=exc.title) from None
        pool_name = pool or parsed.plan.pool or "default"
        config = await self.pools.get(pool_name)
        allowed = await self.pools.accessible(principal, "workflow:Create")
        names = ", ".join(allowed) or "none"
        if config is None:
            raise Invalid(
                f"pool '{pool_name}' does not exist (your pools: {names})",
                [SpecIssue("pool", None, f"choose one of: {names}")],
            )
        if pool_name not in allowed:
            raise Forbidden(
                f"you may not submit to pool '{pool_name}' (workflow:Create on "
                f"pool/{pool_name}); your pools: {names}"
            )
        default_resources = _pool_resources(config)
        limits = _pool_limit_issues(parsed, pool_name, config)
        await self._check_fit(parsed, pool_name, config, default_resources, limits)
        exec_timeout = parsed.plan.exec_timeout or _default_timeout(
            config.default_exec_timeout, config.max_exec_timeout, self.default_exec_timeout
        )
        queue_timeout = parsed.plan.queue_timeout or _default_timeout(
            config.default_queue_timeout, config.max_queue_timeout, self.default_queue_timeout
        )
        if dry_run:
            name, rendered = parsed.plan.name, parsed.rendered
            # 10,000 tasks take a quarter of a second to lay out: not on the event loop. The
            # thread also holds the last reference to the parsed spec, so that its 200,000
            # objects are freed there too rather than on the loop when this returns.
            box = [parsed]
            del parsed
            groups = await asyncio.to_thread(_plan_groups_of, box, default_resources, encoded)
            return {
                "name": name,
                "pool": pool_name,
                "priority": priority,
                "exec_timeout": exec_timeout,
                "queue_timeout": queue_timeout,
                "groups": groups,
                "rendered_spec": rendered,
            }
        workflow_id = await self._insert(
            principal,
            parsed,
            spec_text,
            pool_name,
            priority,
            set_values or {},
            default_resources,
            exec_timeout,
            queue_timeout,
        )
        # Free the parsed spec's 200,000 objects in a thread, not on the loop (as a dry run).
        box = [parsed]
        del parsed
        await asyncio.to_thread(box.clear)
        return await self.get(principal, workflow_id)

    async def _check_fit(
        self,
        parsed: ParsedSpec,
        pool: str,
        config: PoolConfig,
        default: Resources,
        issues: list[SpecIssue],
    ) -> None:
        """Refuse what no node (or, for a group, no backend) of the pool could ever hold,
        with ``issues`` (the pool's limits the spec passes): every problem in one answer."""
        backends = [b for b in await self.pools.backends([pool])]
        if not backends:
            raise Invalid(
                f"pool '{pool}' has no backends, so nothing submitted to it could run",
                [SpecIssue("pool", None, "choose a pool that has a backend"), *issues],
            )
        # 10,000 tasks to judge: in a thread, not on the event loop.
        issues = issues + await asyncio.to_thread(
            _fit_issues, parsed, pool, config, default, backends
        )
        if issues:
            raise Invalid(
                issues[0].message,
                issues,
                title="The workflow cannot run in this pool",
            )

    @staticmethod
    async def _insert_groups(
        conn: asyncpg.Connection,
        workflow_id: str,
        groups: list[PlannedGroup],
        exec_timeout: int,
        queue_timeout: int,
    ) -> None:
        await conn.execute(
            """
            INSERT INTO task_group (workflow, name, position, status, upstream, lead_task,
                                    ignore_nonlead, barrier, exec_timeout, queue_timeout,
                                    processing_at)
            SELECT $1, n, p, s, string_to_array(u, ',')::int[], l, i, b, $9, $10,
                   CASE WHEN s = 'PROCESSING' THEN now() END
            FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                        $7::bool[], $8::bool[]) AS x(n, p, s, u, l, i, b)
            ORDER BY p
            """,
            workflow_id,
            [g.name for g in groups],
            [g.position for g in groups],
            [_initial(g.upstream) for g in groups],
            [",".join(map(str, g.upstream)) for g in groups],
            [g.lead_task for g in groups],
            [g.ignore_nonlead for g in groups],
            [g.barrier for g in groups],
            exec_timeout,
            queue_timeout,
        )

    @staticmethod
    async def _insert_tasks(
        conn: asyncpg.Connection, workflow_id: str, cols: list[list[Any]]
    ) -> None:
        """First attempts from ``_task_columns``; each finds its group by position."""
        await conn.execute(
            """
            INSERT INTO task (task_group, workflow, name, lead, retry, status, spec, cpu,
                              memory, gpu, storage, platform, processing_at)
            SELECT g.id, $1, n, l, 0, s, sp::jsonb, c, m, gp, st, pf,
                   CASE WHEN s = 'PROCESSING' THEN now() END
            FROM unnest($2::int[], $3::text[], $4::bool[], $5::text[], $6::text[],
                        $7::float8[], $8::bigint[], $9::int[], $10::bigint[], $11::text[])
                 WITH ORDINALITY AS x(p, n, l, s, sp, c, m, gp, st, pf, k)
            JOIN task_group g ON g.workflow = $1 AND g.position = x.p
            ORDER BY x.k
            """,
            workflow_id,
            *cols,
        )

    async def _insert(
        self,
        principal: Principal,
        parsed: ParsedSpec,
        spec_text: str,
        pool: str,
        priority: str,
        set_values: dict[str, Any],
        default: Resources,
        exec_timeout: int,
        queue_timeout: int,
    ) -> str:
        plan = parsed.plan
        async with self.db.transaction() as conn:
            number = await conn.fetchval(
                """
                INSERT INTO workflow_counter (name, last) VALUES ($1, 1)
                ON CONFLICT (name) DO UPDATE SET last = workflow_counter.last + 1
                RETURNING last
                """,
                plan.name,
            )
            workflow_id = f"{plan.name}-{number}"
            await conn.execute(
                """
                INSERT INTO workflow (id, name, owner, pool, priority, priority_rank, status,
                                      spec_text, rendered_spec, set_values, labels,
                                      submitted_at)
                VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', $7, $8, $9::jsonb, $10::jsonb,
                        clock_timestamp())
                """,
                workflow_id,
                plan.name,
                principal.name,
                pool,
                priority,
                PRIORITIES[priority],
                spec_text,
                parsed.rendered,
                _json.encode(set_values).decode(),
                _json.encode(plan.labels).decode(),
            )
            # Groups, tasks and their first events, set-based: the task rows find their group
            # by position, and the events are read from the new task rows, so no id makes a
            # round trip through Python. asyncpg encodes array parameters on the event loop
            # (some 100 ms for 10,000 tasks' columns), so groups and tasks go in batches of
            # _INSERT_BATCH rows: the loop answers other requests between batches.
            for start in range(0, len(plan.groups), _INSERT_BATCH):
                await self._insert_groups(
                    conn, workflow_id, plan.groups[start : start + _INSERT_BATCH],
                    exec_timeout, queue_timeout,
                )  # fmt: skip
            # 10,000 task specs to encode: in a thread, not on the event loop.
            cols = await asyncio.to_thread(_task_columns, plan, default, workflow_id)
            for start in range(0, len(cols[0]), _INSERT_BATCH):
                await self._insert_tasks(
                    conn, workflow_id, [c[start : start + _INSERT_BATCH] for c in cols]
                )
            # The submission's events, as record_events writes them (transitions.py).
            await conn.execute(
                """
                INSERT INTO task_event (task, workflow, status, source, reason, exit_code, at)
                SELECT id, workflow, status, 'submit', NULL, NULL, clock_timestamp()
                FROM task WHERE workflow = $1 ORDER BY id
                """,
                workflow_id,
            )
            await notify(conn, "sched", "wfs", f"wf:{workflow_id}")
        return workflow_id

    # -- read -----------------------------------------------------------------------------

    async def _visible(
        self, conn: asyncpg.Connection, pools: list[str], workflow_id: str
    ) -> asyncpg.Record:
        # `pools` is read before `conn` is taken: a second pooled connection per request
        # would let a burst of requests exhaust the pool and wait on each other forever.
        row = await conn.fetchrow("SELECT * FROM workflow WHERE id = $1", workflow_id)
        if row is None or row["pool"] not in pools:
            raise NotFound(f"workflow '{workflow_id}' does not exist")
        return row

    async def check_visible(self, principal: Principal, workflow_id: str) -> None:
        """NotFound unless ``principal`` may read the workflow."""
        pools = await self.pools.accessible(principal)
        async with self.db.connection() as conn:
            await self._visible(conn, pools, workflow_id)

    async def get(self, principal: Principal, workflow_id: str) -> dict[str, Any]:
        """The workflow without its groups and without ``waiting`` (the list's fields);
        404 unless visible."""
        pools = await self.pools.accessible(principal)
        async with self.db.connection() as conn:
            row = await self._visible(conn, pools, workflow_id)
            return await self._detail(conn, row)

    async def detail_json(self, workflow_id: str) -> bytes | None:
        """The workflow as GET gives it, groups and tasks included, encoded as JSON
        (visibility is checked by callers).

        PostgreSQL builds the groups' JSON: a 10,000-task workflow is then one text value
        instead of 10,000 rows decoded on the event loop and laid out in a thread that holds
        the GIL (16 parallel readers held /healthz at 60 ms p99 that way)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow("SELECT * FROM workflow WHERE id = $1", workflow_id)
            if row is None:
                return None
            head = await self._detail(conn, row)
            head["waiting"] = await why_waiting(conn, row, self.pools.lease_ttl)
            groups = await conn.fetchval(_GROUPS_JSON, workflow_id)
        encoded = _json.encode(msgspec.convert(head, WorkflowHead))
        return b'%s,"groups":%s}' % (encoded[:-1], groups.encode())

    async def detail(self, workflow_id: str, *, timeline: bool = False) -> dict[str, Any] | None:
        """The workflow as GET gives it, and with ``timeline`` its recent events too, for
        live views (visibility is checked by callers)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow("SELECT * FROM workflow WHERE id = $1", workflow_id)
            if row is None:
                return None
            out = await self._detail(conn, row)
            out["waiting"] = await why_waiting(conn, row, self.pools.lease_ttl)
            out["groups"] = await self._groups(conn, workflow_id)
            if timeline:
                out["timeline"] = await self._timeline(conn, workflow_id)
        return out

    async def snapshot(self, workflow_id: str) -> dict[str, Any] | None:
        """The workflow with groups, tasks and its recent events (for the live views)."""
        return await self.detail(workflow_id, timeline=True)

    async def _timeline(
        self, conn: asyncpg.Connection, workflow_id: str, limit: int = 200
    ) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            """
            SELECT e.id, e.at, e.status, e.source, e.reason, e.exit_code, t.name, t.retry
            FROM task_event e JOIN task t ON t.id = e.task
            WHERE e.workflow = $1 ORDER BY e.id DESC LIMIT $2
            """,
            workflow_id,
            limit,
        )
        return [dict(r) for r in rows]

    async def events_page(
        self, workflow_id: str, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` events of the workflow older than event ``before`` (all when None),
        newest first: the earlier pages of a page's timeline (visibility is checked by
        callers)."""
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                """
                SELECT e.id, e.at, e.status, e.source, e.reason, e.exit_code, t.name, t.retry
                FROM task_event e JOIN task t ON t.id = e.task
                WHERE e.workflow = $1 AND ($2::bigint IS NULL OR e.id < $2)
                ORDER BY e.id DESC LIMIT $3
                """,
                workflow_id,
                before,
                limit,
            )
        return [dict(r) for r in rows]

    async def graph(self, workflow_id: str) -> dict[str, Any]:
        """The groups with their upstream and their tasks' names and statuses only: what the
        graph draws, read in two narrow queries (a 10,000-task page must not build every
        task's full row; visibility is checked by callers)."""
        async with self.db.connection() as conn:
            groups = await conn.fetch(
                "SELECT id, name, position, status, upstream FROM task_group "
                "WHERE workflow = $1 ORDER BY position",
                workflow_id,
            )
            tasks = await conn.fetch(
                """
                SELECT DISTINCT ON (name) task_group, name, lead, status
                FROM task WHERE workflow = $1 ORDER BY name, retry DESC
                """,
                workflow_id,
            )
        names = {g["position"]: g["name"] for g in groups}
        by_group: dict[int, list[dict[str, Any]]] = {}
        for t in tasks:
            by_group.setdefault(t["task_group"], []).append(
                {"name": t["name"], "lead": t["lead"], "status": t["status"]}
            )
        out = []
        for g in groups:
            members = by_group.get(g["id"], [])
            if len(members) > 1:
                members.sort(key=lambda t: (not t["lead"], t["name"]))
            out.append(
                {
                    "name": g["name"],
                    "status": g["status"],
                    "upstream": [names[p] for p in g["upstream"]],
                    "tasks": members,
                }
            )
        return {"id": workflow_id, "groups": out}

    async def page_header(
        self, principal: Principal, workflow_id: str, spec_chars: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The workflow (its task totals left at 0: the page counts them from ``graph``) and
        the first ``spec_chars`` characters of its spec as submitted and as rendered, with
        their full lengths: a templated spec renders to a line per task. One read."""
        pools = await self.pools.accessible(principal)
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                """
                SELECT id, name, status, pool, owner, priority, priority_rank, submitted_at,
                       started_at, ended_at, reason, labels, canceled_by,
                       left(spec_text, $2) AS spec, length(spec_text) AS spec_length,
                       left(rendered_spec, $2) AS rendered_spec,
                       length(rendered_spec) AS rendered_spec_length
                FROM workflow WHERE id = $1
                """,
                workflow_id,
                spec_chars,
            )
            if row is None or row["pool"] not in pools:
                raise NotFound(f"workflow '{workflow_id}' does not exist")
            waiting = await why_waiting(conn, row, self.pools.lease_ttl)
        spec = {k: row[k] for k in ("spec", "spec_length", "rendered_spec", "rendered_spec_length")}
        return {**_workflow_out(row, 0, 0), "waiting": waiting}, spec

    async def task_rows(
        self,
        workflow_id: str,
        status: str | None,
        offset: int,
        limit: int,
    ) -> list[dict[str, Any]]:
        """One page of the workflow's latest attempts in the order of the page's task table
        (group position, leads first, then name), optionally of one status (visibility is
        checked by callers; the counts per status come from ``graph``)."""
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                """
                -- Order and page on narrow columns; read the full rows of the page only.
                WITH latest AS (
                    SELECT DISTINCT ON (name) id, task_group, name, lead, status
                    FROM task WHERE workflow = $1 ORDER BY name, retry DESC
                ), ordered AS (
                    SELECT l.id, l.lead, l.name, g.position, g.name AS group_name, l.status,
                           count(*) OVER (PARTITION BY l.task_group) AS group_size
                    FROM latest l JOIN task_group g ON g.id = l.task_group
                ), page AS (
                    SELECT * FROM ordered WHERE $2::text IS NULL OR status = $2
                    ORDER BY position, NOT lead, name COLLATE "C"  -- Python's order too
                    OFFSET $3 LIMIT $4
                )
                SELECT t.id, t.task_group, t.name, t.lead, t.retry, t.status, t.exit_code,
                       t.reason, t.backend, t.node, t.processing_at, t.scheduling_at,
                       t.started_at, t.ended_at, t.spec->>'image' AS image,
                       p.group_name, p.group_size
                FROM page p JOIN task t ON t.id = p.id
                ORDER BY p.position, NOT p.lead, p.name COLLATE "C"
                """,
                workflow_id,
                status,
                offset,
                limit,
            )
        return [
            {
                "group": r["group_name"],
                "task": _task_out(r),
                "lead_shown": r["lead"] and r["group_size"] > 1,
            }
            for r in rows
        ]

    async def resubmit(self, principal: Principal, workflow_id: str) -> dict[str, Any]:
        """Submit the same spec again, with the same values, pool and priority."""
        pools = await self.pools.accessible(principal)
        async with self.db.connection() as conn:
            row = await self._visible(conn, pools, workflow_id)
        return await self.submit(
            principal,
            row["spec_text"],
            pool=row["pool"],
            set_values=msgspec.json.decode(row["set_values"] or "{}") or None,
            priority=row["priority"],
            dry_run=False,
        )

    async def _detail(self, conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
        counts = await conn.fetchrow(
            """
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE status = 'COMPLETED') AS completed
            FROM (SELECT DISTINCT ON (name) status FROM task WHERE workflow = $1
                  ORDER BY name, retry DESC) t
            """,
            row["id"],
        )
        return _workflow_out(row, counts["total"], counts["completed"])

    async def _groups(self, conn: asyncpg.Connection, workflow_id: str) -> list[dict[str, Any]]:
        groups = await conn.fetch(
            """
            SELECT id, name, position, status, upstream, lead_task, reason, backend,
                   processing_at, started_at, ended_at
            FROM task_group WHERE workflow = $1 ORDER BY position
            """,
            workflow_id,
        )
        tasks = await conn.fetch(
            """
            SELECT DISTINCT ON (name) id, task_group, name, lead, retry, status, exit_code,
                   reason, backend, node, processing_at, scheduling_at, started_at, ended_at,
                   spec->>'image' AS image
            FROM task WHERE workflow = $1 ORDER BY name, retry DESC
            """,
            workflow_id,
        )
        # 10,000 tasks take tens of milliseconds to lay out: in a thread, not on the loop
        # (a hostile test's 16 parallel reads of one such workflow held /healthz 3.5 s).
        return await asyncio.to_thread(_assemble_groups, list(groups), list(tasks))

    async def spec_of(self, principal: Principal, workflow_id: str) -> dict[str, Any]:
        """The spec as submitted and as rendered, and the values it was submitted with
        (``set``): what ``gantry workflow resubmit`` posts again."""
        pools = await self.pools.accessible(principal)
        async with self.db.connection() as conn:
            row = await self._visible(conn, pools, workflow_id)
        return {
            "spec": row["spec_text"],
            "rendered_spec": row["rendered_spec"],
            "set": msgspec.json.decode(row["set_values"] or "{}"),
        }

    async def search(
        self,
        principal: Principal,
        filters: WorkflowFilter = NO_FILTER,
        *,
        sort: str = "submitted",
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Workflows newest first (or by start time, or longest first), keyset-paginated.

        A cursor holds the sort key and id of the last row shown; rows inserted meanwhile do
        not shift later pages. For the duration sort it also holds the page's "now", so the
        durations of running workflows do not move between pages.
        """
        check_sort(sort)
        limit = max(1, min(limit, 500))
        now = datetime.now(UTC)
        after = None
        if cursor:
            after, now = _decode_cursor(cursor, sort)
        where, args = await self._filters(principal, filters)
        key = _SORTS[sort]
        if "{now}" in key:
            args.append(now)
            key = key.format(now=f"${len(args)}::timestamptz")
        if after is not None:
            args += [after[0], after[1]]
            where.append(f"({key}, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        sql = f"""
            SELECT w.*, {key} AS sort_key,
                   (SELECT count(DISTINCT name) FROM task t WHERE t.workflow = w.id) AS total,
                   (SELECT count(*) FROM task t WHERE t.workflow = w.id
                      AND t.status = 'COMPLETED') AS completed
            FROM workflow w WHERE {" AND ".join(where)}
            ORDER BY {key} DESC, id DESC LIMIT ${len(args)}
        """  # noqa: S608 - only placeholders and our own sort expressions are interpolated
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql, *args)
        items = [_workflow_out(r, r["total"], r["completed"]) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = _encode_cursor(sort, last["sort_key"], last["id"], now)
        return {"items": items, "next_cursor": next_cursor}

    async def status_counts(
        self, principal: Principal, filters: WorkflowFilter = NO_FILTER
    ) -> dict[str, int]:
        """How many workflows are in each status, under the other filters."""
        where, args = await self._filters(principal, filters.any_status())
        sql = f"SELECT status, count(*) AS n FROM workflow WHERE {' AND '.join(where)} GROUP BY status"  # noqa: S608
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql, *args)
        return {r["status"]: r["n"] for r in rows}

    async def _filters(
        self, principal: Principal, filters: WorkflowFilter
    ) -> tuple[list[str], list[Any]]:
        """The SQL conditions (and their arguments) of ``filters`` within the caller's pools."""
        pools = await self.pools.accessible(principal, "workflow:List")
        where = ["pool = ANY($1::text[])"]
        args: list[Any] = [pools]
        if filters.status:
            statuses = [s.strip().upper() for s in filters.status.split(",") if s.strip()]
            unknown = [s for s in statuses if s not in _STATUSES]
            if unknown:
                raise Invalid(
                    f"status {unknown[0]!r} is not a workflow status",
                    [SpecIssue("status", None, "use one of " + ", ".join(sorted(_STATUSES)))],
                )
            args.append(statuses)
            where.append(f"status = ANY(${len(args)}::text[])")
        if filters.pool:
            args.append(filters.pool)
            where.append(f"pool = ${len(args)}")
        if filters.name:
            args.append(f"%{_escape_like(filters.name)}%")
            where.append(f"id ILIKE ${len(args)}")
        if filters.user:
            args.append(filters.user)
            where.append(f"owner = ${len(args)}")
        for bound, op in ((filters.submitted_after, ">="), (filters.submitted_before, "<")):
            if bound is not None:
                args.append(bound)
                where.append(f"submitted_at {op} ${len(args)}")
        return where, args

    # -- cancel ---------------------------------------------------------------------------

    async def cancel(
        self, principal: Principal, workflow_id: str, reason: str, force: bool
    ) -> dict[str, Any]:
        """End every alive group and attempt of the workflow at once (see ``end_groups``).

        A second cancel while one is under way answers at once with the workflow as it stands:
        it does not queue on the first one's row locks, holding a pooled connection meanwhile.
        """
        pools = await self.pools.accessible(principal)
        async with self.db.transaction() as conn:
            row = await self._visible(conn, pools, workflow_id)
            own = row["owner"] == principal.name
            if not principal.can("workflow:Cancel", pool_resource(row["pool"]), own=own):
                raise Forbidden(
                    "you may not cancel this workflow (workflow:Cancel on "
                    f"pool/{row['pool']}" + (")" if own else ", scope any, for another's)")
                )
            if row["status"] in WORKFLOW_ALIVE and await conn.fetchval(
                # Held until this transaction ends; a (rare) hash collision with another
                # workflow's cancel only makes this one answer early, and it may be repeated.
                "SELECT pg_try_advisory_xact_lock(hashtext('gantry-cancel'), hashtext($1))",
                workflow_id,
            ):
                await lock_workflow(conn, workflow_id)
                text = f"canceled by {principal.name}" + (f": {reason}" if reason else "")
                await conn.execute(
                    "UPDATE workflow SET canceled_by = $2 WHERE id = $1 AND canceled_by IS NULL",
                    workflow_id,
                    principal.name,
                )
                await end_groups(
                    conn, workflow_id, None, Status.FAILED_CANCELED, text, "cancel", force=force
                )
        return await self.get(principal, workflow_id)


# -- helpers --------------------------------------------------------------------------------


# Rows per INSERT of groups or tasks at submission (see _insert).
_INSERT_BATCH = 2000


def _task_columns(plan: Plan, default: Resources, workflow_id: str) -> list[list[Any]]:
    """The plan's tasks as the columns of ``_insert``'s task statement, in plan order."""
    cols: list[list[Any]] = [[] for _ in range(10)]
    group, name, lead, status, spec, cpu, memory, gpu, storage, platform = cols
    for g in plan.groups:
        initial = _initial(g.upstream)
        for t in g.tasks:
            r = _resolved(t.resources, default)
            group.append(g.position)
            name.append(t.name)
            lead.append(t.lead)
            status.append(initial)
            spec.append(_json.encode(_task_spec(t, workflow_id)).decode())
            cpu.append(r.cpu or 0.0)
            memory.append(r.memory or 0)
            gpu.append(r.gpu or 0)
            storage.append(r.storage or 0)
            platform.append(r.platform)
    return cols


def _initial(upstream: list[int]) -> str:
    return Status.WAITING if upstream else Status.PROCESSING


def _pool_resources(config: PoolConfig) -> Resources:
    """What a task without resources gets; its platform is the pool's default platform."""
    r = config.default_resources
    return Resources(
        cpu=r.cpu, gpu=r.gpu, memory=r.memory, storage=r.storage, platform=config.default_platform
    )


def _resolved(asked: Resources | None, default: Resources) -> Resources:
    """A task's resources: its own (or the pool's defaults), on the pool's default platform
    when it names none. Nodes that report no platform are on that platform too."""
    r = asked or default
    if r.platform is None and default.platform is not None:
        return dataclasses.replace(r, platform=default.platform)
    return r


def _default_timeout(pool_default: int | None, pool_max: int | None, service: int) -> int:
    """The pool's default, else the service's, but never past the pool's maximum."""
    chosen = pool_default or service
    return min(chosen, pool_max) if pool_max else chosen


def _pool_limit_issues(parsed: ParsedSpec, pool: str, config: PoolConfig) -> list[SpecIssue]:
    """Where the spec passes the pool's own limits: its timeouts' maxima, its task count."""
    issues = []
    for kind, asked in (("exec", parsed.plan.exec_timeout), ("queue", parsed.plan.queue_timeout)):
        most = getattr(config, f"max_{kind}_timeout")
        if asked is not None and most is not None and asked > most:
            where: Path = ("workflow", "timeout", f"{kind}_timeout")
            issues.append(
                SpecIssue(
                    format_path(where),
                    parsed.loaded.line(where),
                    f"{kind}_timeout {format_duration(asked)} is longer than pool '{pool}' "
                    f"allows ({format_duration(most)}, its max_{kind}_timeout)",
                )
            )
    most_tasks = config.max_tasks_per_workflow
    if most_tasks is not None and parsed.plan.task_count > most_tasks:
        issues.append(
            SpecIssue(
                "workflow",
                parsed.loaded.line(("workflow",)),
                f"the workflow has {parsed.plan.task_count:,} tasks; pool '{pool}' takes at "
                f"most {most_tasks:,} per workflow (its max_tasks_per_workflow)",
            )
        )
    return issues


def _task_spec(task: PlannedTask, workflow_id: str) -> dict[str, Any]:
    """What is stored per attempt: the task with Gantry's tokens substituted."""
    task_uuid = str(uuid.uuid4())

    def sub(value: str) -> str:
        return substitute_tokens(value, workflow_id, task_uuid)

    return {
        "image": task.image,
        "command": [sub(s) for s in task.command],
        "args": [sub(s) for s in task.args],
        "environment": {k: sub(v) for k, v in task.environment.items()},
        "files": [
            {
                "path": f["path"],
                "contents": f["contents"] if f["base64"] else sub(f["contents"]),
                "base64": f["base64"],
            }
            for f in task.files
        ],
        "inputs": task.inputs,
        "uuid": task_uuid,
    }


def _plan_groups_of(
    box: list[ParsedSpec], default: Resources, encoded: bool
) -> list[dict[str, Any]] | msgspec.Raw:
    """``_plan_groups`` of the one spec in ``box``, which it empties (see submit).

    ``encoded``: as one JSON array, each group encoded as soon as it is laid out, so that
    the 100,000 objects of a 10,000-task plan's dicts never live at once (and never become
    old enough for the collector's full passes, which would stall the event loop).
    """
    parsed = box.pop()
    if not encoded:
        return _plan_groups(parsed.plan, default)
    parts = [_json.encode(g) for g in _iter_plan_groups(parsed.plan, default)]
    return msgspec.Raw(b"[" + b",".join(parts) + b"]")


def _plan_groups(plan: Plan, default: Resources) -> list[dict[str, Any]]:
    return list(_iter_plan_groups(plan, default))


def _iter_plan_groups(plan: Plan, default: Resources) -> Iterator[dict[str, Any]]:
    """The dry-run plan's groups (``PlanGroup`` in app/workflows/schemas.py), one by one."""
    names = {g.position: g.name for g in plan.groups}
    for g in plan.groups:
        tasks = []
        for t in g.tasks:
            d = t.as_dict()
            r = _resolved(t.resources, default)
            if t.resources is None or t.resources.platform != r.platform:
                d["resources"] = {
                    "cpu": r.cpu,
                    "gpu": r.gpu,
                    "memory": r.memory,
                    "storage": r.storage,
                    "platform": r.platform,
                }
            tasks.append(d)
        yield {
            "name": g.name,
            "upstream": [names[p] for p in g.upstream],
            "lead": g.lead_task,
            "barrier": g.barrier,
            "ignore_nonlead_status": g.ignore_nonlead,
            "tasks": tasks,
        }


def _amount(r: Resources) -> Amount:
    return Amount(r.cpu or 0, r.memory or 0, r.gpu or 0)


def _shortfalls(r: Resources, nodes: list[dict[str, Any]]) -> list[str]:
    """Why no single node can hold ``r``; empty when one can."""
    if any(_amount(r).fits(Amount.of(n)) for n in nodes):
        return []
    if not nodes:
        return [f"no node has platform '{r.platform or 'default'}'"]
    short = []
    if (r.gpu or 0) > (most := max(n.get("gpu", 0) for n in nodes)):
        short.append(f"gpu: {r.gpu} requested, at most {most} on a node")
    if (r.cpu or 0) > (most_cpu := max(n.get("cpu", 0) for n in nodes)):
        short.append(f"cpu: {r.cpu:g} requested, at most {most_cpu:g} on a node")
    if (r.memory or 0) > (most_mem := max(n.get("memory", 0) for n in nodes)):
        short.append(
            f"memory: {format_bytes(r.memory or 0)} requested, "
            f"at most {format_bytes(most_mem)} on a node"
        )
    return short or ["no single node has all of it at once"]


def _fit_issues(
    parsed: ParsedSpec,
    pool: str,
    config: PoolConfig,
    default: Resources,
    backends: list[dict[str, Any]],
) -> list[SpecIssue]:
    """What no node (or, for a group, no backend) of ``backends`` could ever hold.

    Linear in the tasks: the nodes are grouped by platform and each backend's totals summed
    once, and a task's shortfall is worked out once per distinct resource request.
    """
    issues: list[SpecIssue] = []
    platforms = set(config.platforms)
    spec_tasks = {t.name: t for g in parsed.spec.groups for t in g.tasks}
    reported = [b for b in backends if b["capacity"].get("nodes")]
    nodes_of: dict[str | None, list[dict[str, Any]]] = {}
    for b in reported:
        for n in b["capacity"]["nodes"]:
            nodes_of.setdefault(n.get("platform") or default.platform, []).append(n)
    totals = [room_of(b["capacity"].get("nodes", []), default.platform) for b in reported]
    short_of: dict[Resources, list[str]] = {}
    for group in parsed.plan.groups:
        for task in group.tasks:
            r = _resolved(task.resources, default)
            if r.platform is not None and r.platform not in platforms:
                have = ", ".join(sorted(platforms)) or "none"
                where = _resource_path(spec_tasks[task.name])
                issues.append(
                    SpecIssue(
                        format_path(where),
                        parsed.loaded.line(where),
                        f"task '{task.name}' asks for platform '{r.platform}', which pool "
                        f"'{pool}' does not have (its platforms: {have})",
                    )
                )
                continue
            if not reported:
                continue  # no backend has reported yet: nothing to judge by
            short = short_of.get(r)
            if short is None:
                short = short_of[r] = _shortfalls(r, nodes_of.get(r.platform, []))
            if short:
                where = _resource_path(spec_tasks[task.name])
                issues.append(
                    SpecIssue(
                        format_path(where),
                        parsed.loaded.line(where),
                        f"task '{task.name}' asks for more than any node of pool "
                        f"'{pool}' has: " + "; ".join(short),
                    )
                )
        if reported and not issues:
            short = _group_shortfalls(group, default, reported, totals)
            if short:
                gpath = parsed.spec.groups[group.position].source
                issues.append(
                    SpecIssue(
                        format_path(gpath),
                        parsed.loaded.line(gpath),
                        f"group '{group.name}' runs its {len(group.tasks)} tasks at once and "
                        f"needs more than any backend of pool '{pool}' has: " + "; ".join(short),
                    )
                )
    return issues


def _resource_path(task: TaskSpec) -> Path:
    """Where a refusal of ``task``'s resources points: its resource(s) field, or the task."""
    if task.resource is not None:
        return (*task.source, "resource")
    if task.resources is not None:
        return (*task.source, "resources")
    return task.source


def _group_shortfalls(
    group: PlannedGroup,
    default: Resources,
    backends: list[dict[str, Any]],
    totals: list[dict[str | None, Amount]],
) -> list[str]:
    """Why no backend can hold the whole group at once; empty when one can.

    ``totals`` are what ``backends`` have per platform (``room_of``), summed once for all
    groups.
    """
    need: dict[str | None, Amount] = {}
    for task in group.tasks:
        r = _resolved(task.resources, default)
        need[r.platform] = need.get(r.platform, Amount()) + _amount(r)
    best: list[str] | None = None
    for b, have in zip(backends, totals, strict=True):
        short = []
        slots = b["capacity"].get("slots", 0)
        if len(group.tasks) > slots:
            short.append(f"{len(group.tasks)} tasks, backend '{b['name']}' runs at most {slots}")
        for platform, amount in need.items():
            h = have.get(platform, Amount())
            lacking = amount.short_of(h)
            if "cpu" in lacking:
                short.append(f"cpu: {amount.cpu:g} in total, backend '{b['name']}' has {h.cpu:g}")
            if "memory" in lacking:
                short.append(
                    f"memory: {format_bytes(int(amount.memory))} in total, backend "
                    f"'{b['name']}' has {format_bytes(int(h.memory))}"
                )
            if "gpu" in lacking:
                short.append(f"gpu: {amount.gpu:g} in total, backend '{b['name']}' has {h.gpu:g}")
        if not short:
            return []
        if best is None or len(short) < len(best):
            best = short
    return best or []


def _workflow_out(row: asyncpg.Record, total: int, completed: int) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "pool": row["pool"],
        "user": row["owner"],
        "priority": row["priority"],
        "submitted_at": row["submitted_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "reason": row["reason"],
        "labels": msgspec.json.decode(row["labels"] or "{}"),
        "tasks_total": total,
        "tasks_completed": completed,
        "canceled_by": row["canceled_by"],
        "terminal": row["status"] not in ("PENDING", "RUNNING"),
    }


def _utc(column: str) -> str:
    """A timestamptz as JSON text the way msgspec writes one (RFC 3339 in UTC, ``Z``, the
    microseconds only when there are any), or JSON null."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE to_char({column} AT TIME ZONE 'UTC', "
        f"'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN date_part('microseconds', {column})::int "
        f"% 1000000 = 0 THEN '' ELSE to_char({column} AT TIME ZONE 'UTC', '.US') END || 'Z' END"
    )


# The groups of GET /api/v1/workflows/{id} in position order, each with its tasks' latest
# attempts (lead first, then by name in code point order, as Python sorts), shaped as GroupOut
# and TaskOut; tests/integration/test_workflows_api.py checks it against those structs.
# Tasks are read per group through an index and upstream names from one map of the workflow's
# groups, never joined: a new workflow's rows are not in the planner's statistics yet, and
# with an estimate of 6 rows for 10,000 a join became a nested loop that took 5 s. (Looking
# each upstream name up by index cost 680 ms for 10,000 groups of 20 upstream; the map 160.)
_GROUPS_JSON = f"""
WITH names AS MATERIALIZED (
    SELECT jsonb_object_agg(position::text, name) AS of FROM task_group WHERE workflow = $1
)
SELECT coalesce(json_agg(json_build_object(
    'name', g.name, 'status', g.status,
    'upstream', (
        SELECT coalesce(json_agg((SELECT of FROM names) ->> x.position::text ORDER BY x.ord),
                        '[]'::json)
        FROM unnest(g.upstream) WITH ORDINALITY AS x(position, ord)
    ),
    'lead', g.lead_task, 'reason', g.reason, 'backend', g.backend,
    'started_at', {_utc("g.started_at")}, 'ended_at', {_utc("g.ended_at")},
    'tasks', (
        SELECT coalesce(json_agg(json_build_object(
            'id', t.id, 'name', t.name, 'lead', t.lead, 'status', t.status, 'retry', t.retry,
            'exit_code', t.exit_code, 'reason', t.reason, 'backend', t.backend,
            'node', t.node, 'image', t.spec->>'image',
            'queued_at', {_utc("t.processing_at")}, 'scheduled_at', {_utc("t.scheduling_at")},
            'started_at', {_utc("t.started_at")}, 'ended_at', {_utc("t.ended_at")}
        ) ORDER BY NOT t.lead, t.name COLLATE "C"), '[]'::json)
        FROM (
            SELECT DISTINCT ON (name) * FROM task WHERE task_group = g.id
            ORDER BY name, retry DESC
        ) t
    )
) ORDER BY g.position), '[]'::json)::text
FROM task_group g
WHERE g.workflow = $1
"""  # noqa: S608  (only constant column names are formatted in)


def _assemble_groups(
    groups: list[asyncpg.Record], tasks: list[asyncpg.Record]
) -> list[dict[str, Any]]:
    """A workflow's groups, each with its tasks (its lead first), as the API gives them."""
    names = {g["position"]: g["name"] for g in groups}
    by_group: dict[int, list[dict[str, Any]]] = {}
    for t in tasks:
        by_group.setdefault(t["task_group"], []).append(_task_out(t))
    out = []
    for g in groups:
        members = by_group.get(g["id"], [])
        members.sort(key=lambda t: (not t["lead"], t["name"]))
        out.append(
            {
                "name": g["name"],
                "status": g["status"],
                "upstream": [names[p] for p in g["upstream"]],
                "lead": g["lead_task"],
                "reason": g["reason"],
                "backend": g["backend"],
                "started_at": g["started_at"],
                "ended_at": g["ended_at"],
                "tasks": members,
            }
        )
    return out


def _task_out(t: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": t["id"],
        "name": t["name"],
        "lead": t["lead"],
        "status": t["status"],
        "retry": t["retry"],
        "exit_code": t["exit_code"],
        "reason": t["reason"],
        "backend": t["backend"],
        "node": t["node"],
        "image": t["image"],
        "queued_at": t["processing_at"],
        "scheduled_at": t["scheduling_at"],
        "started_at": t["started_at"],
        "ended_at": t["ended_at"],
        "terminal": t["status"] in TERMINAL,
    }


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Sort keys, newest or longest first; rows that never started sort last.
def check_sort(sort: str) -> None:
    """Refuse an unknown sort, naming the ones there are (before a live list starts, too)."""
    if sort not in _SORTS:
        raise Invalid(
            f"sort {sort!r} is not one of {', '.join(_SORTS)}",
            [SpecIssue("sort", None, f"use {', '.join(_SORTS)}")],
        )


_STATUSES = frozenset(str(s) for s in WorkflowStatus)

_SORTS = {
    "submitted": "submitted_at",
    "started": "coalesce(started_at, 'epoch'::timestamptz)",
    "duration": "extract(epoch FROM coalesce(ended_at, {now}) - coalesce(started_at, {now}))",
}


def _encode_cursor(sort: str, key: Any, workflow_id: str, now: datetime) -> str:
    value = key.isoformat() if isinstance(key, datetime) else str(key)
    raw = msgspec.json.encode([sort, value, workflow_id, now.isoformat()])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_CURSOR_YEARS = (1970, 9000)


def _cursor_time(value: Any) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("not a time this API gives")
    moment = moment.astimezone(UTC)  # OverflowError at the ends of the calendar
    if not _CURSOR_YEARS[0] <= moment.year <= _CURSOR_YEARS[1]:
        raise ValueError("not a time this API gives")
    return moment


def _cursor_number(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or abs(number) > 1e11:  # seconds: some 3,000 years
        raise ValueError("not a duration this API gives")
    return number


def _decode_cursor(cursor: str, sort: str) -> tuple[tuple[Any, str], datetime]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_sort, value, workflow_id, now = msgspec.json.decode(raw)
        if cursor_sort != sort:
            raise ValueError("the cursor belongs to another sort order")
        # A cursor is the client's to send back, so a crafted one must not reach a query with
        # values the database refuses (year 1 at +14:00, an interval past its range: 500s a
        # hostile review found): times are aware and within a plausible range, numbers finite.
        key: Any = _cursor_number(value) if sort == "duration" else _cursor_time(value)
        if not isinstance(workflow_id, str) or len(workflow_id) > 80 or "\x00" in workflow_id:
            raise ValueError("not a workflow id")
        return (key, workflow_id), _cursor_time(now)
    except (ValueError, TypeError, OverflowError, msgspec.DecodeError):
        raise Invalid(
            "cursor is not one this API returned for this sort order",
            [SpecIssue("cursor", None, "pass next_cursor from the previous page")],
        ) from None
