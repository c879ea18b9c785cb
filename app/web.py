"""Helpers shared by the HTML views: page responses with the signed-in user and CSRF token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import MediaType, Request, get
from litestar.datastructures import CacheControlHeader
from litestar.plugins.flash import flash
from litestar.response import File, Template
from litestar.types import Message, Scope
from litestar.utils.scope.state import ScopeState

from app import __version__

__all__ = (
    "CONTENT_SECURITY_POLICY",
    "csrf_token_of",
    "favicon",
    "flash",
    "page",
    "safe_next",
    "security_headers",
    "signed_in",
)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a local path only (an open redirect would let a link send
    people elsewhere after they sign in), else the workflows."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/workflows"


def signed_in(request: Request[Any, Any, Any]) -> Any:
    user = request.scope.get("user")
    return user if getattr(user, "kind", None) == "user" else None


def page(
    request: Request[Any, Any, Any],
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """A full page (or, for an htmx request, the same template: hx-boost swaps the body)."""
    context.setdefault("user", signed_in(request))
    context.setdefault("csrf_token", csrf_token_of(request))
    return Template(
        template_name=template,
        context=context,
        status_code=status_code,
        media_type=MediaType.HTML,
        headers=headers,
    )


def csrf_token_of(request: Request[Any, Any, Any]) -> str:
    """This request's CSRF token, or "" where the CSRF middleware did not run (an unknown path)."""
    token = ScopeState.from_scope(request.scope).csrf_token
    return token if isinstance(token, str) else ""


# -- browser hardening: headers on every response ------------------------------------------

# Scripts and styles come only from /static (every script lives in app/static/app.js, so
# 'self' suffices and an injected <script> or on*= attribute does not run). Style *attributes*
# are allowed: the log view colours 256-colour and true-colour ANSI output with
# style="color:#rrggbb" (app/logs/ansi.py; 16.7 million colours cannot be classes), and a
# style attribute runs no script; <style> elements and style sheets from elsewhere stay
# refused. htmx's own <style> for indicators is switched off in base.html.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; "
    "object-src 'none'"
)
# The OpenAPI explorer (Litestar's Swagger page, at /schema and /schema/swagger) starts Swagger
# UI (vendored under /static) with an inline script; it holds no form of ours, so it alone gets
# a policy that lets that script run.
_SWAGGER_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)
_SWAGGER_PATHS = ("/schema", "/schema/", "/schema/swagger")
_COMMON_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


async def security_headers(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook: runs for every HTTP answer, including the router's 404 and 405."""
    if message["type"] != "http.response.start":
        return
    path = scope.get("path", "")
    policy = _SWAGGER_POLICY if path in _SWAGGER_PATHS else CONTENT_SECURITY_POLICY
    headers = [
        (name, value)
        for name, value in message.get("headers", [])
        if name.lower() not in _OWN_HEADER_NAMES
    ]
    headers.append((b"content-security-policy", policy.encode()))
    headers.extend(_COMMON_HEADERS)
    if path.startswith("/api/v1/"):
        headers.append((b"x-gantry-version", _VERSION))  # the CLI warns when it is older
    message["headers"] = headers


_OWN_HEADER_NAMES = {b"content-security-policy", b"x-gantry-version"} | {
    name for name, _ in _COMMON_HEADERS
}
_VERSION = __version__.encode()

FAVICON = Path(__file__).parent / "static" / "favicon.ico"


@get("/favicon.ico", include_in_schema=False, cache_control=CacheControlHeader(max_age=86400))
async def favicon() -> File:
    """Browsers ask for /favicon.ico on every page; it is public (see PUBLIC_PATHS)."""
    return File(FAVICON, media_type="image/x-icon", content_disposition_type="inline")
