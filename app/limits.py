"""Per-user limits on what everyone shares: queued workflows, submissions a minute, live streams.

- Queued workflows (``GANTRY_MAX_QUEUED_PER_USER``) and submissions a minute
  (``GANTRY_MAX_SUBMISSIONS_PER_MINUTE``, dry runs included: they cost the same CPU) are counted
  in PostgreSQL, so they hold across replicas: a count on a partial index of the user's alive
  workflows, and one row per user in ``submission_rate`` (a fixed one-minute window, as GitHub's
  API limits are, with ``Retry-After`` saying when the window ends).
- Concurrent streams (``GANTRY_MAX_STREAMS_PER_USER``) are counted per replica in memory: a
  stream lives on one replica, and a count in the database would outlive a replica that died.
  Every handler that answers ``ServerSentEvent``, and every ``Stream`` answered to
  ``follow=true``, takes a slot for as long as it streams (``StreamSlotMiddleware``), so a new
  live endpoint is covered without a line of its own.

Nobody is exempt, administrators included: a runaway script of an admin fills the queue and the
database as much as anyone's; an operator raises or turns off (0) a limit instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import msgspec
from litestar import MediaType, Request, Response
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.response import ServerSentEvent, Stream, Template
from litestar.types import ASGIApp, Receive, Scope, Send

from app.auth.service import Principal
from app.auth.streams import until_revoked
from app.db import Database
from app.errors import DomainError
from app.settings import Settings

__all__ = (
    "LimitExceeded",
    "StreamSlotMiddleware",
    "StreamSlots",
    "SubmissionLimits",
    "limit_exceeded",
)


class LimitExceeded(DomainError):
    """429: a per-user limit was reached; names the limit and the setting that sets it."""

    status_code = 429
    title = "Too many requests"

    def __init__(
        self, detail: str, *, limit: str, setting: str, value: int, retry_after: int | None = None
    ) -> None:
        super().__init__(detail)
        self.limit = limit
        self.setting = setting
        self.value = value
        self.retry_after = retry_after


def limit_exceeded(request: Request[Any, Any, Any], exc: LimitExceeded) -> Response[Any]:
    """The answer to a reached limit: a problem body on /api (and to event streams), a page
    elsewhere; ``Retry-After`` only where the wait is known (the rate window)."""
    headers = {"retry-after": str(exc.retry_after)} if exc.retry_after is not None else {}
    path = request.url.path
    wants_html = "text/html" in request.headers.get("accept", "")
    if path.startswith("/api/") or not wants_html:
        body = {
            "type": "about:blank",
            "title": exc.title,
            "status": 429,
            "detail": exc.detail,
            "limit": exc.limit,
            "setting": exc.setting,
            "value": exc.value,
        }
        return Response(
            msgspec.json.encode(body),
            status_code=429,
            media_type="application/problem+json",
            headers=headers,
        )
    return Template(
        template_name="errors/error.html",
        context={"status": 429, "title": exc.title, "detail": exc.detail},
        status_code=429,
        media_type=MediaType.HTML,
        headers=headers,
    )


class SubmissionLimits:
    """Checked at the start of every submission and dry run, before any parsing."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.max_queued = settings.max_queued_per_user
        self.max_per_minute = settings.max_submissions_per_minute

    async def check(self, principal: Principal, *, dry_run: bool) -> None:
        if self.max_per_minute <= 0 and (dry_run or self.max_queued <= 0):
            return
        async with self.db.connection() as conn:
            if self.max_per_minute > 0:
                # One statement: concurrent submissions on any replica each see their own count.
                count, retry_after = await conn.fetchrow(
                    """
                    INSERT INTO submission_rate (user_name, window_start, submissions)
                    VALUES ($1, date_trunc('minute', now()), 1)
                    ON CONFLICT (user_name) DO UPDATE SET
                      submissions = CASE
                        WHEN submission_rate.window_start = EXCLUDED.window_start
                        THEN submission_rate.submissions + 1 ELSE 1 END,
                      window_start = EXCLUDED.window_start
                    RETURNING submissions,
                      extract(epoch FROM window_start + interval '1 minute' - now())
                    """,
                    principal.name,
                )
                if count > self.max_per_minute:
                    raise LimitExceeded(
                        f"you submitted more than {self.max_per_minute} workflows or dry runs "
                        "within this minute (GANTRY_MAX_SUBMISSIONS_PER_MINUTE); try again in "
                        f"{math.ceil(retry_after)} s",
                        limit="submissions per minute",
                        setting="GANTRY_MAX_SUBMISSIONS_PER_MINUTE",
                        value=self.max_per_minute,
                        retry_after=max(1, math.ceil(retry_after)),
                    )
            if dry_run or self.max_queued <= 0:
                return  # a dry run queues nothing
            # Bounded count on the partial index workflow_owner_alive (the literal statuses
            # must match its predicate). Concurrent submissions may pass it together, so the
            # limit can be exceeded by the submissions in flight at that moment.
            queued = await conn.fetchval(
                """
                SELECT count(*) FROM (
                  SELECT 1 FROM workflow
                  WHERE owner = $1 AND status IN ('PENDING', 'RUNNING') LIMIT $2
                ) alive
                """,
                principal.name,
                self.max_queued,
            )
        if queued >= self.max_queued:
            raise LimitExceeded(
                f"you already have {self.max_queued} workflows that have not ended "
                "(GANTRY_MAX_QUEUED_PER_USER); wait for some to end or cancel them",
                limit="queued workflows",
                setting="GANTRY_MAX_QUEUED_PER_USER",
                value=self.max_queued,
            )


class StreamSlots:
    """Open streams per user on this replica (or, with other words, any work a user may run
    only so many of at once: log searches)."""

    def __init__(
        self,
        limit: int,
        what: str = "live streams open",
        setting: str = "GANTRY_MAX_STREAMS_PER_USER",
        advice: str = "close a page or a log follow first",
        name: str = "concurrent streams",
    ) -> None:
        self.limit = limit
        self.what, self.setting, self.advice, self.name = what, setting, advice, name
        self.open: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, user: str) -> Iterator[None]:
        held = self.open.get(user, 0)
        if self.limit > 0 and held >= self.limit:
            raise LimitExceeded(
                f"you have {held} {self.what} on this server, the most allowed "
                f"({self.setting}); {self.advice}",
                limit=self.name,
                setting=self.setting,
                value=self.limit,
                retry_after=5,
            )
        self.open[user] = held + 1
        try:
            yield
        finally:
            left = self.open[user] - 1
            if left:
                self.open[user] = left
            else:
                del self.open[user]


_TRUE = {"true", "1", "yes", "on", "t", "y"}


def is_stream(scope: Scope) -> bool:
    """Whether the route streams for as long as the client stays: SSE, or a followed log."""
    handler = scope.get("route_handler")
    if handler is None:
        return False
    try:
        answer = handler.parsed_fn_signature.return_type.annotation
    except AttributeError:  # not an HTTP route handler (static files, ASGI mounts)
        return False
    if answer is ServerSentEvent:
        return True
    if answer is Stream:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(v.lower() in _TRUE for v in query.get("follow", ()))
    return False


class StreamSlotMiddleware(ASGIMiddleware):
    """Holds a stream slot of the caller for the whole response: the inner app returns only
    when the stream ended or the client went away (Litestar cancels the stream then)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, slots: StreamSlots) -> None:
        self.slots = slots

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        user = scope.get("user")
        # Runners' own streams are bounded by their sessions, not by this limit.
        if not isinstance(user, Principal) or user.kind != "user" or not is_stream(scope):
            await next_app(scope, receive, send)
            return
        with self.slots.slot(user.name):
            # Ended as soon as the caller's credential or access changes (app/auth/streams.py).
            await until_revoked(scope, user, next_app(scope, receive, send))
