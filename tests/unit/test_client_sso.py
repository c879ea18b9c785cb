"""The device flow's answers that the test provider (tests/oidc) never gives: ``slow_down``,
``expired_token``, a code that outlives ``expires_in``, timeouts, discovery without a device
endpoint. The provider is an httpx.MockTransport here; the clock and the sleep are the test's.
The whole flow against the real provider is tests/cli/test_cli_sso.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from client.errors import FAILED, NOT_SIGNED_IN, CliError
from client.sso import DEVICE_GRANT, Endpoints, Grant, discover, instructions, start, wait_for_token

ISSUER = "https://idp.test"
ENDPOINTS = Endpoints(ISSUER, f"{ISSUER}/device/auth", f"{ISSUER}/token")
GRANT = Grant("dev-code", "ABCD-EFGH", f"{ISSUER}/device", None, interval=5, expires_in=60)


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def _token_endpoint(*answers: dict[str, Any] | Exception) -> tuple[httpx.Client, list[str]]:
    """A token endpoint giving ``answers`` in turn (an error dict is a 400); the forms it got."""
    queue = list(answers)
    forms: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        forms.append(request.content.decode())
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(400 if "error" in answer else 200, json=answer)

    return _client(handler), forms


def _wait(http: httpx.Client, clock: Clock, grant: Grant = GRANT) -> str:
    return wait_for_token(http, ENDPOINTS, "gantry-cli", grant, sleep=clock.sleep, clock=clock)


def test_polling_waits_the_interval_and_backs_off_on_slow_down_and_timeouts() -> None:
    pending = {"error": "authorization_pending"}
    http, forms = _token_endpoint(
        pending,
        {"error": "slow_down"},
        pending,
        httpx.ConnectTimeout("slow"),
        {"access_token": "eyJ.a.b", "token_type": "Bearer"},
    )
    clock = Clock()
    grant = Grant("dev-code", "ABCD-EFGH", f"{ISSUER}/device", None, interval=5, expires_in=600)
    assert _wait(http, clock, grant) == "eyJ.a.b"
    assert clock.slept == [5, 5, 10, 10, 20]  # slow_down adds 5 s, a timeout doubles it
    assert forms[0] == (
        f"grant_type={DEVICE_GRANT.replace(':', '%3A')}&device_code=dev-code&client_id=gantry-cli"
    )


def test_refusals_and_expiry_end_the_wait() -> None:
    cases = (
        ({"error": "access_denied"}, NOT_SIGNED_IN, "sign-in refused at the provider"),
        ({"error": "expired_token"}, FAILED, "expired before it was approved"),
        ({"error": "invalid_grant", "error_description": "gone\x1b]"}, FAILED,
         f"the identity provider {ISSUER} refused the sign-in: invalid_grant (gone?])"),
    )  # fmt: skip
    for answer, code, says in cases:
        http, _ = _token_endpoint(answer)
        with pytest.raises(CliError) as caught:
            _wait(http, Clock())
        assert caught.value.code == code and says in caught.value.message, caught.value.message
    # The code's expires_in passes while the person has not approved it: no poll after it.
    http, forms = _token_endpoint(*[{"error": "authorization_pending"}] * 20)
    clock = Clock()
    with pytest.raises(CliError, match="expired before it was approved"):
        _wait(http, clock)
    assert len(forms) == 11 and sum(clock.slept) == 60  # polls at 5 s, …, 55 s; none at 60 s
    # The provider goes away while polling: one line naming it.
    http, _ = _token_endpoint(httpx.ConnectError("refused"))
    with pytest.raises(CliError, match=f"cannot reach the identity provider {ISSUER}: refused"):
        _wait(http, Clock())


def _discovery(doc: dict[str, Any], status: int = 200) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == f"{ISSUER}/.well-known/openid-configuration"
        return httpx.Response(status, json=doc)

    return _client(handler)


def test_discovery_needs_a_device_endpoint_from_the_same_issuer() -> None:
    full = {"issuer": ISSUER, "device_authorization_endpoint": ENDPOINTS.device_authorization,
            "token_endpoint": ENDPOINTS.token}  # fmt: skip
    assert discover(_discovery(full), ISSUER + "/") == Endpoints(
        ISSUER + "/", ENDPOINTS.device_authorization, ENDPOINTS.token
    )
    no_device = {k: v for k, v in full.items() if k != "device_authorization_endpoint"}
    for doc, status, says in (
        (no_device, 200, f"the identity provider {ISSUER} offers no device sign-in"),
        ({**full, "issuer": "https://evil.test"}, 200, "names another issuer"),
        (full, 404, f"the identity provider {ISSUER} answered 404"),
    ):
        with pytest.raises(CliError, match=says):
            discover(_discovery(doc, status), ISSUER)


def test_the_device_authorization_asks_for_openid_and_says_where_to_go() -> None:
    asked: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.content)
        return httpx.Response(200, json={
            "device_code": "d", "user_code": "WXYZ-1234", "verification_uri": f"{ISSUER}/device",
            "verification_uri_complete": f"{ISSUER}/device?user_code=WXYZ-1234",
            "expires_in": 300,
        })  # fmt: skip

    grant = start(_client(handler), ENDPOINTS, "gantry-cli", ["profile", "openid", "groups"])
    assert asked == [b"client_id=gantry-cli&scope=openid+profile+groups"]
    assert grant.interval == 5 and grant.expires_in == 300  # no interval given: 5 s (§3.2)
    said = instructions(grant)
    assert f"open {ISSUER}/device?user_code=WXYZ-1234 in a browser" in said
    assert "the code WXYZ-1234" in said and "expires in 5 min" in said
    plain = instructions(Grant("d", "C-D", f"{ISSUER}/device", None, 5, 600))
    assert plain.startswith(f"to sign in, open {ISSUER}/device in a browser and enter the code C-D")

    def refusing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client"})

    with pytest.raises(CliError, match="refused the device sign-in for client 'gantry-cli'"):
        start(_client(refusing), ENDPOINTS, "gantry-cli", ["openid"])


def test_a_hostile_providers_numbers_and_urls_end_in_one_line_not_a_hang() -> None:
    """The server names the provider; a provider's `interval: 1e999` raised a traceback and
    `interval: 10**12` would have slept for days (a hostile review)."""

    def answering(extra: str) -> Callable[[httpx.Request], httpx.Response]:
        def handler(request: httpx.Request) -> httpx.Response:
            body = f'{{"device_code": "d", "user_code": "U", "verification_uri": "{ISSUER}/d"'
            return httpx.Response(200, content=body + extra + "}")

        return handler

    huge = start(
        _client(answering(', "interval": 1000000000000, "expires_in": 1e999')), ENDPOINTS, "c", []
    )
    assert huge.interval == 60 and huge.expires_in == 3600
    with pytest.raises(CliError, match="lacks"):
        start(_client(answering(', "interval": "soon"')), ENDPOINTS, "c", [])
    with pytest.raises(CliError, match="cannot reach the identity provider"):
        discover(httpx.Client(), "http://bad\x07host")
