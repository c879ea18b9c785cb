"""Identities: people (password, session, personal API tokens) and runners (backend tokens).

Tokens are random strings shown once; only their SHA-256 is stored, so a database leak does not
leak usable tokens. Passwords are hashed with argon2.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.db import Database
from app.settings import Settings

__all__ = (
    "AuthService",
    "Principal",
    "hash_token",
    "new_token",
)

USER_TOKEN_PREFIX = "gnt_"
BACKEND_TOKEN_PREFIX = "gbk_"
_CACHE_SECONDS = 5.0  # a revoked token stops working within this time on every replica
_TOUCH_EVERY = 60.0  # how stale `last_used_at` may get, to avoid a write per request


HASH_QUEUE = 16  # password checks waiting or running before sign-in answers "busy"


def _low_priority() -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


_HASHING = ThreadPoolExecutor(1, "gantry-argon2", initializer=_low_priority)


class SignInBusy(Exception):
    """More password checks are queued than the server runs at once (answered 503)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (``kind="user"``) or a backend's runner (``kind="backend"``)."""

    name: str
    kind: str
    roles: frozenset[str] = field(default_factory=frozenset)
    via: str = "token"  # "token" or "session"

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and "admin" in self.roles


class AuthService:
    """Looks up credentials; the only place that reads or writes users, tokens and hashes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._hasher = PasswordHasher()
        self._cache: dict[str, tuple[float, Principal | None, int | None]] = {}
        self._touched: dict[int, float] = {}
        self._hash_waiting = 0

    async def by_token(self, token: str) -> Principal | None:
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            principal, token_id = hit[1], hit[2]
        else:
            principal, token_id = await self._lookup(digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, principal, token_id)
        if token_id is not None and now - self._touched.get(token_id, -1e9) > _TOUCH_EVERY:
            self._touched[token_id] = now
            async with self.db.connection() as conn:
                await conn.execute(
                    "UPDATE api_token SET last_used_at = now() WHERE id = $1", token_id
                )
        return principal

    async def _lookup(self, digest: str) -> tuple[Principal | None, int | None]:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                """
                SELECT t.id, u.name, u.roles FROM api_token t
                JOIN gantry_user u ON u.name = t."user"
                WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > now())
                """,
                digest,
            )
            if row is not None:
                return Principal(row["name"], "user", frozenset(row["roles"])), row["id"]
            name = await conn.fetchval("SELECT name FROM backend WHERE token_hash = $1", digest)
            if name is not None:
                return Principal(name, "backend"), None
        return None, None

    async def by_session(self, username: str) -> Principal | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT name, roles FROM gantry_user WHERE name = $1", username
            )
        if row is None:
            return None
        return Principal(row["name"], "user", frozenset(row["roles"]), via="session")

    async def check_password(self, username: str, password: str) -> Principal | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT name, roles, password_hash FROM gantry_user WHERE name = $1", username
            )
        stored = row["password_hash"] if row is not None else None
        if stored is None:
            # Spend the same time as a real check, so timing does not tell which part was wrong.
            await self._verify_off_loop(_DUMMY_HASH, password)
            return None
        if not await self._verify_off_loop(stored, password):
            return None
        assert row is not None
        return Principal(row["name"], "user", frozenset(row["roles"]), via="session")

    async def _verify_off_loop(self, stored: str, password: str) -> bool:
        """One argon2 check at a time, in a thread of low priority, and a short queue.

        A check costs about 0.25 s of CPU on 4 threads (argon2's lanes); a flood of sign-ins
        run in the default pool starved the event loop on 2 cores (/healthz 2-4 s, a hostile
        test). Linux gives each thread its own nice value, and argon2's lane threads inherit
        the hashing thread's, so the loop keeps priority; beyond the queue, sign-in is busy.
        """
        if self._hash_waiting >= HASH_QUEUE:
            raise SignInBusy("too many sign-ins at once; try again in a few seconds")
        self._hash_waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(_HASHING, self._verify, stored, password)
        finally:
            self._hash_waiting -= 1

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def hash_password(self, password: str) -> str:
        return self._hasher.hash(password)

    # -- administration -------------------------------------------------------------------

    async def ensure_user(self, name: str, roles: list[str], password: str | None = None) -> None:
        password_hash = self.hash_password(password) if password else None
        async with self.db.transaction() as conn:
            await conn.execute(
                """
                INSERT INTO gantry_user (name, display_name, roles, password_hash, created_at)
                VALUES ($1, $1, $2, $3, now())
                ON CONFLICT (name) DO UPDATE SET
                    roles = (SELECT array_agg(DISTINCT r)
                             FROM unnest(gantry_user.roles || EXCLUDED.roles) r),
                    password_hash = coalesce(EXCLUDED.password_hash, gantry_user.password_hash)
                """,
                name,
                roles,
                password_hash,
            )

    async def set_named_token(self, user: str, name: str, token: str) -> None:
        """Give ``user`` exactly this token under ``name`` (replacing an older one of that name)."""
        async with self.db.transaction() as conn:
            await conn.execute('DELETE FROM api_token WHERE "user" = $1 AND name = $2', user, name)
            await conn.execute(
                """
                INSERT INTO api_token ("user", name, token_hash, scopes, created_at)
                VALUES ($1, $2, $3, '{}', now())
                ON CONFLICT (token_hash) DO UPDATE SET "user" = $1, name = $2
                """,
                user,
                name,
                hash_token(token),
            )
        self._cache.clear()

    async def user_exists(self, name: str) -> bool:
        async with self.db.connection() as conn:
            return bool(await conn.fetchval("SELECT 1 FROM gantry_user WHERE name = $1", name))

    async def create_token(self, user: str, name: str, expires_at: datetime | None = None) -> str:
        token = new_token(USER_TOKEN_PREFIX)
        async with self.db.transaction() as conn:
            await conn.execute(
                """
                INSERT INTO api_token ("user", name, token_hash, scopes, expires_at, created_at)
                VALUES ($1, $2, $3, '{}', $4, now())
                """,
                user,
                name,
                hash_token(token),
                expires_at,
            )
        return token

    async def end_sessions(self, user: str) -> int:
        """End every browser session of ``user`` at once, on every replica (sessions live in
        PostgreSQL); for password changes and disabled users. Returns how many ended."""
        async with self.db.transaction() as conn:
            ended = await conn.fetchval(
                """
                WITH gone AS (DELETE FROM web_session WHERE "user" = $1 RETURNING 1)
                SELECT count(*) FROM gone
                """,
                user,
            )
        return int(ended or 0)

    async def list_tokens(self, user: str) -> list[dict[str, object]]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                """
                SELECT id, name, created_at, last_used_at, expires_at FROM api_token
                WHERE "user" = $1 ORDER BY created_at DESC, id DESC
                """,
                user,
            )
        return [dict(r) for r in rows]

    async def revoke_token(self, user: str, token_id: int) -> bool:
        async with self.db.transaction() as conn:
            deleted = await conn.fetchval(
                'DELETE FROM api_token WHERE id = $1 AND "user" = $2 RETURNING id', token_id, user
            )
        self._cache.clear()
        return deleted is not None

    async def ensure_bootstrap(self, settings: Settings) -> None:
        """Apply GANTRY_BOOTSTRAP_ADMIN_TOKEN / _PASSWORD: an `admin` user with exactly those."""
        if not (settings.bootstrap_admin_token or settings.bootstrap_admin_password):
            return
        await self.ensure_user("admin", ["admin"], settings.bootstrap_admin_password)
        if settings.bootstrap_admin_token:
            await self.set_named_token("admin", "bootstrap", settings.bootstrap_admin_token)


_DUMMY_HASH = PasswordHasher().hash("not a real password " + str(datetime.now(UTC)))
