"""Browser sign-in through the identity provider: the authorization code flow with PKCE (S256),
``state`` and ``nonce``, all three kept in the server-side session (app/auth/sessions.py).

``/auth/oidc/login`` sends the browser to the provider; ``/auth/oidc/callback`` takes the code
back (only for a ``state`` this session started), exchanges it with authlib's client (the
code verifier proves the exchange comes from whoever started the flow), verifies the ID token
(app/auth/oidc.py), merges it with the userinfo answer, and signs the person in with
``via="oidc"``. Every refusal is a readable page; nothing of a failed attempt is reusable.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Annotated, Any

import httpx
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from app.audit.service import AuditService, Event
from app.auth.oidc import OidcProvider, OidcRefused
from app.auth.oidc_users import ProviderUsers, SignInRefused
from app.auth.sessions import STORE_NAME, PostgresSessionStore, start_session
from app.bounds import NO_NUL, text_query
from app.web import page, safe_next

__all__ = ("OidcViews", "provider_label")

log = logging.getLogger("gantry.oidc")

PENDING_KEY = "oidc_pending"  # state -> what the callback needs, in the session
PENDING_SECONDS = 600.0  # a sign-in not finished within this is started again (and its
# session, while nobody is signed in, is removed after ANONYMOUS_MAX_AGE: app/auth/sessions.py)
MAX_PENDING = 4  # sign-ins started at once in one browser (tabs)
# `state` is a reserved handler argument name in Litestar (STACK-NOTES "Auth").
OAuthState = Annotated[str | None, QueryParameter(name="state", max_length=200, pattern=NO_NUL)]


def provider_label(issuer: str) -> str:
    """What the sign-in button calls the provider: its host."""
    return httpx.URL(issuer).host or issuer


def _refused(request: Request[Any, Any, Any], status: int, message: str) -> Template:
    return page(request, "auth/oidc_refused.html", status_code=status, message=message)


def _client(provider: OidcProvider) -> AsyncOAuth2Client:
    s = provider.settings
    return AsyncOAuth2Client(
        client_id=s.oidc_client_id,
        client_secret=s.oidc_client_secret,
        token_endpoint_auth_method="client_secret_basic",
        redirect_uri=s.oidc_callback,
        code_challenge_method="S256",
        timeout=10.0,
    )


class OidcViews(Controller):
    include_in_schema = False

    @get("/auth/oidc/login")
    async def start(
        self,
        request: Request[Any, Any, Any],
        oidc: NamedDependency[OidcProvider | None],
        next: str | None = text_query(2000, default=None),
    ) -> Redirect | Template:
        provider = oidc
        if provider is None:
            return _refused(request, 404, "Single sign-on is not configured on this server.")
        try:
            metadata = await provider.metadata()
            scopes = await provider.scopes()
        except OidcRefused as exc:
            log.warning("single sign-on could not start: %s", exc)
            return _refused(request, 502, f"Single sign-on is unavailable right now: {exc}.")
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters (RFC 7636: 43-128)
        async with _client(provider) as client:
            client.scope = " ".join(scopes)
            url, _ = client.create_authorization_url(
                metadata.authorization_endpoint, state=state, code_verifier=verifier, nonce=nonce
            )
        session = dict(request.session or {})
        now = time.time()
        pending = {
            k: v
            for k, v in (session.get(PENDING_KEY) or {}).items()
            if isinstance(v, dict) and now - float(v.get("at", 0)) < PENDING_SECONDS
        }
        pending[state] = {"nonce": nonce, "verifier": verifier, "next": safe_next(next), "at": now}
        session[PENDING_KEY] = dict(
            sorted(pending.items(), key=lambda kv: kv[1]["at"])[-MAX_PENDING:]
        )
        request.set_session(session)
        store = request.app.stores.get(STORE_NAME)
        if isinstance(store, PostgresSessionStore):
            await store.delete_expired()  # pending sign-ins that were never finished
        return Redirect(path=url, status_code=303)

    @get("/auth/oidc/callback")
    async def callback(
        self,
        request: Request[Any, Any, Any],
        oidc: NamedDependency[OidcProvider | None],
        provider_users: NamedDependency[ProviderUsers],
        audit: NamedDependency[AuditService],
        oauth_state: OAuthState = None,
        code: str | None = text_query(2000, default=None),
        error: str | None = text_query(200, default=None),
        error_description: str | None = text_query(1000, default=None),
        iss: str | None = text_query(1000, default=None),
    ) -> Redirect | Template:  # fmt: skip
        provider = oidc
        if provider is None:
            return _refused(request, 404, "Single sign-on is not configured on this server.")
        session = dict(request.session or {})
        pending_all = dict(session.get(PENDING_KEY) or {})
        pending = pending_all.pop(oauth_state, None) if oauth_state else None
        # One use only: the state is gone from the session whatever happens next.
        if pending_all:
            session[PENDING_KEY] = pending_all
        else:
            session.pop(PENDING_KEY, None)
        request.set_session(session)
        if not isinstance(pending, dict) or time.time() - float(pending["at"]) >= PENDING_SECONDS:
            return _refused(
                request,
                400,
                "This sign-in was not started in this browser, or it took too long. Sign in again.",
            )
        if error:
            return _refused(
                request,
                403,
                f"The identity provider refused the sign-in: {error_description or error}.",
            )
        try:
            metadata = await provider.metadata()
            # RFC 9207: an answer that says it comes from another issuer is a mix-up.
            if iss is not None and iss != metadata.issuer:
                raise OidcRefused(f"the answer names issuer {iss!r}, not {metadata.issuer!r}")
            if not code:
                raise OidcRefused("the identity provider's answer has no code")
            claims = await _exchange(request, provider, code, pending)
            name = await provider_users.sign_in(metadata.issuer, claims, sync_roles=True)
        except (OidcRefused, SignInRefused) as exc:
            log.warning("single sign-on refused: %s", exc)
            await _audit(request, audit, "", "denied", 403)
            return _refused(request, 403, f"Sign-in refused: {exc}.")
        await _audit(request, audit, name, "allowed", 303)
        start_session(request, name, via="oidc")
        store = request.app.stores.get(STORE_NAME)
        if isinstance(store, PostgresSessionStore):
            await store.delete_expired()
        return Redirect(path=safe_next(pending.get("next")), status_code=303)


async def _audit(
    request: Request[Any, Any, Any], audit: AuditService, name: str, outcome: str, status: int
) -> None:
    """A sign-in through the provider, in the audit log (the callback is a GET, which the
    audit middleware does not record)."""
    address = request.client.host if request.client else ""
    event = Event(name or "(unknown)", "oidc", "auth:SignIn", name, address, outcome, status,
                  "GET /auth/oidc/callback")  # fmt: skip
    await audit.record(event)


async def _exchange(
    request: Request[Any, Any, Any], provider: OidcProvider, code: str, pending: dict[str, Any]
) -> dict[str, Any]:
    """The code for tokens (with the PKCE verifier), the ID token verified, userinfo merged."""
    metadata = await provider.metadata()
    async with _client(provider) as client:
        try:
            token = await client.fetch_token(
                metadata.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=pending["verifier"],
            )
        except OAuthError as exc:
            raise OidcRefused(
                f"the identity provider did not accept the code ({exc.description or exc.error})"
            ) from None
        except httpx.HTTPError as exc:
            raise OidcRefused(f"the identity provider could not be reached ({exc!r})") from None
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise OidcRefused("the identity provider sent no ID token")
    claims = await provider.verify_id_token(id_token, pending["nonce"])
    access_token = token.get("access_token")
    if metadata.userinfo_endpoint and isinstance(access_token, str):
        userinfo = await provider.document(metadata.userinfo_endpoint, access_token)
        # OpenID Connect Core 5.3.2: userinfo about another subject must not be used.
        if userinfo.get("sub") != claims["sub"]:
            raise OidcRefused("the userinfo answer is about another subject")
        # What the ID token says (signed and verified) wins over userinfo.
        claims = {**userinfo, **claims}
    return claims
