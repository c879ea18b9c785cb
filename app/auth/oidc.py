"""The OpenID Connect provider as Gantry sees it: discovery, its signing keys, and verifying
the JWTs it issues (ID tokens at sign-in, access tokens that programs present as Bearer).

Discovery and JWKS are fetched with plain httpx (STACK-NOTES "Auth"); the code flow itself is
authlib's (app/auth/oidc_views.py). Only asymmetric algorithms are accepted, so a token signed
with a shared secret, or with ``alg: none``, never verifies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from joserfc.jwt import JWTClaimsRegistry

from app.settings import Settings

__all__ = (
    "MAX_TOKEN_BYTES",
    "Metadata",
    "OidcProvider",
    "OidcRefused",
    "looks_like_jwt",
)

log = logging.getLogger("gantry.oidc")

MAX_TOKEN_BYTES = 16 * 1024  # a provider's JWT is 1-4 KiB; more is refused before parsing
MAX_DOCUMENT_BYTES = 1024 * 1024  # discovery and JWKS answers
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
METADATA_SECONDS = 3600.0  # discovery is fetched again after this
KEYS_SECONDS = 3600.0  # and the JWKS, so a key the provider withdrew stops verifying
KEYS_COOLDOWN = 10.0  # an unknown kid refetches the JWKS at most this often (no fetch floods)
LEEWAY = 60  # seconds of clock difference allowed on exp, iat and nbf
_ID_TOKEN_MARKERS = ("nonce", "at_hash", "c_hash")


class OidcRefused(Exception):
    """A token or an answer of the provider that is not accepted; the message says why."""


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (``header.payload.signature``, the header a JSON object)."""
    return token.startswith("eyJ") and token.count(".") == 2


@dataclass(frozen=True, slots=True)
class Metadata:
    """The parts of the discovery document Gantry uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    device_authorization_endpoint: str | None
    scopes_supported: tuple[str, ...] | None


class OidcProvider:
    """One configured provider: its metadata and keys, cached, and token verification."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        assert settings.oidc_issuer and settings.oidc_client_id
        self.settings = settings
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self.http = http or httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self.keys_cooldown = KEYS_COOLDOWN
        self._metadata: Metadata | None = None
        self._metadata_at = 0.0
        self._metadata_error: OidcRefused | None = None
        self._metadata_failed_at = 0.0
        self._metadata_lock = asyncio.Lock()
        self._keys: dict[str | None, Any] = {}
        self._keys_at = -1e9  # when the keys in hand were fetched
        self._keys_tried_at = -1e9  # when a fetch was last tried, whatever came of it
        # Two locks: a key refresh reads the metadata, which may refresh under its own lock.
        self._keys_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.http.aclose()

    @property
    def access_token_audiences(self) -> tuple[str, ...]:
        """The ``aud`` a provider access token must carry one of."""
        s = self.settings
        if s.oidc_audience:
            return (s.oidc_audience,)
        return tuple(a for a in (s.oidc_client_id, s.oidc_cli_client_id) if a)

    # -- discovery and keys ---------------------------------------------------------------

    async def document(self, url: str, token: str | None = None) -> dict[str, Any]:
        """A JSON object the provider serves (discovery, JWKS, userinfo with ``token``)."""
        headers = {"accept": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        try:
            response = await self.http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise OidcRefused(f"the identity provider could not be reached ({exc!r})") from None
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise OidcRefused(f"the identity provider answered {response.status_code} for {url}")
        try:
            document = response.json()
        except ValueError:
            raise OidcRefused(f"the identity provider's {url} is not JSON") from None
        if not isinstance(document, dict):
            raise OidcRefused(f"the identity provider's {url} is not a JSON object")
        return document

    async def metadata(self) -> Metadata:
        """The discovery document, kept an hour. After a failed fetch, requests within the
        cool-down get the same refusal at once instead of each waiting for a timeout."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < METADATA_SECONDS:
            return self._metadata
        async with self._metadata_lock:
            now = time.monotonic()
            if self._metadata is not None and now - self._metadata_at < METADATA_SECONDS:
                return self._metadata
            if self._metadata_error is not None and now - self._metadata_failed_at < KEYS_COOLDOWN:
                raise self._metadata_error
            try:
                doc = await self.document(f"{self.issuer}/.well-known/openid-configuration")
                self._metadata, self._metadata_at = _metadata(doc, self.issuer), time.monotonic()
                self._metadata_error = None
            except OidcRefused as exc:
                self._metadata_error, self._metadata_failed_at = exc, time.monotonic()
                if self._metadata is None:
                    raise
                log.warning("keeping the old discovery document: %s", exc)
        return self._metadata

    async def scopes(self) -> list[str]:
        """The configured scopes the provider supports (all of them when it does not say)."""
        supported = (await self.metadata()).scopes_supported
        wanted = self.settings.oidc_scopes
        return [s for s in wanted if supported is None or s in supported or s == "openid"]

    async def _key(self, kid: str | None) -> Any:
        if time.monotonic() - self._keys_at >= KEYS_SECONDS:
            await self._refresh_keys(cooldown=0.0)  # an hour old: fetched again
        key = self._find(kid)
        if key is None:
            await self._refresh_keys(cooldown=self.keys_cooldown)  # the provider rotated them?
            key = self._find(kid)
        if key is None:
            raise OidcRefused(
                "the token is signed with a key the identity provider does not publish"
            )
        return key

    def _find(self, kid: str | None) -> Any:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh_keys(self, *, cooldown: float) -> None:
        """Fetch the JWKS unless a fetch was tried within ``cooldown`` seconds (one fetch for
        any number of requests with made-up kids). A failed fetch keeps the old keys."""
        asked = time.monotonic()
        async with self._keys_lock:
            if self._keys_tried_at >= asked or asked - self._keys_tried_at < cooldown:
                return  # fetched while this request waited, or too recently tried
            self._keys_tried_at = time.monotonic()
            try:
                jwks_uri = (await self.metadata()).jwks_uri
                document = await self.document(jwks_uri)
            except OidcRefused as exc:
                if not self._keys:
                    raise
                log.warning("keeping the identity provider's old keys: %s", exc)
                return
            keys: dict[str | None, Any] = {}
            for data in document.get("keys") or []:
                if not isinstance(data, dict) or data.get("use", "sig") != "sig":
                    continue
                try:
                    keys[data.get("kid")] = JWKRegistry.import_key(data)
                except (JoseError, ValueError, TypeError):
                    log.warning("skipping a key of the identity provider that does not import")
            self._keys, self._keys_at = keys, time.monotonic()
            log.info("fetched %d signing key(s) from %s", len(keys), jwks_uri)

    # -- verification -----------------------------------------------------------------------

    async def verify(
        self, token: str, audiences: Collection[str], *, nonce: str | None = None
    ) -> dict[str, Any]:
        """The claims of ``token`` once its signature (JWKS), ``iss``, ``aud`` (one of
        ``audiences``), ``exp`` and, when given, ``nonce`` are verified."""
        if len(token) > MAX_TOKEN_BYTES:
            raise OidcRefused(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise OidcRefused("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise OidcRefused(f"the token's algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except (JoseError, ValueError, TypeError):
            raise OidcRefused("the token's signature does not verify") from None
        metadata = await self.metadata()
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": metadata.issuer},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "aud": {"essential": True, "values": list(audiences)},
        }
        if nonce is not None:
            options["nonce"] = {"essential": True, "value": nonce}
        try:
            JWTClaimsRegistry(leeway=LEEWAY, **options).validate(claims)
        except JoseError as exc:
            raise OidcRefused(
                f"the token is not accepted: {exc.description or exc.error}"
            ) from None
        return dict(claims)

    async def verify_id_token(self, token: str, nonce: str) -> dict[str, Any]:
        """An ID token from the browser sign-in (OpenID Connect Core 3.1.3.7)."""
        claims = await self.verify(token, [self.client_id], nonce=nonce)
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise OidcRefused("the ID token names other audiences and is not issued to Gantry")
        return claims

    async def verify_access_token(self, token: str) -> dict[str, Any]:
        """A provider access token (RFC 9068 where the provider follows it) presented as Bearer.

        An ID token is no access token even though the same keys sign it and it names a
        client id as audience: a token typed ``at+jwt`` is one; any other that carries what
        only ID tokens carry is refused.
        """
        claims = await self.verify(token, self.access_token_audiences)
        header = jws.extract_compact(token.encode()).protected
        typ = str(header.get("typ", "")).lower()
        if typ not in ("at+jwt", "application/at+jwt") and (
            any(marker in claims for marker in _ID_TOKEN_MARKERS) or claims.get("typ") == "ID"
        ):
            raise OidcRefused("an ID token is not an access token; present the access token")
        return claims


def _metadata(doc: dict[str, Any], issuer: str) -> Metadata:
    # OpenID Connect Discovery 4.3: the document must name exactly the issuer asked for.
    if str(doc.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise OidcRefused(
            f"the identity provider's discovery document names issuer {doc.get('issuer')!r}, "
            f"not {issuer!r}"
        )
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(doc.get(name), str):
            raise OidcRefused(f"the identity provider's discovery document has no {name}")
    scopes = doc.get("scopes_supported")
    return Metadata(
        issuer=str(doc["issuer"]),
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc["jwks_uri"],
        userinfo_endpoint=doc.get("userinfo_endpoint"),
        device_authorization_endpoint=doc.get("device_authorization_endpoint"),
        scopes_supported=tuple(str(s) for s in scopes) if isinstance(scopes, list) else None,
    )
