"""A real OpenID Connect provider for the single sign-on tests (tests/oidc/provider.js, node's
oidc-provider), and the person and the CLI who use it, played with httpx.

Nothing of the client side is mocked: Gantry talks to the provider over HTTP as it would to
any other. The tests skip, saying why, where node or tests/oidc/node_modules is missing
(`make oidc` installs it), and fail instead when GANTRY_REQUIRE_OIDC=1 (.ci/run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT, wait_http

OIDC_DIR = ROOT / "tests" / "oidc"
WEB_CLIENT = "gantry-web"
WEB_SECRET = "gantry-web-secret"
CLI_CLIENT = "gantry-cli"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def require_provider() -> str:
    """The node executable; skips (or fails under GANTRY_REQUIRE_OIDC=1) when it cannot run."""
    node = shutil.which("node")
    why = None
    if node is None:
        why = "node is not installed (apt-get install nodejs npm)"
    elif not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        why = "tests/oidc/node_modules is missing (run `make oidc`)"
    if why:
        if os.environ.get("GANTRY_REQUIRE_OIDC") == "1":
            pytest.fail(f"GANTRY_REQUIRE_OIDC=1 but {why}")
        pytest.skip(f"single sign-on tests need a real provider: {why}")
    assert node is not None
    return node


class TestProvider:
    """tests/oidc/provider.js on a port of its own; ``restart`` gives it new signing keys."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, port: int, redirect_uris: list[str], log: Path) -> None:
        self.port = port
        self.redirect_uris = redirect_uris
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        node = require_provider()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "OIDC_REDIRECT_URIS": ",".join(self.redirect_uris),
            "OIDC_WEB_CLIENT_ID": WEB_CLIENT,
            "OIDC_WEB_CLIENT_SECRET": WEB_SECRET,
            "OIDC_CLI_CLIENT_ID": CLI_CLIENT,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [node, str(OIDC_DIR / "provider.js"), str(self.port)],
                cwd=OIDC_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            await wait_http(f"{self.issuer}/.well-known/openid-configuration", 30)
        except TimeoutError:
            await self.stop()
            raise AssertionError(
                f"the test provider did not start: {self.log.read_text()}"
            ) from None

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, 10)
            if self.process.poll() is None:
                self.process.kill()
        self.process = None

    async def restart(self) -> None:
        """Stop and start again: new signing keys (a new kid), and every session forgotten."""
        await self.stop()
        await self.start()

    async def set_account(self, login: str, **claims: Any) -> None:
        """What the provider says of the account signing in as ``login`` (its sub is the login)."""
        async with httpx.AsyncClient() as c:
            r = await c.put(f"{self.issuer}/_test/accounts/{login}", json=claims)
            assert r.status_code == 204, r.text

    async def jwks_kids(self) -> set[str]:
        async with httpx.AsyncClient() as c:
            return {k["kid"] for k in (await c.get(f"{self.issuer}/jwks")).json()["keys"]}


def oidc_overrides(provider: TestProvider, **more: Any) -> dict[str, Any]:
    """Settings overrides (tests.support.make_settings) for single sign-on with ``provider``."""
    return {
        "oidc_issuer": provider.issuer,
        "oidc_client_id": WEB_CLIENT,
        "oidc_client_secret": WEB_SECRET,
        "oidc_cli_client_id": CLI_CLIENT,
        **more,
    }


# -- the person at the provider's pages -----------------------------------------------------


@dataclass
class _Form:
    action: str | None
    fields: dict[str, str]


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(_Form(a.get("action"), {}))
        elif tag == "input" and self.forms and a.get("name") and a.get("type") == "hidden":
            self.forms[-1].fields[str(a["name"])] = a.get("value") or ""


async def _submit(client: httpx.AsyncClient, page: httpx.Response, **fields: str) -> httpx.Response:
    parser = _Forms()
    parser.feed(page.text)
    assert parser.forms, f"expected a form at {page.url}: {page.text[:500]}"
    form = parser.forms[0]
    url = page.url.join(form.action or str(page.url))
    return await client.post(url, data={**form.fields, **fields})


async def act_at_provider(
    client: httpx.AsyncClient, response: httpx.Response, login: str, stop_at: str
) -> str:
    """Follow the provider's redirects and pages, signing in as ``login`` and consenting, up
    to the redirect to a URL starting with ``stop_at``; returns that URL, unfollowed."""
    for _ in range(20):
        if response.is_redirect:
            url = str(response.url.join(response.headers["location"]))
            if url.startswith(stop_at):
                return url
            response = await client.get(url)
        elif 'name="login"' in response.text:
            response = await _submit(client, response, login=login, password="any")
        elif 'name="confirm"' in response.text:
            response = await _submit(client, response, confirm="yes")
        elif "<form" in response.text:
            response = await _submit(client, response)  # consent, or an auto-submitting form
        else:
            return str(response.url)
    raise AssertionError(f"the provider's pages did not end at {stop_at}")


async def sign_in(
    client: httpx.AsyncClient, login: str, next: str = "/workflows"
) -> httpx.Response:
    """A whole browser sign-in through the provider; Gantry's answer to the callback."""
    start = await client.get("/auth/oidc/login", params={"next": next})
    assert start.status_code == 303, start.text
    callback = await act_at_provider(client, start, login, str(client.base_url.join("/auth/oidc")))
    return await client.get(callback)


async def _confirmation_page(
    person: httpx.AsyncClient, verification_uri: str, user_code: str
) -> httpx.Response:
    """The person opens the verification page and enters the code; the page that asks them
    to confirm it."""
    page = await person.get(verification_uri)
    return await _submit(person, page, user_code=user_code)


async def approve_device_code(verification_uri: str, user_code: str, login: str) -> None:
    """A person approves a device code in their browser: the code entered, signed in as
    ``login``, the sign-in confirmed."""
    async with httpx.AsyncClient(timeout=30) as person:
        page = await _confirmation_page(person, verification_uri, user_code)
        end = await act_at_provider(person, page, login, stop_at="never:")
        assert "/device/" in end, end


async def refuse_device_code(verification_uri: str, user_code: str) -> None:
    """A person who does not recognise the code aborts at the confirmation page."""
    async with httpx.AsyncClient(timeout=30) as person:
        page = await _confirmation_page(person, verification_uri, user_code)
        assert 'name="abort"' in page.text, page.text[:500]
        await _submit(person, page, abort="yes")


async def device_flow(
    provider: TestProvider, login: str, client_id: str = CLI_CLIENT, scope: str | None = None
) -> dict[str, Any]:
    """The CLI's device flow: ask for a code, approve it as ``login`` at the provider's pages
    (the person's browser), poll the token endpoint; returns the token answer."""
    async with httpx.AsyncClient(timeout=30) as cli:
        r = await cli.post(
            f"{provider.issuer}/device/auth",
            data={"client_id": client_id, "scope": scope or "openid profile email groups"},
        )
        assert r.status_code == 200, r.text
        grant = r.json()
        poll = {"grant_type": DEVICE_GRANT, "device_code": grant["device_code"], "client_id": client_id}  # fmt: skip
        pending = await cli.post(f"{provider.issuer}/token", data=poll)
        assert pending.json()["error"] == "authorization_pending", pending.text
        await approve_device_code(grant["verification_uri"], grant["user_code"], login)
        token = await cli.post(f"{provider.issuer}/token", data=poll)
        assert token.status_code == 200, token.text
        return dict(token.json())


@contextlib.asynccontextmanager
async def sso_stack(database_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Sso]:
    """The test provider and a Gantry server configured for it (the server's port is chosen
    first: the provider must know the callback it may redirect to)."""
    from tests.support import InProcessServer, free_port, make_settings

    require_provider()
    port = free_port()
    provider = TestProvider(
        free_port(), [f"http://127.0.0.1:{port}/auth/oidc/callback"], tmp_path / "provider.log"
    )
    await provider.start()
    try:
        settings = make_settings(
            database_url, tmp_path, port=port, **oidc_overrides(provider, **overrides)
        )
        server = InProcessServer(settings)
        await server.start()
        try:
            yield Sso(provider, server)
        finally:
            await server.stop()
    finally:
        await provider.stop()


@dataclass
class Sso:
    provider: TestProvider
    server: Any  # tests.support.InProcessServer

    def browser(self) -> httpx.AsyncClient:
        """A fresh browser (its own cookies) for Gantry and the provider."""
        return self.server.client()  # type: ignore[no-any-return]
