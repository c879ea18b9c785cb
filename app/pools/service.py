"""Pools and backends: who may use a pool, what its backends can hold, creating them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from app.access.topics import AUTH_TOPIC
from app.auth.service import BACKEND_TOKEN_PREFIX, Principal, hash_token, new_token
from app.db import Database, notify
from app.errors import Conflict, Invalid, NotFound
from app.pools.capacity import CONNECTED, Amount, read_capacity
from app.pools.config import PoolConfig, check_config, read_config
from app.pools.schemas import PoolOut
from app.spec.validate import NAME_RE

__all__ = ("PoolService",)


class PoolService:
    def __init__(self, db: Database, lease_ttl: float, max_tasks: int = 10_000) -> None:
        self.db = db
        self.lease_ttl = lease_ttl
        self.max_tasks = max_tasks  # GANTRY_MAX_TASKS_PER_WORKFLOW: a pool's own may not pass it

    async def accessible(self, principal: Principal, action: str = "workflow:Read") -> list[str]:
        """Names of the pools on which ``principal``'s roles allow ``action`` (app/access)."""
        if principal.kind != "user":
            return []
        async with self.db.connection() as conn:
            rows = await conn.fetch("SELECT name FROM pool ORDER BY name")
        return principal.access.pools(action, [r["name"] for r in rows])

    async def get(self, name: str) -> PoolConfig | None:
        """The pool's configuration (its description included), or None if there is none."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT description, config::text AS config FROM pool WHERE name = $1", name
            )
        if row is None:
            return None
        return _with_description(read_config(row["config"]), row["description"])

    async def summaries(self, principal: Principal, only: str | None = None) -> list[PoolOut]:
        """The pools ``principal`` may list (or only the one named), with their
        configuration, backends and how many groups wait in each."""
        names = await self.accessible(principal, "pool:List")
        if only is not None:
            names = [n for n in names if n == only]
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                """
                SELECT p.name, p.description, p.config::text AS config,
                       (SELECT array_agg(b.name ORDER BY b.name) FROM backend b
                        WHERE b.pool = p.name) AS backends,
                       (SELECT count(*) FROM task_group g JOIN workflow w ON w.id = g.workflow
                        WHERE w.pool = p.name AND g.status = 'PROCESSING') AS queued_groups
                FROM pool p WHERE p.name = ANY($1::text[]) ORDER BY p.name
                """,
                names,
            )
        out = []
        for r in rows:
            config = _with_description(read_config(r["config"]), r["description"])
            fields = msgspec.structs.asdict(config)
            out.append(
                PoolOut(
                    **fields,
                    name=r["name"],
                    backends=list(r["backends"] or []),
                    queued_groups=r["queued_groups"],
                )
            )
        return out

    async def create_pool(
        self,
        name: str,
        description: str = "",
        *,
        config: PoolConfig | None = None,
        exist_ok: bool = False,
    ) -> None:
        if not NAME_RE.match(name):
            raise Invalid(f"pool name {name!r} is not valid: use letters, digits, '-' or '_'")
        config = config or PoolConfig()
        check_config(config, self.max_tasks)
        async with self.db.transaction() as conn:
            created = await conn.fetchval(
                """
                INSERT INTO pool (name, description, config, created_at)
                VALUES ($1, $2, $3::jsonb, now())
                ON CONFLICT (name) DO NOTHING RETURNING name
                """,
                name,
                description or config.description,
                _stored(config),
            )
            if created is None and not exist_ok:
                raise Conflict(f"pool '{name}' already exists")

    async def configure(self, name: str, change: Callable[[PoolConfig], PoolConfig]) -> None:
        """Replace the pool's configuration with ``change`` of it (PUT: a new one; PATCH: the
        fields named), checked, in one transaction; 404 for no such pool."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT description, config::text AS config FROM pool WHERE name = $1 FOR UPDATE",
                name,
            )
            if row is None:
                raise NotFound(f"pool '{name}' does not exist")
            current = _with_description(read_config(row["config"]), row["description"])
            config = change(current)
            check_config(config, self.max_tasks)
            await conn.execute(
                "UPDATE pool SET description = $2, config = $3::jsonb WHERE name = $1",
                name,
                config.description,
                _stored(config),
            )
            await notify(conn, "sched")  # maintenance and limits change what may be dispatched

    async def create_backend(self, name: str, pool: str, token: str | None = None) -> str:
        """Create a backend and return its runner token (shown once)."""
        if not NAME_RE.match(name):
            raise Invalid(f"backend name {name!r} is not valid: use letters, digits, '-' or '_'")
        token = token or new_token(BACKEND_TOKEN_PREFIX)
        async with self.db.transaction() as conn:
            if await conn.fetchval("SELECT 1 FROM pool WHERE name = $1", pool) is None:
                raise NotFound(f"pool '{pool}' does not exist")
            created = await conn.fetchval(
                """
                INSERT INTO backend (name, pool, token_hash, cluster_id, epoch, capacity,
                                     created_at)
                VALUES ($1, $2, $3, '', 0, '{}'::jsonb, now())
                ON CONFLICT (name) DO NOTHING RETURNING name
                """,
                name,
                pool,
                hash_token(token),
            )
            if created is None:
                raise Conflict(f"backend '{name}' already exists")
            await notify(conn, "backends")
        return token

    async def rotate_backend_token(self, name: str, grace: float) -> tuple[str, str]:
        """A new runner token for backend ``name`` (its pool and the token, shown once); the
        current one keeps working for ``grace`` seconds, an older one stops at once."""
        token = new_token(BACKEND_TOKEN_PREFIX)
        async with self.db.transaction() as conn:
            pool = await conn.fetchval(
                """
                UPDATE backend SET previous_token_hash = token_hash, token_hash = $2,
                    previous_valid_until = now() + make_interval(secs => $3)
                WHERE name = $1 RETURNING pool
                """,
                name,
                hash_token(token),
                grace,
            )
            if pool is None:
                raise NotFound(f"backend '{name}' does not exist")
            await notify(conn, AUTH_TOPIC)  # replicas forget the cached tokens
        return pool, token

    async def pool_of_backend(self, name: str) -> str | None:
        async with self.db.connection() as conn:
            return await conn.fetchval("SELECT pool FROM backend WHERE name = $1", name)

    async def set_backend_token(self, name: str, pool: str, token: str) -> None:
        """Create the backend if needed and make ``token`` its runner token (for `gantry dev`)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                """
                INSERT INTO backend (name, pool, token_hash, cluster_id, epoch, capacity,
                                     created_at)
                VALUES ($1, $2, $3, '', 0, '{}'::jsonb, now())
                ON CONFLICT (name) DO UPDATE SET token_hash = EXCLUDED.token_hash
                """,
                name,
                pool,
                hash_token(token),
            )

    async def backends(self, pools: list[str] | None = None) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"""
                SELECT b.name, b.pool, b.last_heartbeat, b.capacity, b.cluster_id,
                       s.id AS session_id, s.runner_version, s.connected_at, s.epoch,
                       {CONNECTED.format(ttl="$2")} AS connected,
                       u.running, u.cpu_used, u.memory_used, u.gpu_used
                FROM backend b
                LEFT JOIN LATERAL (
                    SELECT count(*) FILTER (WHERE t.status IN ('SCHEDULING', 'INITIALIZING',
                                                               'RUNNING')) AS running,
                           coalesce(sum(t.cpu), 0)::float8 AS cpu_used,
                           coalesce(sum(t.memory), 0)::int8 AS memory_used,
                           coalesce(sum(t.gpu), 0)::int8 AS gpu_used
                    FROM task t WHERE t.backend = b.name AND t.runner_ended_at IS NULL
                      AND t.launch_seq IS NOT NULL) u ON true
                LEFT JOIN runner_session s ON s.id = b.session_id AND s.ended_at IS NULL
                WHERE $1::text[] IS NULL OR b.pool = ANY($1::text[])
                ORDER BY b.name
                """,  # noqa: S608  (a constant)
                pools,
                self.lease_ttl,
            )
        out = []
        for r in rows:
            capacity = read_capacity(r["capacity"])
            total = sum((Amount.of(n) for n in capacity["nodes"]), Amount())
            connected = bool(r["connected"])
            out.append(
                {
                    "name": r["name"],
                    "pool": r["pool"],
                    "connected": connected,
                    "last_heartbeat": r["last_heartbeat"],
                    "capacity": capacity,
                    "runner_version": r["runner_version"],
                    "session_id": str(r["session_id"]) if connected else None,
                    "epoch": r["epoch"],
                    "connected_at": r["connected_at"] if connected else None,
                    "running": r["running"] or 0,
                    "cpu_used": float(r["cpu_used"] or 0),
                    "memory_used": int(r["memory_used"] or 0),
                    "gpu_used": int(r["gpu_used"] or 0),
                    "cpu_total": total.cpu,
                    "memory_total": int(total.memory),
                    "gpu_total": int(total.gpu),
                    "slots": capacity.get("slots", 0),
                }
            )
        return out


def _with_description(config: PoolConfig, description: str) -> PoolConfig:
    return msgspec.structs.replace(config, description=description)


def _stored(config: PoolConfig) -> str:
    """The configuration as stored: the description lives in its own column."""
    return msgspec.json.encode(msgspec.structs.replace(config, description="")).decode()
