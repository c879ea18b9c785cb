"""``GET /api/v1/auth/config`` (public): how to sign in here, for the CLI and other programs."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get

from app.auth.oidc import OidcProvider, OidcRefused
from app.problems import problems

__all__ = ("AuthConfig", "auth_config")


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
async def auth_config(request: Request[Any, Any, Any]) -> AuthConfig:
    settings = request.app.state.settings
    provider: OidcProvider | None = request.app.state.oidc
    oidc = None
    if provider is not None:
        try:
            scopes = await provider.scopes()
        except OidcRefused:
            scopes = list(settings.oidc_scopes)  # the provider is down: say what is configured
        client_id = settings.oidc_cli_client_id or settings.oidc_client_id
        oidc = OidcConfig(issuer=provider.issuer, client_id=client_id, scopes=scopes)
    return AuthConfig(local_login=settings.local_login, oidc=oidc)
