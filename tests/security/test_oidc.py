"""Single sign-on against a real OpenID Connect provider (node's oidc-provider, tests/oidc).

Each attack is played as an attacker would: a code obtained with another PKCE challenge, an
ID token with another nonce, tokens from another issuer or for another audience, a provider
account that calls itself admin. The person and the CLI are played with httpx (the browser
itself in e2e/test_oidc.py). Nothing of the client side is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from app.settings import Settings, SettingsError
from tests.oidc_support import (
    CLI_CLIENT,
    Sso,
    TestProvider,
    act_at_provider,
    device_flow,
    sign_in,
    sso_stack,
)
from tests.support import ADMIN_PASSWORD, ADMIN_TOKEN, free_port

pytestmark = pytest.mark.timeout(180)

SPEC = "workflow:\n  name: sso\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"
ROLE_MAP = (("ops", "operator"), ("ops", "deployer"), ("auditors", "auditor"))


@pytest.fixture
async def sso(database_url: str, tmp_path: Path) -> AsyncIterator[Sso]:
    # "chat" is not in the provider's scopes_supported: it must not be asked for.
    scopes = ("openid", "profile", "email", "groups", "chat")
    async with sso_stack(database_url, tmp_path, oidc_role_map=ROLE_MAP, oidc_scopes=scopes) as s:
        yield s


async def _me(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/api/v1/me")


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


async def _started(browser: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """Start a sign-in; the provider URL Gantry sent the browser to, and its parameters."""
    start = await browser.get("/auth/oidc/login")
    assert start.status_code == 303
    url = start.headers["location"]
    return url, {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def _callback_for(sso: Sso, browser: httpx.AsyncClient, url: str, login: str) -> str:
    async with httpx.AsyncClient() as attacker_browser:
        first = await attacker_browser.get(url)
        return await act_at_provider(attacker_browser, first, login, sso.server.base + "/auth/oidc")


# -- the code flow -------------------------------------------------------------------------------


async def test_code_flow_signs_in_and_provisions_by_issuer_and_subject(sso: Sso) -> None:
    async with sso.browser() as browser:
        url, params = await _started(browser)
        assert url.startswith(sso.provider.issuer + "/auth?")
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
        assert params["nonce"] and params["state"] and params["response_type"] == "code"
        assert params["scope"].split() == ["openid", "profile", "email", "groups"]  # no "chat"
        assert params["redirect_uri"] == sso.server.base + "/auth/oidc/callback"
        answer = await act_at_provider(
            browser, await browser.get(url), "carol", sso.server.base + "/auth/oidc"
        )
        done = await browser.get(answer)
        assert done.status_code == 303 and done.headers["location"] == "/workflows", done.text
        me = (await _me(browser)).json()
        assert me["name"] == "carol" and me["via"] == "oidc"
        assert me["kind"] == "person" and me["roles"] == ["user"]
        # The callback's state is spent: the same answer again is refused.
        assert (await browser.get(answer)).status_code == 400
    # Renamed at the provider, the same subject is the same Gantry user.
    await sso.provider.set_account("carol", preferred_username="caroline")
    async with sso.browser() as browser:
        assert (await sign_in(browser, "carol")).status_code == 303
        assert (await _me(browser)).json()["name"] == "carol"
    async with sso.server.client(ADMIN_TOKEN) as admin:
        users = [u["name"] for u in (await admin.get("/api/v1/users")).json()["items"]]
        assert "caroline" not in users
        # Each sign-in through the provider is in the audit log (its callback is a GET).
        audit = (await admin.get("/api/v1/audit", params={"action": "auth:SignIn"})).json()
        oidc = [e for e in audit["items"] if e["via"] == "oidc"]
        assert [(e["principal"], e["outcome"]) for e in oidc] == [("carol", "allowed")] * 2


async def test_a_code_obtained_with_another_pkce_challenge_is_refused(sso: Sso) -> None:
    """An attacker who injects a code issued for their own challenge into a victim's
    callback: Gantry redeems it with the victim's verifier, and the provider refuses."""
    async with sso.browser() as victim:
        url, params = await _started(victim)
        theirs = {**params, "code_challenge": _challenge(secrets.token_urlsafe(48))}
        forged = url.split("?")[0] + "?" + urlencode(theirs)
        callback = await _callback_for(sso, victim, forged, "mallory")
        refused = await victim.get(callback)
        assert refused.status_code == 403, refused.text
        assert "did not accept the code" in refused.text
        assert (await _me(victim)).status_code == 401


async def test_an_id_token_with_another_nonce_is_refused(sso: Sso) -> None:
    """Same challenge (so PKCE passes), another nonce: the ID token is not this sign-in's."""
    async with sso.browser() as victim:
        url, params = await _started(victim)
        forged = url.split("?")[0] + "?" + urlencode({**params, "nonce": "attacker-nonce"})
        callback = await _callback_for(sso, victim, forged, "mallory")
        refused = await victim.get(callback)
        assert refused.status_code == 403, refused.text
        assert "nonce" in refused.text
        assert (await _me(victim)).status_code == 401


async def test_a_callback_this_browser_did_not_start_is_refused(sso: Sso) -> None:
    async with sso.browser() as attacker, sso.browser() as victim:
        url, _ = await _started(attacker)
        callback = await _callback_for(sso, attacker, url, "mallory")
        # Login CSRF: the attacker's callback in the victim's browser signs nobody in.
        refused = await victim.get(callback)
        assert refused.status_code == 400 and "not started in this browser" in refused.text
        assert (await _me(victim)).status_code == 401
        assert (await victim.get("/auth/oidc/callback?state=x&code=y")).status_code == 400
    # Starting a sign-in stores a session for a visitor nobody signed in: for minutes only.
    left = await sso.server.app.state.db.pool.fetchval(
        'SELECT max(extract(epoch FROM expires_at - now())) FROM web_session WHERE "user" IS NULL'
    )
    assert 0 < left <= 15 * 60


async def test_a_provider_account_named_like_a_local_one_is_refused(sso: Sso) -> None:
    await sso.provider.set_account("mallory", preferred_username="admin", groups=["auditors"])
    async with sso.browser() as browser:
        refused = await sign_in(browser, "mallory")
        assert refused.status_code == 403
        assert "belongs to another Gantry account" in refused.text
        assert (await _me(browser)).status_code == 401
    async with sso.server.client(ADMIN_TOKEN) as admin:
        audit = (await admin.get("/api/v1/audit", params={"outcome": "denied"})).json()
        assert [e["via"] for e in audit["items"] if e["action"] == "auth:SignIn"] == ["oidc"]
    async with sso.server.client(ADMIN_TOKEN) as admin:
        me = (await _me(admin)).json()
        assert me["name"] == "admin" and me["roles"] == ["admin"]


async def test_groups_replace_the_mapped_roles_at_every_sign_in(sso: Sso) -> None:
    async with sso.server.client(ADMIN_TOKEN) as admin:
        for role in ("operator", "auditor", "extra"):  # "deployer" does not exist: not given
            assert (await admin.put(f"/api/v1/roles/{role}", json={})).status_code == 200
        await sso.provider.set_account("dave", groups=["ops", "unmapped"])
        async with sso.browser() as browser:
            assert (await sign_in(browser, "dave")).status_code == 303
            assert (await _me(browser)).json()["roles"] == ["operator", "user"]
        r = await admin.patch("/api/v1/users/dave", json={"roles": ["operator", "user", "extra"]})
        assert r.status_code == 200
        await sso.provider.set_account("dave", groups=["auditors"])
        async with sso.browser() as browser:
            assert (await sign_in(browser, "dave")).status_code == 303
            # operator (mapped) went with the group; extra (not in the map) and user stay.
            assert (await _me(browser)).json()["roles"] == ["auditor", "extra", "user"]


async def test_a_disabled_user_cannot_sign_in(sso: Sso) -> None:
    async with sso.browser() as browser:
        assert (await sign_in(browser, "erin")).status_code == 303
        async with sso.server.client(ADMIN_TOKEN) as admin:
            r = await admin.patch("/api/v1/users/erin", json={"disabled": True})
            assert r.status_code == 200
        assert (await _me(browser)).status_code == 401  # the session ended
    async with sso.browser() as browser:
        refused = await sign_in(browser, "erin")
        assert refused.status_code == 403 and "disabled" in refused.text


async def test_new_signing_keys_are_fetched_on_an_unknown_kid(sso: Sso) -> None:
    async with sso.browser() as browser:
        assert (await sign_in(browser, "grace")).status_code == 303
    old = await sso.provider.jwks_kids()
    await sso.provider.restart()
    assert not old & await sso.provider.jwks_kids()
    # No cooldown here: a restart quicker than the cooldown (an idle machine) kept the old keys.
    sso.server.app.state.oidc.keys_cooldown = 0.0
    async with sso.browser() as browser:
        assert (await sign_in(browser, "grace")).status_code == 303
        assert (await _me(browser)).json()["via"] == "oidc"
    token = (await device_flow(sso.provider, "grace"))["access_token"]
    async with sso.server.client(token) as program:
        assert (await _me(program)).json()["name"] == "grace"


# -- the provider's access tokens as Bearer ----------------------------------------------------


async def test_the_device_flow_token_works_as_bearer(sso: Sso) -> None:
    answer = await device_flow(sso.provider, "frank")
    async with sso.server.client(answer["access_token"]) as cli:
        me = await _me(cli)
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "frank" and me.json()["via"] == "provider-token"
        assert me.json()["roles"] == ["user"]  # provisioned at first use
        assert (await cli.get("/api/v1/workflows")).status_code == 200
    # The ID token of the same answer names the CLI as audience too, but is no access token.
    async with sso.server.client(answer["id_token"]) as cli:
        refused = await _me(cli)
        assert refused.status_code == 401 and "ID token" in refused.text
    async with sso.server.client(ADMIN_TOKEN) as admin:  # Gantry tokens keep their path
        assert (await _me(admin)).json()["via"] == "token"


async def test_a_stream_opened_with_a_provider_token_ends_when_the_user_is_disabled(
    sso: Sso,
) -> None:
    token = (await device_flow(sso.provider, "frank"))["access_token"]
    async with sso.server.client(token) as cli:
        r = await cli.post("/api/v1/workflows", json={"spec": SPEC})
        assert r.status_code == 201, r.text
        async with cli.stream("GET", f"/api/v1/workflows/{r.json()['id']}/events") as events:
            assert events.status_code == 200
            lines = events.aiter_lines()
            assert (await anext(lines)).startswith("event: snapshot")
            async with sso.server.client(ADMIN_TOKEN) as admin:
                r = await admin.patch("/api/v1/users/frank", json={"disabled": True})
                assert r.status_code == 200
            with pytest.raises((StopAsyncIteration, httpx.RemoteProtocolError)):  # noqa: PT012
                async with asyncio.timeout(5):
                    while True:
                        await anext(lines)
        refused = await _me(cli)
        assert refused.status_code == 401 and "disabled" in refused.text


async def test_tokens_for_another_audience_or_from_another_issuer_are_refused(
    sso: Sso, tmp_path: Path
) -> None:
    other_audience = (await device_flow(sso.provider, "frank", client_id="other-app"))[
        "access_token"
    ]
    async with sso.server.client(other_audience) as cli:
        refused = await _me(cli)
        assert refused.status_code == 401 and "aud" in refused.text
    elsewhere = TestProvider(free_port(), [], tmp_path / "other-provider.log")
    await elsewhere.start()
    try:
        foreign = (await device_flow(elsewhere, "frank"))["access_token"]
    finally:
        await elsewhere.stop()
    async with sso.server.client(foreign) as cli:
        assert (await _me(cli)).status_code == 401  # signed with keys our provider never had


async def test_forged_and_oversized_tokens_are_refused(sso: Sso) -> None:
    real = (await device_flow(sso.provider, "frank"))["access_token"]
    kid = next(iter(await sso.provider.jwks_kids()))
    # The real token's claims, made to say someone else, signed with a key of the attacker's
    # under the provider's kid, or with a shared secret (HS256).
    body = json.loads(base64.urlsafe_b64decode(real.split(".")[1] + "=="))
    body["sub"] = "admin"
    forged = jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, body,
                        RSAKey.generate_key(2048))  # fmt: skip
    unsigned = jwt.encode({"alg": "HS256", "kid": kid}, body, OctKey.generate_key(256))
    for token, why in (
        (forged, "signature"),
        (unsigned, "algorithm"),
        ("eyJ" + "a" * 17000 + ".b.c", "longer"),
        ("eyJhbGciOiJSUzI1NiJ9.e30.", "signature"),
    ):
        async with sso.server.client(token) as cli:
            refused = await _me(cli)
            assert refused.status_code == 401 and why in refused.text, (why, refused.text)


async def test_made_up_kids_cost_one_key_fetch_and_a_provider_outage_is_a_page(sso: Sso) -> None:
    real = (await device_flow(sso.provider, "frank"))["access_token"]
    oidc = sso.server.app.state.oidc
    fetched: list[str] = []

    async def count(request: httpx.Request) -> None:
        fetched.append(str(request.url))

    oidc.http.event_hooks["request"].append(count)
    async with sso.server.client(real) as program:
        assert (await _me(program)).status_code == 200  # the keys are in hand now
    body = json.loads(base64.urlsafe_b64decode(real.split(".")[1] + "=="))
    key = RSAKey.generate_key(2048)
    made_up = [
        jwt.encode({"alg": "RS256", "kid": f"kid-{i}", "typ": "at+jwt"}, body, key)
        for i in range(30)
    ]
    fetched.clear()

    async def one(token: str) -> int:
        async with sso.server.client(token) as c:
            return (await _me(c)).status_code

    assert set(await asyncio.gather(*(one(t) for t in made_up))) == {401}
    assert len([u for u in fetched if u.endswith("/jwks")]) <= 1, fetched
    # The provider goes away: tokens verified with the keys in hand still work, and the
    # sign-in says so on a page.
    await sso.provider.stop()
    async with sso.server.client(real) as program:
        assert (await _me(program)).status_code == 200
    oidc._metadata_at -= 7200  # discovery is due again
    async with sso.browser() as browser:
        unavailable = await browser.get("/auth/oidc/login")
        assert unavailable.status_code == 502 and "unavailable" in unavailable.text


# -- configuration -------------------------------------------------------------------------------


async def test_auth_config_says_how_to_sign_in(sso: Sso, api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=sso.server.base) as anonymous:
        config = (await anonymous.get("/api/v1/auth/config")).json()
    assert config == {
        "local_login": True,
        "oidc": {
            "issuer": sso.provider.issuer,
            "client_id": CLI_CLIENT,
            "scopes": ["openid", "profile", "email", "groups"],
        },
    }
    # Without single sign-on (the plain server of the `api` fixture).
    assert (await api.get("/api/v1/auth/config")).json() == {"local_login": True, "oidc": None}


async def test_without_local_login_only_single_sign_on_is_offered(
    database_url: str, tmp_path: Path
) -> None:
    async with sso_stack(database_url, tmp_path, local_login=False) as s, s.browser() as browser:
        form = await browser.get("/login")
        assert 'name="password"' not in form.text
        assert "Sign in with 127.0.0.1" in form.text
        # No form to take the CSRF token from: the header carries the cookie's, as htmx does.
        refused = await browser.post(
            "/login",
            data={"username": "admin", "password": ADMIN_PASSWORD},
            headers={"x-csrf-token": browser.cookies["gantry_csrf"]},
        )
        assert refused.status_code == 403 and "turned off" in refused.text
        assert (await _me(browser)).status_code == 401
        config = (await browser.get("/api/v1/auth/config")).json()
        assert config["local_login"] is False
        assert (await sign_in(browser, "heidi")).status_code == 303


def test_start_up_refuses_a_half_configuration() -> None:
    base = {"GANTRY_SECRET_KEY": "k", "GANTRY_DATA_DIR": "/nonexistent"}
    issuer = {"GANTRY_OIDC_ISSUER": "https://idp.example"}
    client = {**issuer, "GANTRY_OIDC_CLIENT_ID": "gantry"}
    for env, says in (
        (issuer, "GANTRY_OIDC_CLIENT_ID"),
        ({"GANTRY_OIDC_CLIENT_ID": "gantry"}, "without GANTRY_OIDC_ISSUER"),
        ({"GANTRY_OIDC_CLI_CLIENT_ID": "cli"}, "without GANTRY_OIDC_ISSUER"),
        (client, "GANTRY_OIDC_CLIENT_SECRET"),
        ({"GANTRY_LOCAL_LOGIN": "false"}, "needs GANTRY_OIDC_ISSUER"),
        ({"GANTRY_OIDC_ROLE_MAP": "ops"}, "GANTRY_OIDC_ROLE_MAP"),
        ({**client, "GANTRY_OIDC_ISSUER": "http://idp.example"}, "https"),
        ({"GANTRY_LOCAL_LOGIN": "maybe"}, "true or false"),
    ):
        with pytest.raises(SettingsError, match=says):
            Settings.from_env({**base, **env})
    full = Settings.from_env(
        {**base, **client, "GANTRY_OIDC_CLIENT_SECRET": "s", "GANTRY_OIDC_ROLE_MAP": "a=b, c=d",
         "GANTRY_PUBLIC_URL": "https://gantry.example/"}
    )  # fmt: skip
    assert full.oidc_role_map == (("a", "b"), ("c", "d"))
    assert full.oidc_callback == "https://gantry.example/auth/oidc/callback"
