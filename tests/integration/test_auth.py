"""Authentication and access: 401 without valid credentials, 403 when not allowed, CSRF on cookies."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec

from runner import protocol as p
from tests.support import (
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    RUNNER_TOKEN,
    InProcessServer,
    csrf_token,
    make_settings,
    submit,
)

HELLO = "workflow:\n  name: hello\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"


async def test_only_health_static_and_login_are_open(server: InProcessServer) -> None:
    async with server.client() as anon:
        assert (await anon.get("/healthz")).status_code == 200
        assert (await anon.get("/readyz")).status_code == 200
        assert (await anon.get("/static/app.css")).status_code == 200
        assert (await anon.get("/login")).status_code == 200
        for path in ("/api/v1/workflows", "/api/v1/pools", "/metrics", "/schema/openapi.json"):
            r = await anon.get(path)
            assert r.status_code == 401, path
            assert r.headers["content-type"].startswith("application/problem+json")
        page = await anon.get("/workflows", headers={"accept": "text/html"})
        assert page.status_code in (302, 303, 307) and page.headers["location"].startswith("/login")


async def test_wrong_tokens_are_401_without_saying_which_part(server: InProcessServer) -> None:
    details = set()
    for header in ("Bearer nope", "Bearer", "Basic abc", f"Bearer {ADMIN_TOKEN}x"):
        async with server.client() as c:
            r = await c.get("/api/v1/workflows", headers={"authorization": header})
            assert r.status_code == 401
            details.add(r.json()["detail"])
    assert len(details) == 1


async def test_backend_token_only_works_on_the_runner_api(server: InProcessServer) -> None:
    async with server.client(RUNNER_TOKEN) as runner:
        assert (await runner.get("/api/v1/workflows")).status_code == 403
        hello = p.Hello(backend="local", protocol_version=1, runner_version="t")
        r = await runner.post("/api/runner/v1/sessions", content=msgspec.json.encode(hello))
        assert r.status_code == 201
        # A backend cannot open a session in another backend's name.
        other = p.Hello(backend="elsewhere", protocol_version=1, runner_version="t")
        assert (
            await runner.post("/api/runner/v1/sessions", content=msgspec.json.encode(other))
        ).status_code == 403
    async with server.client(ADMIN_TOKEN) as person:
        r = await person.post("/api/runner/v1/sessions", content=msgspec.json.encode(hello))
        assert r.status_code == 403


async def test_a_backend_cannot_use_another_backends_session(server: InProcessServer) -> None:
    async with server.client(ADMIN_TOKEN) as admin:
        created = await admin.post("/api/v1/backends", json={"name": "second", "pool": "default"})
        assert created.status_code == 201
        second_token = created.json()["token"]
        listed = (await admin.get("/api/v1/backends")).json()["items"]
        assert {b["name"] for b in listed} == {"local", "second"} and "token" not in str(listed)
    async with server.client(RUNNER_TOKEN) as local:
        hello = p.Hello(backend="local", protocol_version=1, runner_version="t")
        session = (
            await local.post("/api/runner/v1/sessions", content=msgspec.json.encode(hello))
        ).json()
    async with server.client(second_token) as second:
        r = await second.post(
            f"/api/runner/v1/sessions/{session['session_id']}/heartbeat",
            content=msgspec.json.encode(p.Heartbeat(p.Capacity())),
        )
        assert r.status_code == 404


async def test_only_admins_create_backends_and_only_owners_cancel(server: InProcessServer) -> None:
    auth = server.app.state.auth
    await auth.ensure_user("alice", ["user"], "alice-password")
    await auth.ensure_user("bob", ["user"], None)
    alice_token = await auth.create_token("alice", "t")
    bob_token = await auth.create_token("bob", "t")
    async with server.client(alice_token) as alice, server.client(bob_token) as bob:
        assert (
            await alice.post("/api/v1/backends", json={"name": "x", "pool": "default"})
        ).status_code == 403
        wid = await submit(alice, HELLO)
        assert (await bob.post(f"/api/v1/workflows/{wid}/cancel")).status_code == 403
        assert (await alice.post(f"/api/v1/workflows/{wid}/cancel")).status_code == 200
    async with server.client(ADMIN_TOKEN) as admin:
        wid = await submit(admin, HELLO)
    async with server.client(alice_token) as alice:
        assert (await alice.post(f"/api/v1/workflows/{wid}/cancel")).status_code == 403
    # Revoked tokens stop working.
    token_id = (await auth.list_tokens("bob"))[0]["id"]
    assert await auth.revoke_token("bob", token_id)
    auth._cache.clear()
    async with server.client(bob_token) as bob:
        assert (await bob.get("/api/v1/workflows")).status_code == 401


async def test_browser_login_session_and_csrf(server: InProcessServer) -> None:
    async with server.client(follow_redirects=False) as browser:
        form = await browser.get("/login")
        token = csrf_token(form.text)
        bad = await browser.post(
            "/login", data={"username": "admin", "password": "wrong", "_csrf_token": token}
        )
        assert bad.status_code == 401 and "Wrong username or password" in bad.text
        nouser = await browser.post(
            "/login", data={"username": "ghost", "password": "x", "_csrf_token": token}
        )
        assert nouser.status_code == 401 and "Wrong username or password" in nouser.text
        no_csrf = await browser.post(
            "/login", data={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert no_csrf.status_code == 403
        ok = await browser.post(
            "/login",
            data={
                "username": "admin",
                "password": ADMIN_PASSWORD,
                "_csrf_token": token,
                "next": "/pools",
            },
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/pools"
        page = await browser.get("/workflows")
        assert page.status_code == 200 and "admin" in page.text
        # The session cookie works for the JSON API too, but unsafe requests need the CSRF token.
        assert (await browser.get("/api/v1/workflows")).status_code == 200
        r = await browser.post("/api/v1/workflows", json={"spec": HELLO})
        assert r.status_code == 403
        r = await browser.post(
            "/api/v1/workflows", json={"spec": HELLO}, headers={"x-csrf-token": token}
        )
        assert r.status_code == 201
        # An open redirect after login is refused.
        ok = await browser.post(
            "/login",
            data={
                "username": "admin",
                "password": ADMIN_PASSWORD,
                "_csrf_token": token,
                "next": "//evil.example",
            },
        )
        assert ok.headers["location"] == "/workflows"
        assert (await browser.post("/logout", data={"_csrf_token": token})).status_code == 303
        assert (await browser.get("/api/v1/workflows")).status_code == 401


async def test_bearer_requests_skip_csrf(server: InProcessServer) -> None:
    async with httpx.AsyncClient(
        base_url=server.base, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as c:
        assert (await c.post("/api/v1/workflows", json={"spec": HELLO})).status_code == 201


async def test_a_password_buys_a_token_and_is_throttled_like_sign_in(
    server: InProcessServer,
) -> None:
    """POST /api/v1/auth/token (gantry login --password): public, no CSRF token needed, the
    same 401 for a wrong password or user, and the sign-in throttle's 429."""
    async with server.client() as anon:
        r = await anon.post("/api/v1/auth/token", json={"username": "admin",
                            "password": ADMIN_PASSWORD, "name": "laptop"})  # fmt: skip
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["token"].startswith("gnt_") and created["name"] == "laptop"
        me = await anon.get("/api/v1/me", headers={"authorization": f"Bearer {created['token']}"})
        assert me.json()["name"] == "admin" and me.json()["via"] == "token"
        async with server.client(ADMIN_TOKEN) as admin:
            items = (await admin.get("/api/v1/audit")).json()["items"]
        signed_in = [i for i in items if i["action"] == "auth:SignIn"]
        assert signed_in and signed_in[0]["principal"] == "admin"
        assert signed_in[0]["via"] == "password" and signed_in[0]["target"] == str(created["id"])
        version = (await anon.get("/api/v1/version")).json()
        assert version["protocol"] == 1 and me.headers["x-gantry-version"] == version["version"]

        for body in ({"username": "admin", "password": "wrong"},
                     {"username": "nobody", "password": "wrong"}):  # fmt: skip
            r = await anon.post("/api/v1/auth/token", json=body)
            assert r.status_code == 401 and r.json()["detail"] == "wrong username or password"
        # a cross-site form can send text/plain without a preflight: refused
        form = await anon.post("/api/v1/auth/token", headers={"content-type": "text/plain"},
                               content=b'{"username": "admin", "password": "wrong"}')  # fmt: skip
        assert form.status_code == 422 and "application/json" in form.text
        r = await anon.post(
            "/api/v1/auth/token", json={"username": "admin", "password": "x" * 2000}
        )
        assert r.status_code == 400 and "password" in r.text
        for _ in range(9):
            await anon.post("/api/v1/auth/token", json={"username": "admin", "password": "no"})
        r = await anon.post("/api/v1/auth/token", json={"username": "admin",
                            "password": ADMIN_PASSWORD})  # fmt: skip
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert r.json()["setting"] == "GANTRY_SIGN_IN_ACCOUNT_LIMIT"


async def test_no_password_tokens_where_local_sign_in_is_off(
    database_url: str, tmp_path: Path
) -> None:
    server = InProcessServer(
        make_settings(
            database_url,
            tmp_path,
            local_login=False,
            oidc_issuer="http://127.0.0.1:9",
            oidc_client_id="gantry",
            oidc_client_secret="s",
        )
    )
    await server.start()
    try:
        async with server.client() as anon:
            r = await anon.post("/api/v1/auth/token", json={"username": "admin",
                                "password": ADMIN_PASSWORD})  # fmt: skip
            assert r.status_code == 403 and "single sign-on" in r.json()["detail"]
    finally:
        await server.stop()
