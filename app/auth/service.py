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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.access.policy import Access
from app.access.topics import AUTH_TOPIC, user_topic
from app.auth.sessions import end_sessions_on
from app.db import Database, notify
from app.errors import Conflict, Invalid, NotFound
from app.settings import Settings

if TYPE_CHECKING:
    from app.access.service import RoleCache

T = TypeVar("T")

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


class TokenRefused(Exception):
    """A token that exists but may not be used now (expired); the message says why."""


class SignInBusy(Exception):
    """More password checks are queued than the server runs at once (answered 503)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (``kind="user"``) or a backend's runner (``kind="backend"``).

    ``roles`` are those in force for this credential (a token may carry a subset of its
    owner's), ``access`` what they allow (app/access/policy.py); ``account`` is ``person``
    or ``service``; ``via`` how the credential was obtained: ``password`` (a local sign-in),
    ``oidc`` (a sign-in through the identity provider), ``token`` (a Gantry token) or
    ``provider-token`` (the provider's own access token, app/auth/oidc_bearer.py).
    """

    name: str
    kind: str
    roles: frozenset[str] = field(default_factory=frozenset)
    via: str = "token"
    access: Access = field(default_factory=Access)
    account: str = "person"
    # For a Gantry token: when it expires, and whether it carries a subset of its owner's roles.
    expires_at: datetime | None = None
    limited: bool = False

    @property
    def is_admin(self) -> bool:
        """Holds the built-in ``admin`` role (what the sandbox asks: app/runner_api)."""
        return self.kind == "user" and "admin" in self.roles

    def can(self, action: str, resource: str = "*", *, own: bool = True) -> bool:
        return self.kind == "user" and self.access.allows(action, resource, own=own)


def token_roles(user_roles: frozenset[str], subset: frozenset[str]) -> frozenset[str]:
    """The roles in force for a token: its subset of its owner's (all of them when it names
    none). An owner holding ``admin`` counts as holding every role."""
    if not subset:
        return user_roles
    return subset if "admin" in user_roles else subset & user_roles


class AuthService:
    """Looks up credentials; the only place that reads or writes users, tokens and hashes."""

    def __init__(self, db: Database, roles: RoleCache | None = None) -> None:
        self.db = db
        self.roles = roles  # None: people get no access (the runner API's own service)
        self.max_tokens = 0  # GANTRY_MAX_TOKENS_PER_USER, set by the app (0: no limit)
        self._hasher = PasswordHasher()
        self._cache: dict[str, tuple[float, Principal | None, int | None]] = {}
        self._touched: dict[int, float] = {}
        self._hash_waiting = 0

    def invalidate(self) -> None:
        """Forget cached tokens (a hint said users, roles or tokens changed)."""
        self._cache.clear()

    def forget(self, digest: str) -> None:
        self._cache.pop(digest, None)

    async def by_session_id(self, key: str) -> Principal | None:
        """The principal of the live session stored under ``key`` (its id's SHA-256)."""
        async with self.db.connection() as conn:
            user = await conn.fetchval(
                'SELECT "user" FROM web_session WHERE id = $1 AND expires_at > now()', key
            )
        return await self.by_session(user) if user else None

    async def _with_access(self, principal: Principal) -> Principal:
        if self.roles is None or principal.kind != "user":
            return principal
        return replace(principal, access=await self.roles.access(principal.roles))

    async def by_token(self, token: str) -> Principal | None:
        """The token's principal; None for an unknown one. Raises ``TokenRefused`` for one
        that exists but expired, so the answer can say so."""
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            principal, token_id = hit[1], hit[2]
            expires = principal.expires_at if principal is not None else None
            if expires is not None and expires <= datetime.now(UTC):
                # To the second, cache or not.
                raise TokenRefused(f"this token expired at {expires.isoformat()}; create a new one")
        else:
            principal, token_id = await self._lookup(digest)
            if principal is not None:
                principal = await self._with_access(principal)
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
                SELECT t.id, t.scopes, t.expires_at, t.expires_at <= now() AS expired,
                       u.name, u.roles, u.kind FROM api_token t
                JOIN gantry_user u ON u.name = t."user"
                WHERE t.token_hash = $1 AND NOT u.disabled
                """,
                digest,
            )
            if row is not None:
                if row["expired"]:
                    # Not cached: the answer is the same every time and costs one query.
                    raise TokenRefused(
                        f"this token expired at {row['expires_at'].isoformat()}; create a new one"
                    )
                roles = token_roles(frozenset(row["roles"]), frozenset(row["scopes"] or ()))
                principal = Principal(row["name"], "user", roles, account=row["kind"],
                                      expires_at=row["expires_at"],
                                      limited=bool(row["scopes"]))  # fmt: skip
                return principal, row["id"]
            name = await conn.fetchval(
                """
                SELECT name FROM backend WHERE token_hash = $1
                   OR (previous_token_hash = $1 AND previous_valid_until > now())
                """,
                digest,
            )
            if name is not None:
                return Principal(name, "backend"), None
        return None, None

    async def by_session(self, username: str, via: str = "password") -> Principal | None:
        """The principal of a signed-in user; ``via`` as the session (or the provider token)
        says it was obtained."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT name, roles, kind FROM gantry_user WHERE name = $1 AND NOT disabled",
                username,
            )
        if row is None:
            return None
        principal = Principal(row["name"], "user", frozenset(row["roles"]), via=via,
                              account=row["kind"])  # fmt: skip
        return await self._with_access(principal)

    async def check_password(self, username: str, password: str) -> Principal | None:
        async with self.db.connection() as conn:
            # Service accounts have no password, and disabled users may not sign in.
            row = await conn.fetchrow(
                "SELECT name, roles, kind, password_hash FROM gantry_user"
                " WHERE name = $1 AND NOT disabled AND kind = 'person'",
                username,
            )
        stored = row["password_hash"] if row is not None else None
        if stored is None:
            # Spend the same time as a real check, so timing does not tell which part was wrong.
            await self._verify_off_loop(_DUMMY_HASH, password)
            return None
        if not await self._verify_off_loop(stored, password):
            return None
        assert row is not None
        principal = Principal(row["name"], "user", frozenset(row["roles"]), via="password")
        return await self._with_access(principal)

    async def _verify_off_loop(self, stored: str, password: str) -> bool:
        """One argon2 check at a time, in a thread of low priority, and a short queue.

        A check costs about 0.25 s of CPU on 4 threads (argon2's lanes); a flood of sign-ins
        run in the default pool starved the event loop on 2 cores (/healthz 2-4 s, a hostile
        test). Linux gives each thread its own nice value, and argon2's lane threads inherit
        the hashing thread's, so the loop keeps priority; beyond the queue, sign-in is busy.
        """
        return await self._hashing(self._verify, stored, password)

    async def _hashing(self, fn: Callable[..., T], *args: str) -> T:
        """``fn(*args)`` in the hashing thread, or SignInBusy past its queue."""
        if self._hash_waiting >= HASH_QUEUE:
            raise SignInBusy("too many password checks at once; try again in a few seconds")
        self._hash_waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(_HASHING, fn, *args)
        finally:
            self._hash_waiting -= 1

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def hash_password(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash_off_loop(self, password: str) -> str:
        """``hash_password`` in the hashing thread (see ``_verify_off_loop``)."""
        return await self._hashing(self._hasher.hash, password)

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
            await notify(conn, AUTH_TOPIC, user_topic(name))  # its roles may have grown

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
        return (await self.issue_token(user, name, expires_at))[1]

    async def issue_token(
        self,
        user: str,
        name: str,
        expires_at: datetime | None = None,
        roles: list[str] | None = None,
    ) -> tuple[int, str]:
        """A new token of ``user`` (its id and value, shown once). ``roles``: the subset of the
        owner's roles it carries (none: all of them); one the owner does not hold is refused."""
        token = new_token(USER_TOKEN_PREFIX)
        subset = sorted(set(roles or ()))
        async with self.db.transaction() as conn:
            # The row lock makes concurrent creations of one user count one after another.
            held = await conn.fetchval(
                "SELECT roles FROM gantry_user WHERE name = $1 FOR UPDATE", user
            )
            if held is None:
                raise NotFound(f"there is no user '{user}'")
            count = await conn.fetchval('SELECT count(*) FROM api_token WHERE "user" = $1', user)
            if self.max_tokens and count >= self.max_tokens:
                raise Conflict(
                    f"{user} already has {count} tokens, the most one may hold "
                    "(GANTRY_MAX_TOKENS_PER_USER); revoke some first"
                )
            extra = sorted(set(subset) - set(held)) if "admin" not in held else []
            if extra:
                raise Invalid(f"a token may carry only its owner's roles, not: {', '.join(extra)}")
            token_id = await conn.fetchval(
                """
                INSERT INTO api_token ("user", name, token_hash, scopes, expires_at, created_at)
                VALUES ($1, $2, $3, $4, $5, now()) RETURNING id
                """,
                user,
                name,
                hash_token(token),
                subset,
                expires_at,
            )
        return int(token_id), token

    async def end_sessions(self, user: str) -> int:
        """End every browser session of ``user`` at once, on every replica (sessions live in
        PostgreSQL); for password changes and disabled users. Returns how many ended."""
        async with self.db.transaction() as conn:
            return await end_sessions_on(conn, user)

    async def list_tokens(self, user: str) -> list[dict[str, object]]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                """
                SELECT id, name, coalesce(scopes, '{}') AS roles, created_at, last_used_at, expires_at
                FROM api_token
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
            # Every replica forgets the token; the user's open streams end (app/access).
            await notify(conn, AUTH_TOPIC, user_topic(user))
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
