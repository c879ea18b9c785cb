"""Helpers shared by the HTML views: page responses with the signed-in user and CSRF token."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request
from litestar.plugins.flash import flash
from litestar.response import Template
from litestar.utils.scope.state import ScopeState

__all__ = ("flash", "page", "signed_in")


def signed_in(request: Request[Any, Any, Any]) -> Any:
    user = request.scope.get("user")
    return user if getattr(user, "kind", None) == "user" else None


def page(
    request: Request[Any, Any, Any], template: str, status_code: int = 200, **context: Any
) -> Template:
    """A full page (or, for an htmx request, the same template: hx-boost swaps the body)."""
    context.setdefault("user", signed_in(request))
    context.setdefault("csrf_token", ScopeState.from_scope(request.scope).csrf_token or "")
    return Template(
        template_name=template, context=context, status_code=status_code, media_type=MediaType.HTML
    )
