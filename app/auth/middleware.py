"""Authentication middleware, guards, and CSRF that exempts Bearer-token requests.

Every request needs an identity except health checks, static files, the sign-in pages and
``GET /api/v1/auth/config``. A Bearer token decides on its own (a cookie is ignored then):
a Gantry token (``gnt_``, ``gbk_``), or, where single sign-on is configured, the identity
provider's JWT access token (app/auth/oidc_bearer.py); otherwise the session cookie does. A
backend token is good only under /api/runner/v1; a person's credentials never are.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import Guard, Receive, Scope, Send

from app.auth.oidc import OidcRefused, looks_like_jwt
from app.auth.oidc_bearer import ProviderTokens
from app.auth.service import (
    BACKEND_TOKEN_PREFIX,
    USER_TOKEN_PREFIX,
    AuthService,
    Principal,
    TokenRefused,
)
from app.auth.sessions import SESSION_KEY, SESSION_VIAS, VIA_KEY
from app.errors import Forbidden

__all__ = (
    "PUBLIC_PATHS",
    "SESSION_KEY",
    "BearerExemptCSRFMiddleware",
    "GantryAuthMiddleware",
    "allowed",
    "principal_of",
    "require",
)

PUBLIC_PATHS = [
    "^/healthz$",
    "^/readyz$",
    "^/static/",
    "^/login$",
    "^/favicon.ico$",
    "^/api/v1/auth/config$",
    "^/api/v1/auth/token$",
    "^/api/v1/version$",
    "^/auth/oidc/login$",
    "^/auth/oidc/callback$",
]
RUNNER_PREFIX = "/api/runner/v1"


def bearer_token(headers: Any) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""  # present but not a usable bearer token: refuse, do not fall back to cookies
    return token.strip()


class GantryAuthMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the caller to a ``Principal`` on ``request.user``."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        on_runner_api = connection.scope["path"].startswith(RUNNER_PREFIX)
        # Runners are looked up on the reserve pool, which requests cannot exhaust (app/db.py).
        state = connection.app.state
        auth: AuthService = state.runner_auth if on_runner_api else state.auth
        token = bearer_token(connection.headers)
        principal: Principal | None = None
        if token is not None:
            # Gantry's own tokens keep their path; a JWT is the identity provider's access
            # token, and only people present those (never on the runner API).
            provider_tokens: ProviderTokens | None = getattr(state, "provider_tokens", None)
            if (
                on_runner_api
                or token.startswith((USER_TOKEN_PREFIX, BACKEND_TOKEN_PREFIX))
                or not looks_like_jwt(token)
            ):
                provider_tokens = None
            try:
                if provider_tokens is not None:
                    principal = await provider_tokens.principal(token)
                else:
                    principal = await auth.by_token(token) if token else None
            except (TokenRefused, OidcRefused) as exc:
                raise NotAuthorizedException(str(exc)) from None
        else:
            session = connection.scope.get("session") or {}
            if not isinstance(session, dict):
                session = {}
            username = session.get(SESSION_KEY)
            if username:
                via = session.get(VIA_KEY)
                principal = await auth.by_session(
                    username, via if via in SESSION_VIAS else "password"
                )
        if principal is None:
            raise NotAuthorizedException(
                "Sign in, or send a valid token as 'Authorization: Bearer <token>'"
            )
        if principal.kind == "backend" and not on_runner_api:
            raise PermissionDeniedException("A backend token is only valid on the runner API")
        if principal.kind == "user" and on_runner_api:
            raise PermissionDeniedException("The runner API takes a backend token")
        return AuthenticationResult(user=principal, auth=principal.via)


class BearerExemptCSRFMiddleware(CSRFMiddleware):
    """Litestar's CSRF check, skipped for requests authenticated by a Bearer token.

    A Bearer token cannot be sent by a browser on its own, so such requests cannot be forged;
    cookie-authenticated unsafe requests keep the check.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Any Authorization header, even an empty or malformed one, decides authentication
        # alone (bearer_token: a header that is not a usable token is refused, never read as
        # "no token, use the cookie"), so the cookie can never act without the CSRF check.
        if scope["type"] == "http":
            for name, _value in scope.get("headers", ()):
                if name == b"authorization":
                    await self.app(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException("Not signed in")
    return user


def require(principal: Principal, action: str, resource: str = "*", *, own: bool = True) -> None:
    """403 naming the action and resource unless ``principal``'s roles allow it."""
    if not principal.can(action, resource, own=own):
        raise Forbidden(f"you may not do {action} on {resource}")


def allowed(action: str) -> Guard:
    """A route guard for an action not about one pool (decided on the resource ``*``)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        require(principal_of(connection), action)

    return guard
