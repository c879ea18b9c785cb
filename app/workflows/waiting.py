"""Why a workflow that has not started all its groups is waiting, in words (issue 9).

A workflow in a pool with no runner sat PENDING for its 60-day queue timeout without a word.
This reads the same things the scheduler reads (app/workflows/scheduler.py: the pool's
connected backends, their free capacity, the order of dispatch) and says which one holds the
first waiting group back: upstream groups not done, no runner connected, not enough free
resources (or a group no backend of the pool could ever hold), or other groups first in line.
"""

from __future__ import annotations

import asyncpg

from app.pools.capacity import Amount, BackendRoom, Need
from app.workflows.scheduler import connected_backends, group_needs

__all__ = ("why_waiting",)

_AHEAD_SHOWN = 1000


def _gib(n: float) -> str:
    return f"{max(n, 0) / 2**30:.1f} GiB of memory"


# What a group may need, and how to say an amount of it.
_RESOURCES = (
    ("gpu", lambda v: f"{v:g} GPU"),
    ("cpu", lambda v: f"{v:g} CPU"),
    ("memory", _gib),
)


def _short(need: Need, backends: list[BackendRoom], free: bool) -> str:
    """What a group needs on one platform, against the most a backend has (free, or at all):
    ``2 CPU (free: 0 CPU)``."""
    have = [(b.free if free else b.total).get(need.platform, Amount()) for b in backends]
    than = "free" if free else "the largest backend has"
    parts = [
        f"{say(getattr(need.amount, name))} ({than}: {say(max(getattr(h, name) for h in have))})"
        for name, say in _RESOURCES
        if getattr(need.amount, name)
    ]
    where = f" on platform '{need.platform}'" if need.platform else ""
    return (", ".join(parts) or f"{need.tasks} free slot(s)") + where


async def why_waiting(
    conn: asyncpg.Connection, workflow: asyncpg.Record, lease_ttl: float
) -> str | None:
    """A sentence saying what the workflow's first waiting group waits for, or None when no
    group waits (all started, or the workflow ended)."""
    if workflow["status"] not in ("PENDING", "RUNNING"):
        return None
    groups = await conn.fetch(
        """
        SELECT id, name, position, status, upstream FROM task_group
        WHERE workflow = $1 AND status IN ('PROCESSING', 'WAITING')
        ORDER BY status <> 'PROCESSING', position LIMIT 1
        """,
        workflow["id"],
    )
    if not groups:
        return None
    group = groups[0]
    if group["status"] == "WAITING":
        upstream = await conn.fetch(
            """
            SELECT name FROM task_group WHERE workflow = $1 AND position = ANY($2::int[])
              AND status <> 'COMPLETED' ORDER BY position
            """,
            workflow["id"],
            group["upstream"],
        )
        names = ", ".join(f"'{r['name']}'" for r in upstream) or "its upstream groups"
        return f"group '{group['name']}' waits for {names} to complete"
    pool = workflow["pool"]
    if await conn.fetchval(
        "SELECT coalesce((config ->> 'maintenance')::boolean, false) FROM pool WHERE name = $1",
        pool,
    ):
        return (
            f"pool '{pool}' is in maintenance: nothing new starts there until an admin ends it "
            "(what runs goes on)"
        )
    backends = await connected_backends(conn, pool, lease_ttl)
    if not backends:
        known = await conn.fetchval("SELECT count(*) FROM backend WHERE pool = $1", pool)
        if not known:
            return f"pool '{pool}' has no backend: an admin adds one (gantry admin create-backend)"
        return (
            f"no runner is connected to pool '{pool}': its {known} backend(s) have no live "
            "runner session (see gantry backend list)"
        )
    needs = (await group_needs(conn, [group["id"]]))[group["id"]]
    name = f"group '{group['name']}'"
    if not any(b.fits(needs, free=False) for b in backends):
        lacking = "; ".join(_short(n, backends, free=False) for n in needs)
        return f"no connected backend of pool '{pool}' can ever hold {name}: it needs {lacking}"
    # Counted up to _AHEAD_SHOWN: a pool with 50,000 queued groups cost 20 ms per read.
    ahead = await conn.fetchval(
        f"""
        SELECT count(*) FROM (
            SELECT 1 FROM task_group g JOIN workflow w ON w.id = g.workflow
            WHERE g.status = 'PROCESSING' AND w.pool = $1
              AND (w.priority_rank, w.submitted_at, g.workflow, g.position) < ($2, $3, $4, $5)
            LIMIT {_AHEAD_SHOWN}
        ) ahead
        """,  # noqa: S608  (a constant)
        pool,
        workflow["priority_rank"],
        workflow["submitted_at"],
        workflow["id"],
        group["position"],
    )
    # Groups earlier in the scheduler's order get freed resources first.
    count = f"{ahead}+" if ahead >= _AHEAD_SHOWN else str(ahead)
    queue = (
        f"; {count} group(s) of a higher priority or submitted earlier are ahead of it"
        if ahead
        else ""
    )
    if any(b.fits(needs) for b in backends):
        return f"{name} fits and is next to be dispatched in pool '{pool}'{queue}"
    slots = sum(n.tasks for n in needs)
    if all(b.slots < slots for b in backends):
        running = ", ".join(
            f"'{b.name}' {b.total_slots - b.slots}/{b.total_slots}" for b in backends
        )
        return f"{name} waits for {slots} free slot(s) (attempts / slots: {running}){queue}"
    lacking = "; ".join(_short(n, backends, free=True) for n in needs)
    return f"{name} waits for {lacking}{queue}"
