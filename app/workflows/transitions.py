"""State transitions of attempts, groups and workflows, each written once and guarded in SQL.

Every update names the statuses it may leave (``WHERE status = ANY(...)``), so a duplicate or
late report changes nothing. Each change appends a ``task_event`` and queues change hints that
Postgres delivers on commit. Callers hold a transaction (``conn``) for the whole step.

Group rules follow OSMO: the lead decides the group unless ``ignoreNonleadStatus`` is false;
when the lead ends its siblings are stopped; a failed group fails every downstream group with
FAILED_UPSTREAM while independent groups go on.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from app.db import notify
from app.workflows.states import (
    ALIVE,
    TERMINAL,
    UPSTREAM_EXIT,
    WORKFLOW_ALIVE,
    Status,
    is_failure,
)

__all__ = (
    "end_groups",
    "finish_task",
    "lock_group",
    "lock_workflow",
    "record_events",
    "settle_group",
    "settle_workflow",
    "stop_attempt",
    "task_progress",
)

_ALIVE = list(ALIVE)


async def lock_workflow(conn: asyncpg.Connection, workflow_id: str) -> None:
    """Take the workflow's row lock. Every transition locks workflow, then group, then tasks:
    one order everywhere, so concurrent transitions of one workflow cannot deadlock."""
    await conn.execute("SELECT 1 FROM workflow WHERE id = $1 FOR UPDATE", workflow_id)


async def lock_group(conn: asyncpg.Connection, workflow_id: str, group_id: int) -> None:
    """Lock the workflow, then the group (see ``lock_workflow``)."""
    await lock_workflow(conn, workflow_id)
    await conn.execute("SELECT 1 FROM task_group WHERE id = $1 FOR UPDATE", group_id)


async def record_events(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[int, str, str, str | None, int | None]],
    source: str,
) -> None:
    """Append ``(task id, workflow id, status, reason, exit code)`` rows to the event trail,
    and tell the workflows' live views (a task that ended while its siblings ran was shown
    running until its group ended: a review found). PostgreSQL sends a notification repeated
    within one transaction once."""
    if not rows:
        return
    await conn.execute(
        """
        INSERT INTO task_event (task, workflow, status, source, reason, exit_code, at)
        SELECT t, w, s, $4, r, e, clock_timestamp()
        FROM unnest($1::bigint[], $2::text[], $3::text[], $5::text[], $6::int[]) AS x(t, w, s, r, e)
        """,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        source,
        [r[3] for r in rows],
        [r[4] for r in rows],
    )
    await notify(conn, "wfs", *sorted({f"wf:{r[1]}" for r in rows}))


async def task_progress(
    conn: asyncpg.Connection,
    task_id: int,
    status: str,
    at: datetime,
    node: str | None,
    source: str,
) -> bool:
    """INITIALIZING or RUNNING reported for an attempt; False when the guard refused it."""
    if status == Status.INITIALIZING:
        row = await conn.fetchrow(
            """
            UPDATE task SET status = 'INITIALIZING', initializing_at = $2,
                            node = coalesce($3, node)
            WHERE id = $1 AND status = 'SCHEDULING'
            RETURNING workflow, task_group, backend
            """,
            task_id,
            at,
            node,
        )
    else:
        row = await conn.fetchrow(
            """
            UPDATE task SET status = 'RUNNING', started_at = $2,
                            initializing_at = coalesce(initializing_at, $2),
                            node = coalesce($3, node)
            WHERE id = $1 AND status IN ('PROCESSING', 'SCHEDULING', 'INITIALIZING')
              AND started_at IS NULL
            RETURNING workflow, task_group, backend
            """,
            task_id,
            at,
            node,
        )
    if row is None:
        return False
    await record_events(conn, [(task_id, row["workflow"], status, None, None)], source)
    await conn.execute(
        """
        UPDATE task_group SET
            status = CASE WHEN $2 = 'RUNNING' OR status = 'RUNNING' THEN 'RUNNING'
                          ELSE 'INITIALIZING' END,
            started_at = CASE WHEN $2 = 'RUNNING' THEN coalesce(started_at, $3)
                              ELSE started_at END
        WHERE id = $1 AND status IN ('SCHEDULING', 'INITIALIZING', 'RUNNING')
        """,
        row["task_group"],
        status,
        at,
    )
    if status == Status.RUNNING:
        await conn.execute(
            """
            UPDATE workflow SET status = 'RUNNING', started_at = coalesce(started_at, $2)
            WHERE id = $1 AND status = 'PENDING'
            """,
            row["workflow"],
            at,
        )
    await notify(conn, f"wf:{row['workflow']}", "wfs")
    return True


async def finish_task(
    conn: asyncpg.Connection,
    task_id: int,
    status: str,
    at: datetime,
    exit_code: int | None,
    reason: str | None,
    source: str,
    *,
    runner_done: bool,
) -> bool:
    """A terminal status for an attempt, then the group's rules; False if it was already over.

    ``runner_done`` says the runner itself reported the end, so the attempt no longer holds
    capacity there even when the control plane had already ended it (a cancel, a timeout).
    """
    if reason is None and exit_code is not None and 0 < exit_code < 256 and is_failure(status):
        reason = exit_reason(exit_code)  # the task's own reason, not only its group's
    row = await conn.fetchrow(
        """
        UPDATE task SET status = $2, ended_at = $3, exit_code = $4, reason = $5,
                        runner_ended_at = CASE WHEN $6 THEN coalesce(runner_ended_at, now())
                                               ELSE runner_ended_at END
        WHERE id = $1 AND status = ANY($7::text[])
        RETURNING workflow, task_group
        """,
        task_id,
        status,
        at,
        exit_code,
        reason,
        runner_done,
        _ALIVE,
    )
    if runner_done:
        await notify(conn, "sched")  # capacity was freed on that backend
    if row is None:
        if runner_done:
            # Already ended by the control plane (a cancel, a timeout): the runner's report
            # still says how the process ended, such as 143 from a task that trapped SIGTERM.
            ended = await conn.fetchrow(
                """
                UPDATE task SET runner_ended_at = coalesce(runner_ended_at, now()),
                                exit_code = coalesce(exit_code, $2)
                WHERE id = $1 RETURNING workflow
                """,
                task_id,
                exit_code,
            )
            if ended is not None and exit_code is not None:
                await notify(conn, f"wf:{ended['workflow']}")
        return False
    await record_events(conn, [(task_id, row["workflow"], status, reason, exit_code)], source)
    await settle_group(conn, row["task_group"], source)
    return True


async def _stop_alive_tasks(
    conn: asyncpg.Connection,
    where: str,
    args: Sequence[Any],
    status: str,
    reason: str,
    source: str,
    force: bool = False,
    exit_code: int | None = None,
) -> int:
    """End every alive attempt matching ``where``; dispatched ones get a stop request.

    One statement ends the attempts and appends their events, however many there are (a
    cancel of a 10,000-task workflow ships no ids back and forth); one more asks the backends
    that run some of them to stop them.
    """
    n = len(args)
    row = await conn.fetchrow(
        f"""
        WITH stopped AS (
            UPDATE task SET status = ${n + 1}, reason = ${n + 2}, ended_at = now(),
                            exit_code = coalesce(${n + 4}::int, exit_code),
                            stop_requested_at = CASE WHEN launch_seq IS NOT NULL
                                                     THEN coalesce(stop_requested_at, now()) END,
                            stop_force = stop_force OR ${n + 3}
            WHERE {where} AND status = ANY(${n + 5}::text[])
            RETURNING id, workflow, backend, launch_seq
        ), logged AS (
            INSERT INTO task_event (task, workflow, status, source, reason, exit_code, at)
            SELECT id, workflow, ${n + 1}, ${n + 6}, ${n + 2}, ${n + 4}::int, clock_timestamp()
            FROM stopped
        )
        SELECT count(*) AS n,
               array_agg(DISTINCT backend) FILTER (WHERE launch_seq IS NOT NULL
                                                    AND backend IS NOT NULL) AS backends
        FROM stopped
        """,  # noqa: S608 - `where` is one of this module's literals
        *args,
        status,
        reason,
        force,
        exit_code,
        _ALIVE,
        source,
    )
    await notify(conn, *(f"stop:{b}" for b in row["backends"] or ()))
    return int(row["n"])


async def stop_attempt(
    conn: asyncpg.Connection,
    task_id: int,
    group_id: int,
    status: str,
    reason: str,
    source: str,
    exit_code: int | None = None,
) -> bool:
    """End one alive attempt from the control plane's side (a timeout), asking its runner to
    stop it, then apply its group's rules; False if it had ended already. The caller holds
    the workflow's and the group's locks."""
    stopped = await _stop_alive_tasks(
        conn, "id = $1", [task_id], status, reason, source, exit_code=exit_code
    )
    if stopped:
        workflow = await conn.fetchval("SELECT workflow FROM task WHERE id = $1", task_id)
        await notify(conn, "wfs", f"wf:{workflow}")
        await settle_group(conn, group_id, source)
    return bool(stopped)


async def settle_group(conn: asyncpg.Connection, group_id: int, source: str) -> None:
    """Apply the group's rules after one of its attempts ended."""
    group = await conn.fetchrow(
        """
        SELECT id, workflow, name, position, status, lead_task, ignore_nonlead
        FROM task_group WHERE id = $1 FOR UPDATE
        """,
        group_id,
    )
    if group is None or group["status"] in TERMINAL:
        return
    tasks = await _latest_attempts(conn, group_id)
    lead = next((t for t in tasks if t["name"] == group["lead_task"]), None)
    changed = False
    if lead is not None and lead["status"] in TERMINAL:
        if any(t["status"] in ALIVE for t in tasks):
            sibling_status = (
                Status.COMPLETED if lead["status"] == Status.COMPLETED else Status.FAILED
            )
            await _stop_alive_tasks(
                conn,
                "task_group = $1",
                [group_id],
                sibling_status,
                "Lead task finished",
                source,
            )
            changed = True
    elif not group["ignore_nonlead"]:
        failed = next((t for t in tasks if is_failure(t["status"])), None)
        if failed is not None and any(t["status"] in ALIVE for t in tasks):
            await _stop_alive_tasks(
                conn,
                "task_group = $1",
                [group_id],
                Status.FAILED,
                f"Task '{failed['name']}' failed and the group does not ignore non-lead "
                "failures (ignoreNonleadStatus: false)",
                source,
            )
            changed = True
    if changed:
        tasks = await _latest_attempts(conn, group_id)
    if any(t["status"] in ALIVE for t in tasks):
        return
    considered = [lead] if (group["ignore_nonlead"] and lead is not None) else tasks
    status, reason = _aggregate(considered)
    await _end_group(conn, group, status, reason, source)


def _aggregate(tasks: Sequence[asyncpg.Record]) -> tuple[str, str | None]:
    statuses = [t["status"] for t in tasks]
    for special in (
        Status.FAILED_UPSTREAM,
        Status.FAILED_SERVER_ERROR,
        Status.FAILED_PREEMPTED,
        Status.FAILED_EVICTED,
    ):
        if special in statuses:
            first = next(t for t in tasks if t["status"] == special)
            return special, _task_reason(first)
    # The task that failed first is the cause; the others were stopped because of it.
    failed = sorted((t for t in tasks if is_failure(t["status"])), key=lambda t: t["ended_at"])
    if failed:
        kinds = {t["status"] for t in failed}
        status = kinds.pop() if len(kinds) == 1 else Status.FAILED
        return status, _task_reason(failed[0])
    return Status.COMPLETED, None


def exit_reason(code: int) -> str:
    """What an exit code says: 128 + N is how shells report death by signal N."""
    if 128 < code < 128 + 65:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"exited with code {code} (killed by {name})"
    return f"exited with code {code}"


def _task_reason(task: asyncpg.Record) -> str:
    if task["reason"]:
        return f"task '{task['name']}': {task['reason']}"
    if task["exit_code"] is not None:
        return f"task '{task['name']}' exited with code {task['exit_code']}"
    return f"task '{task['name']}' ended {task['status']}"


async def _latest_attempts(conn: asyncpg.Connection, group_id: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """
            SELECT DISTINCT ON (name) id, name, status, exit_code, reason, ended_at
            FROM task WHERE task_group = $1 ORDER BY name, retry DESC
            """,
            group_id,
        )
    )


async def _end_group(
    conn: asyncpg.Connection, group: asyncpg.Record, status: str, reason: str | None, source: str
) -> None:
    ended = await conn.fetch(
        """
        UPDATE task_group SET status = $2, reason = $3, ended_at = now()
        WHERE id = $1 AND status = ANY($4::text[]) RETURNING id, position, name
        """,
        group["id"],
        status,
        reason,
        _ALIVE,
    )
    if ended:
        await _after_groups_ended(conn, group["workflow"], ended, status, source)


async def _after_groups_ended(
    conn: asyncpg.Connection,
    workflow_id: str,
    ended: Sequence[asyncpg.Record],
    status: str,
    source: str,
    *,
    downstream_alive: bool = True,
) -> None:
    """Fail or release the groups downstream of ``ended``, then settle the workflow.

    ``downstream_alive=False`` says no group of the workflow is alive any more (a cancel ended
    them all), so there is nothing downstream to fail or release.
    """
    if downstream_alive:
        if is_failure(status):
            await _fail_downstream(conn, workflow_id, ended, source)
        else:
            await _release_downstream(conn, workflow_id)
    await settle_workflow(conn, workflow_id)


async def _fail_downstream(
    conn: asyncpg.Connection, workflow_id: str, failed: Sequence[asyncpg.Record], source: str
) -> None:
    """Every alive group downstream of ``failed`` (transitively) becomes FAILED_UPSTREAM.

    Two statements, linear in the workflow's groups and edges: one reads the alive groups'
    edges, one updates the groups found downstream (by primary key), and then one more stops
    their attempts. The walk is done here rather than in a recursive CTE: the recursion's
    join of the groups found so far with the edges is planned on estimates (a freshly
    inserted workflow's are far too low), and a nested loop there took 9 s for a 10,000-group
    fan-out; a walk over a dict of children is linear whatever the plan. The walk keeps to
    alive groups: a group that has already ended failed its own downstream groups when it did.
    """
    names = [r["name"] for r in failed]
    upstream = f"'{names[0]}'" if len(names) == 1 else f"'{names[0]}' (and {len(names) - 1} more)"
    reason = f"upstream group {upstream} failed"
    children: dict[int, list[tuple[int, int]]] = {}
    for g in await conn.fetch(
        """
        SELECT id, position, upstream FROM task_group
        WHERE workflow = $1 AND status = ANY($2::text[]) AND cardinality(upstream) > 0
        """,
        workflow_id,
        _ALIVE,
    ):
        for parent in g["upstream"]:
            children.setdefault(parent, []).append((g["position"], g["id"]))
    frontier = [r["position"] for r in failed]
    seen: set[int] = set(frontier)
    found: list[int] = []
    while frontier:
        position = frontier.pop()
        for child, group_id in children.get(position, ()):
            if child not in seen:
                seen.add(child)
                found.append(group_id)
                frontier.append(child)
    if not found:
        return
    downstream = await conn.fetch(
        """
        UPDATE task_group SET status = 'FAILED_UPSTREAM', ended_at = now(), reason = $3
        WHERE workflow = $1 AND id = ANY($2::bigint[]) AND status = ANY($4::text[])
        RETURNING id
        """,
        workflow_id,
        found,
        reason,
        _ALIVE,
    )
    if downstream:
        await _stop_alive_tasks(
            conn,
            "task_group = ANY($1::bigint[])",
            [[r["id"] for r in downstream]],
            Status.FAILED_UPSTREAM,
            reason,
            # The control plane's decision, whoever reported the failure upstream: the page
            # said "by runner" for a task no runner ever saw.
            "scheduler",
            exit_code=UPSTREAM_EXIT,
        )


async def _release_downstream(conn: asyncpg.Connection, workflow_id: str) -> None:
    """Groups whose upstream groups have all completed become ready for dispatch."""
    ready = await conn.fetch(
        """
        UPDATE task_group g SET status = 'PROCESSING', processing_at = now()
        WHERE g.workflow = $1 AND g.status = 'WAITING'
          AND NOT EXISTS (
              SELECT 1 FROM task_group u
              WHERE u.workflow = g.workflow AND u.position = ANY(g.upstream)
                AND u.status <> 'COMPLETED')
        RETURNING g.id
        """,
        workflow_id,
    )
    if not ready:
        return
    rows = await conn.fetch(
        """
        UPDATE task SET status = 'PROCESSING', processing_at = now()
        WHERE task_group = ANY($1::bigint[]) AND status = 'WAITING'
        RETURNING id, workflow
        """,
        [r["id"] for r in ready],
    )
    await record_events(
        conn, [(r["id"], r["workflow"], "PROCESSING", None, None) for r in rows], "scheduler"
    )
    await notify(conn, "sched")


async def settle_workflow(conn: asyncpg.Connection, workflow_id: str) -> None:
    """Derive the workflow's status from its groups once none is alive.

    The groups are counted by status in SQL (one row per status, with its first group by
    position), so settling reads a handful of rows whatever the size of the workflow.
    """
    await notify(conn, f"wf:{workflow_id}", "wfs")
    by_status = {
        r["status"]: r
        for r in await conn.fetch(
            """
            SELECT status, min(position) AS position,
                   (array_agg(name ORDER BY position))[1] AS name,
                   (array_agg(reason ORDER BY position))[1] AS reason
            FROM task_group WHERE workflow = $1 GROUP BY status
            """,
            workflow_id,
        )
    }
    if any(s in ALIVE for s in by_status):
        return
    status = Status.COMPLETED.value
    reason = None
    for first in (
        Status.FAILED_CANCELED,
        Status.FAILED_SERVER_ERROR,
        Status.FAILED_EXEC_TIMEOUT,
        Status.FAILED_QUEUE_TIMEOUT,
    ):
        if first in by_status:
            status = first
            break
    else:
        failed = [s for s in by_status if is_failure(s)]
        kinds = {s for s in failed if s != Status.FAILED_UPSTREAM}
        if failed:
            status = kinds.pop() if len(kinds) == 1 else Status.FAILED
    if is_failure(status):
        failures = [g for s, g in by_status.items() if is_failure(s)]
        culprit = by_status.get(status) or min(failures, key=lambda g: g["position"], default=None)
        if culprit is not None:
            reason = f"group '{culprit['name']}': {culprit['reason'] or culprit['status']}"
    await conn.execute(
        """
        UPDATE workflow SET status = $2, reason = coalesce(reason, $3), ended_at = now()
        WHERE id = $1 AND status = ANY($4::text[])
        """,
        workflow_id,
        status,
        reason,
        list(WORKFLOW_ALIVE),
    )


async def end_groups(
    conn: asyncpg.Connection,
    workflow_id: str,
    group_ids: Sequence[int] | None,
    status: str,
    reason: str,
    source: str,
    *,
    force: bool = False,
) -> int:
    """End alive groups of one workflow at once: ``group_ids``, or every alive one (a cancel).

    A bounded number of statements whatever the size of the workflow, each linear in it: one
    ends the groups, one ends their alive attempts and records the events, one fails the
    groups downstream (not needed when every alive group was ended), one settles the workflow.
    The caller holds the workflow's lock; the groups are locked by the update, then the tasks.
    Returns how many groups were ended.
    """
    ended = await conn.fetch(
        """
        UPDATE task_group SET status = $3, reason = $4, ended_at = now()
        WHERE workflow = $1 AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
          AND status = ANY($5::text[])
        RETURNING id, position, name
        """,
        workflow_id,
        None if group_ids is None else list(group_ids),
        status,
        reason,
        _ALIVE,
    )
    if not ended:
        return 0
    await _stop_alive_tasks(
        conn,
        "task_group = ANY($1::bigint[])",
        [[r["id"] for r in ended]],
        status,
        reason,
        source,
        force,
    )
    await _after_groups_ended(
        conn, workflow_id, ended, status, source, downstream_alive=group_ids is not None
    )
    return len(ended)
