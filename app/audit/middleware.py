"""Records every unsafe request (POST, PUT, PATCH, DELETE) in the audit log, refused ones too.

The row is written when the answer starts (``http.response.start``), before its first byte
leaves, and the answer waits for it; a write that fails is logged and the answer goes out as
it was. Streams are not held up: only the start of an answer is waited on, and safe requests
pass straight through.

The middleware sits outside authentication and CSRF so that their refusals (401, 403), which
are raised past every route middleware to the app's exception handler, are recorded as well;
the principal is read from the scope when the answer starts, by when authentication has put
it there. What a row holds is chosen here: the route's action, the path's id, the caller's
name and address, the status. Bodies, query strings, passwords and tokens are never read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.audit.service import AuditService, Event, outcome_of
from app.auth.middleware import RUNNER_PREFIX
from app.auth.service import BACKEND_TOKEN_PREFIX, USER_TOKEN_PREFIX, Principal

__all__ = ("ACTIONS", "NOT_AUDITED", "AuditMiddleware", "Note", "note_of")

log = logging.getLogger("gantry.audit")

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Each unsafe route (method and path template, as Litestar's router names it) and the policy
# action it is recorded as. tests/security/test_audit.py fails for an unsafe route missing
# here, so a new route cannot go unnamed.
ACTIONS = {
    "POST /api/v1/workflows": "workflow:Create",
    "POST /submit": "workflow:Create",
    "POST /workflows/{workflow_id}/resubmit": "workflow:Create",
    "POST /api/v1/workflows/{workflow_id}/cancel": "workflow:Cancel",
    "POST /workflows/{workflow_id}/cancel": "workflow:Cancel",
    "POST /workflows/cancel": "workflow:Cancel",
    "POST /api/v1/users": "user:Admin",
    "PATCH /api/v1/users/{name}": "user:Admin",
    "DELETE /api/v1/users/{name}": "user:Admin",
    "POST /api/v1/users/{name}/tokens": "user:Admin",
    "DELETE /api/v1/users/{name}/tokens/{token_id}": "user:Admin",
    "POST /admin/users": "user:Admin",
    "POST /admin/users/{name}": "user:Admin",
    "PUT /api/v1/roles/{name}": "role:Admin",
    "DELETE /api/v1/roles/{name}": "role:Admin",
    "POST /admin/roles": "role:Admin",
    "POST /admin/roles/{name}/delete": "role:Admin",
    "POST /api/v1/pools": "pool:Admin",
    "PUT /api/v1/pools/{name}": "pool:Admin",
    "PATCH /api/v1/pools/{name}": "pool:Admin",
    "POST /api/v1/backends": "backend:Admin",
    "POST /api/v1/backends/{name}/token": "backend:Admin",
    "POST /api/v1/tokens": "credentials:Token",
    "DELETE /api/v1/tokens/{token_id}": "credentials:Token",
    "POST /tokens": "credentials:Token",
    "POST /tokens/{token_id}/revoke": "credentials:Token",
    "POST /api/v1/me/password": "user:Password",
    "POST /account/password": "user:Password",
    "POST /login": "auth:SignIn",
    "POST /api/v1/auth/token": "auth:SignIn",  # a password for a token (gantry login)
    "POST /logout": "auth:SignOut",
    "POST /api/runner/v1/sessions": "runner:SessionOpen",
}
# A runner's reports: many a second per backend, and what they change is the task's own
# history (task events, logs); the session they belong to is audited when it opens and closes.
NOT_AUDITED = frozenset(
    {
        "POST /api/runner/v1/sessions/{session_id}/events",
        "POST /api/runner/v1/sessions/{session_id}/heartbeat",
        "POST /api/runner/v1/sessions/{session_id}/logs",
    }
)
# Path parameters that name what a request acts on, in the order they are looked for.
_TARGETS = ("workflow_id", "name", "token_id", "session_id")
_NOTE = "gantry.audit"


@dataclass(slots=True)
class Note:
    """What a handler knows better than the route: who tried to sign in, what it created."""

    principal: str | None = None
    via: str | None = None
    target: str | None = None


def note_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Note:
    """This request's note (a throwaway one where the middleware did not run)."""
    note = connection.scope.get(_NOTE)
    return note if isinstance(note, Note) else Note()


def route_key(scope: Scope) -> str:
    return f"{scope.get('method', '')} {scope.get('path_template', '')}"


def _via(scope: Scope, principal: Any) -> str:
    """How the caller authenticated; for one refused before it was known, what it sent."""
    if isinstance(principal, Principal):
        return principal.via
    names = {name for name, _ in scope.get("headers", ())}
    if b"authorization" in names:
        return "token"
    if b"cookie" in names:
        return "cookie"
    return "none"


_SECRET_PREFIXES = (USER_TOKEN_PREFIX, BACKEND_TOKEN_PREFIX)
REFUSALS_PER_MINUTE = 60  # audit rows per minute per address for callers without identity


class _Refusals:
    """Requests refused before anyone was identified, per source address and minute: past
    REFUSALS_PER_MINUTE they are counted and logged once a minute, not written one by one
    (a review wrote 200 rows a second with a made-up token, 8 GB a day, never pruned)."""

    def __init__(self) -> None:
        self.window = 0
        self.counts: dict[str, int] = {}

    def allow(self, source: str) -> bool:
        window = int(time.monotonic() // 60)
        if window != self.window:
            dropped = {a: n - REFUSALS_PER_MINUTE for a, n in self.counts.items()
                       if n > REFUSALS_PER_MINUTE}  # fmt: skip
            for address, n in dropped.items():
                log.warning("audit: %d more refused requests from %s not recorded", n, address)
            self.window, self.counts = window, {}
        if len(self.counts) > 100_000:
            self.counts.clear()
        n = self.counts[source] = self.counts.get(source, 0) + 1
        return n <= REFUSALS_PER_MINUTE


class AuditMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self) -> None:
        self.refusals = _Refusals()

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        key = route_key(scope)
        if scope.get("method") not in UNSAFE or key in NOT_AUDITED:
            await next_app(scope, receive, send)
            return
        note = Note()
        cast("dict[str, Any]", scope)[_NOTE] = note
        recorded = False

        async def audited_send(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self._record(scope, key, note, int(message["status"]))
            await send(message)

        try:
            await next_app(scope, receive, audited_send)
        except Exception as exc:
            # Refused past the route's own exception handler (authentication, CSRF): the
            # app's handler answers after this, so the row is still written first.
            if not recorded:
                recorded = True
                status = getattr(exc, "status_code", 500)
                await self._record(scope, key, note, status if isinstance(status, int) else 500)
            raise

    async def _record(self, scope: Scope, key: str, note: Note, status: int) -> None:
        state = scope["app"].state
        service: AuditService | None = state.get("audit")
        if service is None:  # the lifespan has not run (never so in a served app)
            return
        principal = scope.get("user")
        name = principal.name if isinstance(principal, Principal) else ""
        params = scope.get("path_params") or {}
        target = note.target
        if target is None:
            target = next((str(params[p]) for p in _TARGETS if p in params), "")
        if target.startswith(_SECRET_PREFIXES):
            target = target[:4] + "…"  # a token pasted into a path is not kept
        client = scope.get("client")
        source = client[0] if client else ""
        refused_anonymously = status >= 400 and not isinstance(principal, Principal)
        if refused_anonymously and not self.refusals.allow(source):
            return  # a flood of refusals without identity: counted, not written (_Refusals)
        event = Event(
            principal=note.principal if note.principal is not None else name,
            via=note.via or _via(scope, principal),
            action=ACTIONS.get(key, key),
            target=target,
            source=source,
            outcome=outcome_of(status),
            status=status,
            request=key,
        )
        # Runners' requests never wait on the request pool (app/db.py): theirs go on the reserve.
        on_runner_api = str(scope.get("path", "")).startswith(RUNNER_PREFIX)
        await service.record(event, state.reserve if on_runner_api else None)
