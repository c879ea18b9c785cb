"""Sign in and out, and the personal API tokens page."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from app.auth.middleware import SESSION_KEY, principal_of
from app.auth.service import AuthService
from app.bounds import id_path, refuse_nul, text_query
from app.web import flash, page

__all__ = ("AuthViews",)

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect would let a link send people elsewhere after login.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/workflows"


class AuthViews(Controller):
    include_in_schema = False

    @get("/login")
    async def login_form(
        self, request: Request[Any, Any, Any], next: str | None = text_query(2000, default=None)
    ) -> Template:
        return page(request, "auth/login.html", next=_safe_next(next), error=None)

    @post("/login", status_code=303)
    async def login(self, request: Request[Any, Any, Any], data: Form) -> Template | Redirect:
        auth: AuthService = request.app.state.auth
        refuse_nul({"username": 200, "next": 2000}, username=data.get("username"),
                   next=data.get("next"))  # fmt: skip
        username = (data.get("username") or "").strip()
        principal = await auth.check_password(username, data.get("password") or "")
        if principal is None:
            return page(
                request,
                "auth/login.html",
                status_code=401,
                next=_safe_next(data.get("next")),
                error="Wrong username or password.",
                username=username,
            )
        request.set_session({SESSION_KEY: principal.name})
        return Redirect(path=_safe_next(data.get("next")), status_code=303)

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect(path="/login", status_code=303)

    @get("/tokens")
    async def tokens(self, request: Request[Any, Any, Any]) -> Template:
        auth: AuthService = request.app.state.auth
        items = await auth.list_tokens(principal_of(request).name)
        return page(request, "auth/tokens.html", tokens=items, created=None)

    @post("/tokens", status_code=200)
    async def create_token(self, request: Request[Any, Any, Any], data: Form) -> Template:
        auth: AuthService = request.app.state.auth
        user = principal_of(request).name
        refuse_nul({"name": 100}, name=data.get("name"))
        name = (data.get("name") or "").strip() or "token"
        token = await auth.create_token(user, name[:100])
        return page(request, "auth/tokens.html", tokens=await auth.list_tokens(user), created=token)

    @post("/tokens/{token_id:int}/revoke", status_code=303)
    async def revoke(self, request: Request[Any, Any, Any], token_id: int = id_path()) -> Redirect:
        auth: AuthService = request.app.state.auth
        if await auth.revoke_token(principal_of(request).name, token_id):
            flash(request, "The token was revoked.", "good")
        return Redirect(path="/tokens", status_code=303)
