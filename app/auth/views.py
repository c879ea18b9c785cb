"""Sign in and out, and the personal API tokens page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from app.audit.middleware import Note
from app.auth.oidc_views import provider_label
from app.auth.service import AuthService, Principal
from app.auth.sessions import STORE_NAME, PostgresSessionStore, start_session
from app.auth.throttle import Busy, Refused, throttled_password_check
from app.auth.tokens import issue
from app.bounds import id_path, refuse_nul, text_query
from app.errors import Invalid
from app.settings import Settings
from app.web import flash, page, safe_next

__all__ = ("AuthViews",)

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class AuthViews(Controller):
    include_in_schema = False

    @get("/login")
    async def login_form(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        next: str | None = text_query(2000, default=None),
    ) -> Template:
        return _login_page(request, settings, next=safe_next(next), error=None)

    @post("/login", status_code=303)
    async def login(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        note: NamedDependency[Note],
        data: Form,
    ) -> Template | Redirect:
        if not settings.local_login:
            # GANTRY_LOCAL_LOGIN=false: people sign in only through the identity provider.
            return _login_page(
                request,
                settings,
                status_code=403,
                next=safe_next(data.get("next")),
                error="Sign-in with a password is turned off here; use single sign-on.",
            )
        refuse_nul({"username": 200, "next": 2000}, username=data.get("username"),
                   next=data.get("next"))  # fmt: skip
        username = (data.get("username") or "").strip()
        # The audit log names whoever the attempt was for, whether or not it succeeds.
        note.principal, note.via = username, "password"
        principal = await throttled_password_check(request, username, data.get("password") or "")
        if isinstance(principal, Refused):
            return _too_many(request, settings, data, username, principal)
        if isinstance(principal, Busy):
            return _login_page(
                request,
                settings,
                status_code=503,
                headers={"retry-after": "5"},
                next=safe_next(data.get("next")),
                error="Too many sign-ins at once right now; try again in a few seconds.",
                username=username,
            )
        if principal is None:
            return _login_page(
                request,
                settings,
                status_code=401,
                next=safe_next(data.get("next")),
                error="Wrong username or password.",
                username=username,
            )
        start_session(request, principal.name)
        store = request.app.stores.get(STORE_NAME)
        if isinstance(store, PostgresSessionStore):
            await store.delete_expired()
        return Redirect(path=safe_next(data.get("next")), status_code=303)

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()  # the session's row is deleted as this answer is sent
        return Redirect(path="/login", status_code=303)

    @get("/tokens")
    async def tokens(
        self,
        request: Request[Any, Any, Any],
        auth: NamedDependency[AuthService],
        principal: NamedDependency[Principal],
    ) -> Template:
        items = await auth.list_tokens(principal.name)
        return page(request, "auth/tokens.html", tokens=items, created=None)

    @post("/tokens", status_code=200)
    async def create_token(
        self,
        request: Request[Any, Any, Any],
        auth: NamedDependency[AuthService],
        settings: NamedDependency[Settings],
        principal: NamedDependency[Principal],
        note: NamedDependency[Note],
        data: Form,
    ) -> Template:
        refuse_nul({"name": 100, "days": 5}, name=data.get("name"), days=data.get("days"))
        name = (data.get("name") or "").strip() or "token"
        days = (data.get("days") or "").strip()
        if days and not (days.isascii() and days.isdigit()):  # "²".isdigit() is True
            raise Invalid(f"expires in {days!r} days is not a number of days")
        # A life past GANTRY_TOKEN_MAX_LIFETIME is refused by token_expiry, naming the setting.
        asked = datetime.now(UTC) + timedelta(days=int(days)) if days else None
        created = await issue(auth, settings.token_max_lifetime, principal.name, name[:100], asked, None,
                              caller=principal)  # fmt: skip
        note.target = str(created.id)
        items = await auth.list_tokens(principal.name)
        return page(request, "auth/tokens.html", tokens=items, created=created.token)

    @post("/tokens/{token_id:int}/revoke", status_code=303)
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        auth: NamedDependency[AuthService],
        principal: NamedDependency[Principal],
        token_id: int = id_path(),
    ) -> Redirect:
        if await auth.revoke_token(principal.name, token_id):
            flash(request, "The token was revoked.", "good")
        return Redirect(path="/tokens", status_code=303)


def _login_page(
    request: Request[Any, Any, Any],
    settings: Settings,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """The sign-in page: the password form unless GANTRY_LOCAL_LOGIN=false, and "Sign in with
    <provider>" where single sign-on is configured."""
    sso = provider_label(settings.oidc_issuer) if settings.oidc_issuer else None
    return page(request, "auth/login.html", status_code, headers, sso=sso,
                local_login=settings.local_login, **context)  # fmt: skip


def _too_many(
    request: Request[Any, Any, Any],
    settings: Settings,
    data: dict[str, str],
    username: str,
    refused: Refused,
) -> Template:
    """429 with Retry-After, and a page that says when to try again."""
    when = datetime.now(UTC) + timedelta(seconds=refused.retry_after)
    minutes = max(1, -(-refused.retry_after // 60))
    subject = "this account" if refused.which == "account" else "your network address"
    error = (
        f"Too many failed sign-ins for {subject}. Try again in {minutes} minute"
        f"{'s' if minutes != 1 else ''} (after {when:%H:%M} UTC)."
    )
    return _login_page(
        request,
        settings,
        status_code=429,
        headers={"retry-after": str(refused.retry_after)},
        next=safe_next(data.get("next")),
        error=error,
        username=username,
    )
