"""Live streams end when their caller's credential or access changes.

A stream (SSE, a followed log) is authorised once, when it opens, and may then stay open for
minutes. Whenever the ``auth`` hint arrives (a role changed, a user was disabled, a token
revoked, a session ended: app/access/service.py), the caller's credential is looked up again;
if it no longer works, or its access is not what it was, the stream is ended. A browser's
EventSource then reconnects and is authorised afresh (or sent to sign in).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from litestar.datastructures import Headers

from app.access.topics import ROLES_TOPIC, user_topic
from app.auth.middleware import bearer_token
from app.auth.oidc import OidcRefused
from app.auth.service import AuthService, Principal, TokenRefused, hash_token
from app.auth.sessions import session_id_of, session_key
from app.db import RESYNC

__all__ = ("until_revoked",)

COALESCE_SECONDS = 0.05


async def until_revoked(scope: Any, principal: Principal, inner: Awaitable[None]) -> None:
    """Run ``inner`` (the stream's response) until it ends or ``principal`` is revoked."""
    state = scope["app"].state
    hub, auth = state.hub, state.auth
    credential = _credential(scope)
    task = asyncio.ensure_future(inner)
    try:
        # Only hints that can concern this caller: a role changed, or this user's credentials
        # or roles did. Another user revoking tokens in a loop costs this stream nothing.
        with hub.subscribe(ROLES_TOPIC, user_topic(principal.name), RESYNC) as sub:
            while True:
                hint = asyncio.ensure_future(sub.get())
                done, _ = await asyncio.wait(
                    {task, hint},
                    timeout=_until_expiry(principal),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                hint.cancel()
                if task in done:
                    break
                if not done:
                    return  # the credential expired: no hint says so (found by attacking it)
                await asyncio.sleep(COALESCE_SECONDS)  # a burst of hints: one check
                sub.drain()
                if not await _still(auth, principal, credential, state):
                    return
        await task  # its result, or its exception
    finally:
        if not task.done():  # ended early: the response stops here
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _until_expiry(principal: Principal) -> float | None:
    """Seconds until the caller's token expires (None: it does not)."""
    if principal.expires_at is None:
        return None
    return max(0.0, (principal.expires_at - datetime.now(UTC)).total_seconds())


def _credential(scope: Any) -> tuple[str, str] | None:
    token = bearer_token(Headers.from_scope(scope))
    if token is not None:
        return ("token", token)
    session_id = session_id_of(scope)
    return ("session", session_id) if session_id else None


async def _still(
    auth: AuthService, principal: Principal, credential: tuple[str, str] | None, state: Any
) -> bool:
    """Does the credential still give this principal the same access?"""
    if credential is None:
        return False
    kind, value = credential
    if kind == "token" and principal.via == "provider-token":
        # The identity provider's access token (app/auth/oidc_bearer.py), verified afresh.
        provider_tokens = getattr(state, "provider_tokens", None)
        if provider_tokens is None:
            return False
        provider_tokens.invalidate()
        try:
            now = await provider_tokens.principal(value)
        except OidcRefused:
            return False
    elif kind == "token":
        auth.forget(hash_token(value))  # the hint may reach us before the cache's listener
        try:
            now = await auth.by_token(value)
        except TokenRefused:
            return False
    else:
        now = await auth.by_session_id(session_key(value))
    return now is not None and now.name == principal.name and now.access == principal.access
