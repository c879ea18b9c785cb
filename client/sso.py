"""``gantry login URL --sso``: the identity provider's device flow (RFC 8628).

The server says which provider it trusts (``GET /api/v1/auth/config``); the CLI asks that
provider for a device code, shows the person where to approve it, and polls the token endpoint
until they have. The provider's access token is then traded for a Gantry personal token
(client/cli.py), so what is saved is a Gantry token as with ``--password``.

Plain httpx, not authlib: authlib's RFC 8628 support (``authlib.oauth2.rfc8628``) is the
server's side only (the device authorization endpoint and the grant); its clients have no
device authorization request and no polling. The protocol is two form posts, written out here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from client import __version__
from client.errors import FAILED, NOT_SIGNED_IN, CliError
from client.output import clean

__all__ = (
    "DEVICE_GRANT",
    "Endpoints",
    "Grant",
    "discover",
    "instructions",
    "sign_in",
    "start",
    "wait_for_token",
)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5  # seconds between polls when the provider does not say (RFC 8628 §3.2)
SLOW_DOWN = 5  # seconds added to the interval at each slow_down (§3.5)
INTERRUPTED = 130  # as client.cli.main answers Ctrl-C
DEFAULT_EXPIRES_IN = 600  # the code's life when the provider omits expires_in (it must not)
MAX_INTERVAL = 60  # seconds between polls at most, whatever the provider asks
MAX_EXPIRES_IN = 3600  # a code is waited for an hour at most


def _bounded(value: object, default: int, low: int, high: int) -> int:
    """A provider's number of seconds, as an int within [low, high]; refused when not one."""
    if value is None or value == "":
        return default
    number = float(value)  # type: ignore[arg-type]  # ValueError, TypeError: refused above
    if number != number:  # NaN
        raise ValueError("a number of seconds")
    return int(min(max(number, low), high))


@dataclass(frozen=True)
class Endpoints:
    issuer: str
    device_authorization: str
    token: str


@dataclass(frozen=True)
class Grant:
    """The provider's answer to the device authorization request."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: int
    expires_in: int


def http_client() -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(30.0),
        headers={"user-agent": f"gantry-cli/{__version__}", "accept": "application/json"},
    )


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CliError(f"{what}: the answer ({response.status_code}) is not a JSON object")
    return body


def _refusal(body: dict[str, Any]) -> str:
    error = clean(body.get("error") or "no error given")
    detail = body.get("error_description")
    return f"{error} ({clean(detail)})" if detail else error


def discover(http: httpx.Client, issuer: str) -> Endpoints:
    """The provider's device authorization and token endpoints, from its discovery document."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    what = f"the identity provider {issuer}"
    try:
        response = http.get(url)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise CliError(f"cannot reach the identity provider {clean(issuer)}: {exc}") from None
    if response.status_code != 200:
        raise CliError(f"{what} answered {response.status_code} for {url}")
    doc = _json(response, f"{what}'s discovery document")
    if str(doc.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        # OpenID Connect Discovery §4.3: a document naming another issuer is not this one's.
        raise CliError(f"{what}'s discovery document names another issuer ({clean(doc.get('issuer'))})")  # fmt: skip
    device, token = doc.get("device_authorization_endpoint"), doc.get("token_endpoint")
    if not isinstance(device, str) or not device or not isinstance(token, str) or not token:
        raise CliError(
            f"{what} offers no device sign-in (its discovery document has no "
            "device_authorization_endpoint or token_endpoint); sign in on the server's web page, "
            "create a token at /tokens and use --token"
        )
    return Endpoints(issuer, device, token)


def start(http: httpx.Client, endpoints: Endpoints, client_id: str, scopes: list[str]) -> Grant:
    """Ask the provider for a device code and the code the person types (§3.1, §3.2)."""
    what = f"the identity provider {endpoints.issuer}"
    scope = " ".join(["openid", *(s for s in scopes if s != "openid")])
    try:
        response = http.post(
            endpoints.device_authorization, data={"client_id": client_id, "scope": scope}
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise CliError(
            f"cannot reach the identity provider {clean(endpoints.issuer)}: {exc}"
        ) from None
    body = _json(response, f"{what}'s device authorization")
    if response.status_code != 200:
        raise CliError(f"{what} refused the device sign-in for client {client_id!r}: "
                       f"{_refusal(body)}")  # fmt: skip
    try:
        # Some providers (Google's) spell it verification_url.
        uri = body.get("verification_uri") or body["verification_url"]
        return Grant(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=str(uri),
            verification_uri_complete=body.get("verification_uri_complete") or None,
            # Bounded: a server names the provider, and "interval": 1e999 or 10**12 (a
            # review) must not make the CLI sleep for days or raise a traceback.
            interval=_bounded(body.get("interval"), DEFAULT_INTERVAL, 1, MAX_INTERVAL),
            expires_in=_bounded(body.get("expires_in"), DEFAULT_EXPIRES_IN, 1, MAX_EXPIRES_IN),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CliError(f"{what}'s device authorization answer lacks {exc}") from None


def instructions(grant: Grant) -> str:
    """What the person does, in one line (every part from the provider made safe to print)."""
    code, plain = clean(grant.user_code), clean(grant.verification_uri)
    minutes = max(1, grant.expires_in // 60)
    if grant.verification_uri_complete:
        return (f"to sign in, open {clean(grant.verification_uri_complete)} in a browser and "
                f"check that it shows the code {code} (or open {plain} and enter the code); "
                f"it expires in {minutes} min")  # fmt: skip
    return f"to sign in, open {plain} in a browser and enter the code {code}; it expires in {minutes} min"  # fmt: skip


def wait_for_token(
    http: httpx.Client,
    endpoints: Endpoints,
    client_id: str,
    grant: Grant,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Poll the token endpoint every ``interval`` seconds (§3.4, §3.5) until the person has
    approved the code; returns the provider's access token."""
    what = f"the identity provider {endpoints.issuer}"
    deadline = clock() + grant.expires_in
    interval = grant.interval
    form = {"grant_type": DEVICE_GRANT, "device_code": grant.device_code, "client_id": client_id}
    expired = CliError(
        "the sign-in code expired before it was approved; run `gantry login URL --sso` again"
    )
    while True:
        sleep(interval)
        if clock() >= deadline:
            raise expired
        try:
            response = http.post(endpoints.token, data=form)
        except httpx.TimeoutException:
            # §3.5: a connection timeout halves the polling rate, then retries.
            interval = min(interval * 2, MAX_INTERVAL)
            continue
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(
                f"cannot reach the identity provider {clean(endpoints.issuer)}: {exc}"
            ) from None
        body = _json(response, f"{what}'s token endpoint")
        if response.status_code == 200:
            token = body.get("access_token")
            if not isinstance(token, str) or not token:
                raise CliError(f"{what} approved the sign-in but sent no access token")
            return token
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval = min(interval + SLOW_DOWN, MAX_INTERVAL)
            continue
        if error == "access_denied":
            raise CliError("sign-in refused at the provider", NOT_SIGNED_IN)
        if error == "expired_token":
            raise expired
        raise CliError(f"{what} refused the sign-in: {_refusal(body)}", FAILED)


def sign_in(issuer: str, client_id: str, scopes: list[str]) -> str:
    """The whole device flow, the person's part said on stderr (stdout stays clean); the
    provider's access token. No browser is opened: the person may well be on another machine."""
    with http_client() as http:
        endpoints = discover(http, issuer)
        grant = start(http, endpoints, client_id, scopes)
        print(instructions(grant), file=sys.stderr, flush=True)
        print("waiting for the approval at the provider (Ctrl-C to stop)…", file=sys.stderr,
              flush=True)  # fmt: skip
        try:
            return wait_for_token(http, endpoints, client_id, grant)
        except KeyboardInterrupt:
            raise CliError("sign-in stopped; nothing was saved", INTERRUPTED) from None
