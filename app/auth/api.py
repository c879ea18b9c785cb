"""The public endpoints the CLI starts from: ``GET /api/v1/auth/config`` (how to sign in
here), ``GET /api/v1/version`` and ``POST /api/v1/auth/token`` (a password for a token)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException
from litestar.params import JSONBody

from app import __version__
from app.audit.middleware import Note
from app.auth.oidc import OidcProvider, OidcRefused
from app.auth.service import AuthService
from app.auth.throttle import Busy, Refused, throttled_password_check
from app.auth.tokens import TokenCreated, issue
from app.bounds import NO_NUL, TokenName
from app.errors import Forbidden, Invalid
from app.limits import LimitExceeded
from app.problems import problems
from app.settings import Settings
from app.spec.errors import SpecIssue
from runner.protocol import PROTOCOL_VERSION

__all__ = ("AuthConfig", "auth_config", "password_token", "server_version")


class OidcConfig(msgspec.Struct):
    issuer: str
    client_id: str  # the CLI's public client when there is one, else the browser's
    scopes: list[str]


class AuthConfig(msgspec.Struct):
    local_login: bool
    oidc: OidcConfig | None


@get(
    "/api/v1/auth/config",
    summary="How to sign in here: local passwords, and the OpenID Connect provider (public)",
    responses=problems(),
)
async def auth_config(
    settings: NamedDependency[Settings], oidc: NamedDependency[OidcProvider | None]
) -> AuthConfig:
    provider, config = oidc, None
    if provider is not None:
        try:
            scopes = await provider.scopes()
        except OidcRefused:
            scopes = list(settings.oidc_scopes)  # the provider is down: say what is configured
        # A provider exists only where GANTRY_OIDC_CLIENT_ID is set (app/asgi.py, settings).
        client_id = settings.oidc_cli_client_id or settings.oidc_client_id or ""
        config = OidcConfig(issuer=provider.issuer, client_id=client_id, scopes=scopes)
    return AuthConfig(local_login=settings.local_login, oidc=config)


class VersionOut(msgspec.Struct):
    version: str
    protocol: int  # the runner protocol's version


@get(
    "/api/v1/version",
    summary="The server's version and runner protocol (public), for the CLI's version warning",
    responses=problems(),
)
async def server_version() -> VersionOut:
    return VersionOut(version=__version__, protocol=PROTOCOL_VERSION)


class PasswordTokenIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
    password: Annotated[str, msgspec.Meta(max_length=1024, pattern=NO_NUL)]
    name: TokenName = "cli"
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


@post(
    "/api/v1/auth/token",
    status_code=201,
    summary="Trade a username and password for a new personal token (public; throttled like "
    "sign-in)",
    responses=problems(401, 403, 422, 429, 503),
)
async def password_token(
    request: Request[Any, Any, Any],
    auth: NamedDependency[AuthService],
    settings: NamedDependency[Settings],
    note: NamedDependency[Note],
    data: JSONBody[PasswordTokenIn],
) -> TokenCreated:
    """What ``gantry login --password`` calls. The same throttle as the sign-in form counts
    each attempt (per account and per address, in PostgreSQL), so the API is no side door
    for guessing; a wrong password and an unknown user answer the same 401."""
    # JSON only: a cross-site form can post text/plain without a CORS preflight, and would let
    # any web page make its visitors' browsers guess passwords from their addresses.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise Invalid(
            "send the body as application/json",
            [SpecIssue("content-type", None, "set Content-Type: application/json")],
        )
    if not settings.local_login:
        raise Forbidden("sign-in with a password is turned off here; use single sign-on (--sso)")
    username = data.username.strip()
    note.principal, note.via = username, "password"
    principal = await throttled_password_check(request, username, data.password)
    if isinstance(principal, Refused):
        which = principal.which
        subject = "this account" if which == "account" else "your network address"
        raise LimitExceeded(
            f"too many failed sign-ins for {subject}; try again in {principal.retry_after} s",
            limit="failed sign-ins",
            setting=f"GANTRY_SIGN_IN_{which.upper()}_LIMIT",
            value=getattr(settings, f"sign_in_{which}_limit"),
            retry_after=principal.retry_after,
        )
    if isinstance(principal, Busy):
        raise ServiceUnavailableException(
            "too many sign-ins at once right now; try again in a few seconds",
            headers={"retry-after": "5"},
        )
    if principal is None:
        raise NotAuthorizedException("wrong username or password")
    created = await issue(auth, settings.token_max_lifetime, principal.name, data.name,
                          data.expires_at, None, caller=principal)  # fmt: skip
    note.target = str(created.id)
    return created
