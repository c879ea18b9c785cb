"""Roles and users: the role cache every decision reads, and their administration.

Every change here sends the ``auth`` hint in its transaction; each replica's listener
(``AccessListener``) then forgets its cached roles and tokens, so a role change, a disabled
user or a revoked token takes effect everywhere within the hint's delivery (milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from app.access.policy import Access, Policy
from app.access.topics import AUTH_TOPIC, ROLES_TOPIC, user_topic
from app.auth.sessions import end_sessions_on
from app.db import RESYNC, Database, Hub, notify
from app.errors import Conflict, Invalid, NotFound

__all__ = ("AccessListener", "RoleCache", "RoleService", "UserService")

log = logging.getLogger("gantry.access")

_CACHE_SECONDS = 5.0  # the most a cache lives when the hub is down (no hints arrive)

_policies = msgspec.json.Decoder(list[Policy])


class RoleCache:
    """Every role's policies, read once and kept until a hint says they changed."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._roles: dict[str, tuple[Policy, ...]] | None = None
        self._loaded_at = 0.0
        self._access: dict[frozenset[str], Access] = {}

    def invalidate(self) -> None:
        self._roles = None
        self._access.clear()

    async def access(self, roles: frozenset[str]) -> Access:
        if self._roles is None or time.monotonic() - self._loaded_at > _CACHE_SECONDS:
            await self._load()
        hit = self._access.get(roles)
        if hit is None:
            if len(self._access) > 10_000:  # one per distinct set of roles (tokens carry subsets)
                self._access.clear()
            known = self._roles or {}
            policies = tuple(p for r in sorted(roles) for p in known.get(r, ()))
            hit = self._access[roles] = Access(policies)
        return hit

    async def _load(self) -> None:
        async with self.db.connection() as conn:
            rows = await conn.fetch("SELECT name, policies FROM role")
        roles: dict[str, tuple[Policy, ...]] = {}
        for r in rows:
            try:
                roles[r["name"]] = tuple(_policies.decode(r["policies"]))
            except (msgspec.DecodeError, msgspec.ValidationError):
                # A row written by hand that does not decode grants nothing, and says so.
                log.warning("role %r has policies that do not decode; it grants nothing", r["name"])
                roles[r["name"]] = ()
        self._roles, self._loaded_at = roles, time.monotonic()
        self._access.clear()


class AccessListener:
    """Forgets this replica's cached roles and tokens whenever the ``auth`` hint arrives."""

    def __init__(self, hub: Hub, *caches: Any) -> None:
        self.hub = hub
        self.caches = caches
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gantry-access")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        with self.hub.subscribe(AUTH_TOPIC, RESYNC) as sub:
            while True:
                await sub.get()
                sub.drain()
                for cache in self.caches:
                    cache.invalidate()


_ROLE_SELECT = "SELECT name, description, policies, builtin, updated_at FROM role"
_USER_SELECT = (
    "SELECT name, display_name, kind, roles, disabled,"
    " password_hash IS NOT NULL AS has_password, created_at FROM gantry_user"
)


def _check_policies(policies: list[Policy]) -> None:
    problems = [q for i, p in enumerate(policies) for q in p.problems(f"policies[{i}]")]
    if problems:
        raise Invalid("; ".join(problems))


class RoleService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(_ROLE_SELECT + " ORDER BY name")
        return [_role(r) for r in rows]

    async def get(self, name: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_ROLE_SELECT + " WHERE name = $1", name)
        if row is None:
            raise NotFound(f"there is no role '{name}'")
        return _role(row)

    async def put(self, name: str, description: str, policies: list[Policy]) -> dict[str, Any]:
        """Create the role or replace its description and policies (built-ins included)."""
        _check_policies(policies)
        keeps = Access(tuple(policies))
        if name == "admin" and not (keeps.allows("role:Admin") and keeps.allows("user:Admin")):
            # Found by attacking it: an admin role edited to nothing locked every admin out.
            raise Conflict(
                "the admin role must keep allowing role:Admin and user:Admin on '*', or nobody "
                "could undo this change"
            )
        encoded = msgspec.json.encode(policies).decode()
        async with self.db.transaction() as conn:
            await conn.execute(
                """
                INSERT INTO role (name, description, policies, builtin, created_at, updated_at)
                VALUES ($1, $2, $3::jsonb, false, now(), now())
                ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description,
                    policies = EXCLUDED.policies, updated_at = now()
                """,
                name,
                description,
                encoded,
            )
            await notify(conn, AUTH_TOPIC, ROLES_TOPIC)
        return await self.get(name)

    async def delete(self, name: str) -> None:
        """Delete a role and take it away from every user and token that held it."""
        async with self.db.transaction() as conn:
            builtin = await conn.fetchval("SELECT builtin FROM role WHERE name = $1", name)
            if builtin is None:
                raise NotFound(f"there is no role '{name}'")
            if builtin:
                raise Conflict(f"'{name}' is a built-in role: change its policies instead")
            await conn.execute(
                "UPDATE gantry_user SET roles = array_remove(roles, $1) WHERE $1 = ANY(roles)",
                name,
            )
            await conn.execute(
                "UPDATE api_token SET scopes = array_remove(scopes, $1) WHERE $1 = ANY(scopes)",
                name,
            )
            await conn.execute("DELETE FROM role WHERE name = $1", name)
            await notify(conn, AUTH_TOPIC, ROLES_TOPIC)


def _role(row: Any) -> dict[str, Any]:
    return {
        "name": row["name"],
        "description": row["description"],
        "policies": msgspec.json.decode(row["policies"]),
        "builtin": row["builtin"],
        "updated_at": row["updated_at"],
    }


class UserService:
    """People and service accounts. Passwords are hashed by ``AuthService`` (off the loop)."""

    def __init__(self, db: Database, auth: Any) -> None:
        self.db = db
        self.auth = auth

    async def page(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                _USER_SELECT + " WHERE $1::text IS NULL OR name > $1 ORDER BY name LIMIT $2",
                cursor,
                limit + 1,
            )
        items = [_user(r) for r in rows[:limit]]
        return items, (items[-1]["name"] if len(rows) > limit else None)

    async def get(self, name: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_USER_SELECT + " WHERE name = $1", name)
        if row is None:
            raise NotFound(f"there is no user '{name}'")
        return _user(row)

    async def create(
        self,
        name: str,
        *,
        display_name: str | None = None,
        kind: str = "person",
        roles: list[str] | None = None,
        password: str | None = None,
    ) -> dict[str, Any]:
        roles = ["user"] if roles is None else roles
        if kind == "service" and password is not None:
            raise Invalid("a service account has no password: it signs in only with tokens")
        password_hash = await self.auth.hash_off_loop(password) if password else None
        async with self.db.transaction() as conn:
            await _check_roles(conn, roles)
            created = await conn.fetchval(
                """
                INSERT INTO gantry_user (name, display_name, kind, roles, password_hash,
                                         disabled, created_at)
                VALUES ($1, $2, $3, $4, $5, false, now())
                ON CONFLICT (name) DO NOTHING RETURNING name
                """,
                name,
                display_name or name,
                kind,
                sorted(set(roles)),
                password_hash,
            )
            if created is None:
                raise Conflict(f"user '{name}' already exists")
        return await self.get(name)

    async def update(
        self,
        name: str,
        *,
        roles: list[str] | None = None,
        display_name: str | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> dict[str, Any]:
        password_hash = await self.auth.hash_off_loop(password) if password else None
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT kind FROM gantry_user WHERE name = $1 FOR UPDATE", name
            )
            if row is None:
                raise NotFound(f"there is no user '{name}'")
            if password_hash is not None and row["kind"] == "service":
                raise Invalid("a service account has no password: it signs in only with tokens")
            if roles is not None:
                await _check_roles(conn, roles)
            # Only a change of roles or a disabling can take the last admin away.
            guards_admins = roles is not None or bool(disabled)
            if guards_admins:
                await _lock_admins(conn)
            had = guards_admins and await _has_admin(conn)
            await conn.execute(
                """
                UPDATE gantry_user SET roles = coalesce($2, roles),
                    display_name = coalesce($3, display_name),
                    disabled = coalesce($4, disabled),
                    password_hash = coalesce($5, password_hash)
                WHERE name = $1
                """,
                name,
                sorted(set(roles)) if roles is not None else None,
                display_name,
                disabled,
                password_hash,
            )
            await _keep_an_admin(conn, had)
            if disabled or password_hash is not None:
                # A disabled user, or one whose password changed, is signed out everywhere.
                await end_sessions_on(conn, name)
            if disabled:
                await conn.execute('DELETE FROM api_token WHERE "user" = $1', name)
            await notify(conn, AUTH_TOPIC, user_topic(name))
        return await self.get(name)

    async def delete(self, name: str) -> None:
        """Remove a user who owns no workflow; one who does is disabled instead (its
        workflows keep their owner)."""
        async with self.db.transaction() as conn:
            if await conn.fetchval("SELECT 1 FROM gantry_user WHERE name = $1", name) is None:
                raise NotFound(f"there is no user '{name}'")
            owns = await conn.fetchval("SELECT count(*) FROM workflow WHERE owner = $1", name)
            if owns:
                raise Conflict(
                    f"user '{name}' owns {owns} workflow(s) and cannot be removed; disable it "
                    'instead (PATCH {"disabled": true})'
                )
            await _lock_admins(conn)
            had = await _has_admin(conn)
            await conn.execute("DELETE FROM gantry_user WHERE name = $1", name)
            await _keep_an_admin(conn, had)
            await notify(conn, AUTH_TOPIC, user_topic(name))

    async def change_password(self, name: str, current: str, new: str) -> None:
        """The caller's own password; every browser session of theirs ends."""
        if await self.auth.check_password(name, current) is None:
            raise Invalid("the current password is not right")
        await self.update(name, password=new)


def _user(row: Any) -> dict[str, Any]:
    return {
        "name": row["name"],
        "display_name": row["display_name"],
        "kind": row["kind"],
        "roles": list(row["roles"] or []),
        "disabled": row["disabled"],
        "has_password": row["has_password"],
        "created_at": row["created_at"],
    }


async def _check_roles(conn: Any, roles: list[str]) -> None:
    known = await conn.fetch("SELECT name FROM role WHERE name = ANY($1::text[])", roles)
    missing = sorted(set(roles) - {r["name"] for r in known})
    if missing:
        raise Invalid(f"no such role: {', '.join(missing)} (create it with PUT /api/v1/roles/NAME)")


async def _lock_admins(conn: Any) -> None:
    """Changes that may remove the last admin, one at a time: two admins disabling each other
    at the same moment each saw the other still enabled (found by attacking it)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('gantry-admins'))")


async def _has_admin(conn: Any) -> bool:
    """Is there an enabled user with the admin role who can sign in (a password, a token
    that has not expired, or a provider account)? One without any could undo nothing."""
    return bool(
        await conn.fetchval(
            """
            SELECT 1 FROM gantry_user u WHERE 'admin' = ANY(u.roles) AND NOT u.disabled
              AND (u.password_hash IS NOT NULL OR u.oidc_subject IS NOT NULL
                   OR EXISTS (SELECT 1 FROM api_token t WHERE t."user" = u.name
                              AND (t.expires_at IS NULL OR t.expires_at > now())))
            LIMIT 1
            """
        )
    )


async def _keep_an_admin(conn: Any, had: bool) -> None:
    """Refuse a change that leaves no enabled user holding ``admin`` where there was one:
    nobody could undo it but an operator with the database (``gantry admin grant``)."""
    if had and not await _has_admin(conn):
        raise Conflict("this would leave no enabled user with the admin role")
