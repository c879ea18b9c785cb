"""Programs that present the identity provider's own access token (a JWT) as Bearer.

The token is verified as an ID token is (signature against the JWKS, ``iss``, ``exp``) and
must name one of Gantry's client ids (or ``GANTRY_OIDC_AUDIENCE``) as audience; its user is
the one of its ``(iss, sub)``, provisioned from the token's claims if new. A verified token's
principal is kept a few seconds (never past its expiry), as Gantry tokens are.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from datetime import UTC, datetime

from app.auth.oidc import OidcProvider, OidcRefused
from app.auth.oidc_users import ProviderUsers, SignInRefused
from app.auth.service import AuthService, Principal

__all__ = ("ProviderTokens",)

_CACHE_SECONDS = 5.0
_CACHE_ENTRIES = 10_000


class ProviderTokens:
    def __init__(self, provider: OidcProvider, users: ProviderUsers, auth: AuthService) -> None:
        self.provider = provider
        self.users = users
        self.auth = auth
        self._cache: dict[str, tuple[float, Principal]] = {}

    def invalidate(self) -> None:
        """Forget verified tokens (a hint said users or roles changed)."""
        self._cache.clear()

    async def principal(self, token: str) -> Principal | None:
        """The principal of a provider access token; raises ``OidcRefused`` saying why not."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now < hit[0]:
            return hit[1]
        claims = await self.provider.verify_access_token(token)
        try:
            name = await self.users.sign_in(str(claims["iss"]), claims, sync_roles=False)
        except SignInRefused as exc:
            raise OidcRefused(str(exc)) from None
        principal = await self.auth.by_session(name, via="provider-token")
        if principal is None:
            return None
        # Its streams end when it expires (app/auth/streams.py).
        principal = replace(principal, expires_at=datetime.fromtimestamp(float(claims["exp"]), UTC))
        left = float(claims["exp"]) - time.time()
        if len(self._cache) > _CACHE_ENTRIES:
            self._cache.clear()
        self._cache[digest] = (now + min(_CACHE_SECONDS, left), principal)
        return principal
