"""Browser sessions kept in PostgreSQL, so that signing out ends a session on every replica.

Litestar's server-side sessions do the cookie handling; two pieces are ours:

- ``PostgresSessionStore``: Litestar ships memory, file, Redis and Valkey stores, none in
  PostgreSQL, which is the one store every Gantry replica already shares. A row is keyed by
  the SHA-256 of the cookie's value (a database leak gives no usable cookie) and names its
  user, so that ``AuthService.end_sessions`` ends every session of a person in one statement.
- ``WebSessionBackend``: Litestar's backend adopts whatever session id the client's cookie
  carries, even one it never issued, stores an empty session (and sets a cookie) for every
  anonymous request, and rewrites the row on every response. Ours issues a fresh id at
  sign-in and for unknown cookies (no fixation), stores nothing for anonymous visitors, and
  writes only when the session changed.

A session lives ``max_age`` seconds from its last change (sign-in, a flash message); expired
rows are removed in small batches at every sign-in (``delete_expired``), which is where rows
are created, so the table stays bounded without a loop of its own.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.session.server_side import (
    ServerSideSessionBackend,
    ServerSideSessionConfig,
)
from litestar.stores.base import Store
from litestar.types import Empty, Message, ScopeSession
from litestar.utils.dataclass import extract_dataclass_items

from app.access.topics import user_topic
from app.db import notify

if TYPE_CHECKING:
    from litestar import Request
    from litestar.connection import ASGIConnection
    from litestar.datastructures import State

__all__ = (
    "SESSION_KEY",
    "SESSION_VIAS",
    "VIA_KEY",
    "PostgresSessionStore",
    "WebSessionConfig",
    "end_sessions_on",
    "session_id_of",
    "session_key",
    "start_session",
)

SESSION_KEY = "user"  # the signed-in user's name in the session's data
VIA_KEY = "via"  # how they signed in: "password" or "oidc" (Principal.via)
SESSION_VIAS = ("password", "oidc")
COOKIE = "gantry_session"
STORE_NAME = "web_sessions"
_LOADED = "gantry.session.loaded"  # (cookie value, stored bytes) of a session found in the store
_NEW_ID = "gantry.session.new_id"  # the id this response will issue
_CLEANUP_BATCH = 1000
SESSIONS_PER_USER = 50  # browsers one person may be signed in with at once
ANONYMOUS_MAX_AGE = 15 * 60  # seconds a session without a signed-in user is kept
SESSION_ID_BYTES = 32  # 256 bits, as Litestar's default


def session_key(session_id: str) -> str:
    """What a session is stored under: the SHA-256 of its cookie's value."""
    return hashlib.sha256(session_id.encode()).hexdigest()


async def end_sessions_on(conn: Any, user: str) -> int:
    """End every browser session of ``user`` in the caller's transaction; how many ended."""
    ended = await conn.fetchval(
        """
        WITH gone AS (DELETE FROM web_session WHERE "user" = $1 RETURNING 1)
        SELECT count(*) FROM gone
        """,
        user,
    )
    return int(ended or 0)


def session_id_of(scope: Any) -> str | None:
    """The id of the session a request came with, if the server knows it."""
    loaded = scope.get("state", {}).get(_LOADED)
    return str(loaded[0]) if loaded else None


def _seconds(value: int | timedelta | None) -> int | None:
    return int(value.total_seconds()) if isinstance(value, timedelta) else value


class PostgresSessionStore(Store):
    """Session rows in ``web_session``; the database comes from the app's state once started."""

    def __init__(self, state: State) -> None:
        self._state = state

    @property
    def _db(self) -> Any:
        return self._state.db

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:  # fmt: skip
        data = value.encode() if isinstance(value, str) else value
        try:
            user = msgspec.json.decode(data).get(SESSION_KEY)
        except (msgspec.DecodeError, AttributeError):
            user = None
        seconds = _seconds(expires_in) or 14 * 24 * 3600
        async with self._db.connection() as conn:
            await conn.execute(
                """
                INSERT INTO web_session (id, "user", data, expires_at)
                VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                ON CONFLICT (id) DO UPDATE
                SET "user" = EXCLUDED."user", data = EXCLUDED.data,
                    expires_at = EXCLUDED.expires_at
                """,
                session_key(key),
                user if isinstance(user, str) else None,
                data,
                float(seconds),
            )
            if isinstance(user, str):
                # A person keeps at most SESSIONS_PER_USER sessions (the oldest end): signing
                # in again and again would otherwise add a row each time for a week.
                await conn.execute(
                    """
                    DELETE FROM web_session WHERE id IN (
                        SELECT id FROM web_session WHERE "user" = $1
                        ORDER BY created_at DESC, id OFFSET $2)
                    """,
                    user,
                    SESSIONS_PER_USER,
                )

    async def replace(self, key: str, value: bytes, expires_in: int | timedelta | None) -> None:
        """Change a session that exists; one ended meanwhile (signed out elsewhere, a password
        change, a disabled user) stays ended rather than being written back by a request of
        it that was still running."""
        seconds = _seconds(expires_in) or 14 * 24 * 3600
        async with self._db.connection() as conn:
            await conn.execute(
                """
                UPDATE web_session SET data = $2, expires_at = now() + make_interval(secs => $3)
                WHERE id = $1
                """,
                session_key(key),
                value,
                float(seconds),
            )

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        async with self._db.connection() as conn:
            if renew_for:
                return await conn.fetchval(
                    """
                    UPDATE web_session SET expires_at = now() + make_interval(secs => $2)
                    WHERE id = $1 AND expires_at > now() RETURNING data
                    """,
                    session_key(key),
                    float(_seconds(renew_for) or 0),
                )
            return await conn.fetchval(
                "SELECT data FROM web_session WHERE id = $1 AND expires_at > now()",
                session_key(key),
            )

    async def delete(self, key: str) -> None:
        async with self._db.transaction() as conn:
            user = await conn.fetchval(
                'DELETE FROM web_session WHERE id = $1 RETURNING "user"', session_key(key)
            )
            if user:
                # A stream this session opened ends (app/auth/streams.py), on every replica.
                await notify(conn, user_topic(user))

    async def delete_all(self) -> None:
        async with self._db.connection() as conn:
            await conn.execute("DELETE FROM web_session")

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        async with self._db.connection() as conn:
            left = await conn.fetchval(
                "SELECT extract(epoch FROM expires_at - now()) FROM web_session"
                " WHERE id = $1 AND expires_at > now()",
                session_key(key),
            )
        return None if left is None else int(left)

    async def delete_expired(self) -> int:
        """Remove up to one batch of expired sessions (short statement, no long locks)."""
        async with self._db.connection() as conn:
            deleted = await conn.fetchval(
                """
                WITH gone AS (
                    DELETE FROM web_session WHERE id IN (
                        SELECT id FROM web_session WHERE expires_at <= now() LIMIT $1
                    ) RETURNING 1
                ) SELECT count(*) FROM gone
                """,
                _CLEANUP_BATCH,
            )
        return int(deleted or 0)


class WebSessionBackend(ServerSideSessionBackend):
    """Server-side sessions that never adopt a client-chosen id (see the module's docstring)."""

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:  # fmt: skip
        session_id = connection.cookies.get(self.config.key)
        if session_id and session_id != "null":
            store = self.config.get_store_from_app(connection.scope["app"])
            data = await self.get(session_id, store=store)
            if data is not None:
                connection.scope["state"][_LOADED] = (session_id, data)
                return self.deserialize_data(data)
        return {}

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        state = connection.scope["state"]
        if new_id := state.get(_NEW_ID):
            return str(new_id)
        if loaded := state.get(_LOADED):
            return str(loaded[0])
        # No cookie, or one this server does not know: a fresh id, never the client's.
        state[_NEW_ID] = self.generate_session_id()
        return str(state[_NEW_ID])

    async def store_in_message(
        self,
        scope_session: ScopeSession,
        message: Message,
        connection: ASGIConnection[Any, Any, Any, Any],
    ) -> None:
        state = connection.scope["state"]
        store = self.config.get_store_from_app(connection.scope["app"])
        headers = MutableScopeHeaders.from_message(message)
        cookie_params = dict(
            extract_dataclass_items(self.config, exclude_none=True, include=Cookie.__dict__.keys())
        )
        loaded: tuple[str, bytes] | None = state.get(_LOADED)
        empty = scope_session is Empty or not scope_session
        rotated = loaded is not None and state.get(_NEW_ID) not in (None, loaded[0])
        if loaded is not None and (empty or rotated):
            await self.delete(loaded[0], store=store)  # signed out, or a new id at sign-in
        if empty:
            if connection.cookies.get(self.config.key):
                gone = Cookie(value="null", key=self.config.key, expires=0, **cookie_params)
                headers.add("Set-Cookie", gone.to_header(header=""))
            return
        data = self.serialize_data(scope_session, connection.scope)
        if loaded is not None and not rotated and loaded[1] == data:
            return  # unchanged: no write, and the browser keeps its cookie
        session_id = self.get_session_id(connection)
        # A session nobody signed in to (a single sign-on under way) lives only minutes, so
        # anonymous visitors starting sign-ins cannot fill the table for a week.
        signed_in = isinstance(scope_session, dict) and bool(scope_session.get(SESSION_KEY))
        lifetime = self.config.max_age if signed_in else ANONYMOUS_MAX_AGE
        if loaded is not None and not rotated and isinstance(store, PostgresSessionStore):
            await store.replace(session_id, data, lifetime)
        else:
            await store.set(session_id, data, expires_in=lifetime)
        headers.add(
            "Set-Cookie",
            Cookie(value=session_id, key=self.config.key, **cookie_params).to_header(header=""),
        )


class WebSessionConfig(ServerSideSessionConfig):
    _backend_class = WebSessionBackend


def start_session(request: Request[Any, Any, Any], username: str, via: str = "password") -> None:
    """Sign ``username`` in on this response, under a session id issued now (no fixation).

    The session the request came with, if any, is deleted when the response is sent, and
    with it whatever it held (a pending single sign-on, for one).
    """
    assert via in SESSION_VIAS
    request.scope["state"][_NEW_ID] = secrets.token_hex(SESSION_ID_BYTES)
    request.set_session({SESSION_KEY: username, VIA_KEY: via})
