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
import hashlib
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from app.auth.oidc import OidcRefused
from app.auth.service import AuthService, Principal, TokenRefused, hash_token

__all__ = ("until_revoked",)

COALESCE_SECONDS = 0.05
_LOADED = "gantry.session.loaded"  # as app/auth/sessions.py records a loaded session


async def until_revoked(scope: Any, principal: Principal, inner: Awaitable[None]) -> None:
    """Run ``inner`` (the stream's response) until it ends or ``principal`` is revoked."""
    state = scope["app"].state
    hub, auth = state.hub, state.auth
    credential = _credential(scope)
    task = asyncio.ensure_future(inner)
    from app.access.service import ROLES_TOPIC, user_topic  # app.access imports this package
    from app.db import RESYNC

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
                if task in done:
                    hint.cancel()
                    break
                if not done:  # the credential expired: no hint says so (found by attacking it)
                    hint.cancel()
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return
                await asyncio.sleep(COALESCE_SECONDS)  # a burst of hints: one check
                sub.drain()
                if not await _still(auth, principal, credential, state):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return
        await task  # its result, or its exception
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _until_expiry(principal: Principal) -> float | None:
    """Seconds until the caller's token expires (None: it does not)."""
    if principal.expires_at is None:
        return None
    return max(0.0, (principal.expires_at - datetime.now(UTC)).total_seconds())


def _credential(scope: Any) -> tuple[str, str] | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            _, _, token = value.decode("latin-1").partition(" ")
            return ("token", token.strip())
    loaded = scope.get("state", {}).get(_LOADED)
    if loaded:
        return ("session", str(loaded[0]))
    return None


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
        now = await auth.by_session_id(hashlib.sha256(value.encode()).hexdigest())
    return now is not None and now.name == principal.name and now.access == principal.access
