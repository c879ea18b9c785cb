"""Roles and policies against a real server: pools per team, Deny, scope, token subsets,
expired and disabled credentials, service accounts, and changes reaching a second replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.access.policy import Policy
from tests.support import ADMIN_TOKEN, InProcessServer, csrf_token, make_settings

pytestmark = pytest.mark.timeout(300)

SPEC = "workflow:\n  name: team\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"


def team_policies(*pools: str) -> list[Policy]:
    resources = [f"pool/{p}" for p in pools]
    return [Policy("Allow", ["workflow:*", "pool:List"], resources)]


class Teams:
    """Pools `pool-a` and `pool-b`, each with a backend; users `ua` (team-a) and `ub` (team-b)."""

    def __init__(self, server: InProcessServer) -> None:
        self.server = server
        self.state = server.app.state
        self.tokens: dict[str, str] = {}

    async def setup(self) -> Teams:
        for team in ("a", "b"):
            await self.state.pools.create_pool(f"pool-{team}")
            await self.state.pools.set_backend_token(f"be-{team}", f"pool-{team}", f"gbk_{team}")
            await self.state.role_service.put(f"team-{team}", "", team_policies(f"pool-{team}"))
            await self.user(f"u{team}", [f"team-{team}"])
        return self

    async def user(self, name: str, roles: list[str], password: str | None = None) -> str:
        await self.state.users.create(name, roles=roles, password=password)
        self.tokens[name] = await self.state.auth.create_token(name, "t")
        return self.tokens[name]

    def client(self, name: str, server: InProcessServer | None = None) -> httpx.AsyncClient:
        token = ADMIN_TOKEN if name == "admin" else self.tokens[name]
        return (server or self.server).client(token)

    async def submit(self, name: str, pool: str) -> str:
        async with self.client(name) as c:
            r = await c.post("/api/v1/workflows", json={"spec": SPEC, "pool": pool})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])


@pytest.fixture
async def teams(server: InProcessServer) -> Teams:
    return await Teams(server).setup()


async def test_a_user_of_pool_b_gets_nothing_of_pool_a(teams: Teams) -> None:
    wf = await teams.submit("ua", "pool-a")
    async with teams.client("ub") as b:
        for path in (
            f"/api/v1/workflows/{wf}",
            f"/api/v1/workflows/{wf}/spec",
            f"/api/v1/workflows/{wf}/events",
            f"/api/v1/workflows/{wf}/tasks/t/logs",
            f"/workflows/{wf}",
            f"/workflows/{wf}/live",
            f"/workflows/{wf}/logs",
            f"/workflows/{wf}/tasks/t/logs",
            f"/workflows/{wf}/spec.txt",
        ):
            r = await b.get(path)
            assert r.status_code == 404, (path, r.status_code)
        assert (await b.post(f"/api/v1/workflows/{wf}/cancel", json={})).status_code == 404
        listed = (await b.get("/api/v1/workflows")).json()["items"]
        assert wf not in [w["id"] for w in listed]
        assert [p["name"] for p in (await b.get("/api/v1/pools")).json()["items"]] == ["pool-b"]
        assert [x["name"] for x in (await b.get("/api/v1/backends")).json()["items"]] == ["be-b"]
        me = (await b.get("/api/v1/me")).json()
        assert me == {"name": "ub", "display_name": "ub", "kind": "person",
                      "roles": ["team-b"], "pools": ["pool-b"], "via": "token"}  # fmt: skip
        refused = await b.post("/api/v1/workflows", json={"spec": SPEC, "pool": "pool-a"})
        assert refused.status_code == 403
        assert "pool-a" in refused.json()["detail"]
        page = await b.get("/workflows", params={"pool": "pool-a"})
        assert page.status_code == 200 and wf not in page.text
    async with teams.client("ua") as a:  # the owner, in her pool, sees it all
        assert (await a.get(f"/api/v1/workflows/{wf}")).status_code == 200
        assert (await a.get("/api/v1/workflows")).json()["items"][0]["id"] == wf


async def test_deny_wins_over_allow(teams: Teams) -> None:
    policies = [
        Policy("Allow", ["workflow:*", "pool:List"], ["pool/*"]),
        Policy("Deny", ["workflow:Cancel"], ["pool/pool-a"]),
    ]
    await teams.state.role_service.put("careful", "", policies)
    await teams.user("uc", ["careful"])
    wf_a, wf_b = await teams.submit("uc", "pool-a"), await teams.submit("uc", "pool-b")
    async with teams.client("uc") as c:
        denied = await c.post(f"/api/v1/workflows/{wf_a}/cancel", json={})
        assert denied.status_code == 403 and "workflow:Cancel" in denied.json()["detail"]
        assert (await c.post(f"/api/v1/workflows/{wf_b}/cancel", json={})).status_code in (200, 202)


@pytest.mark.parametrize(("scope", "status"), [("any", 200), ("own", 403)])
async def test_scope_any_lets_an_operator_cancel_anothers_workflow(
    teams: Teams, scope: str, status: int
) -> None:
    ops = [Policy("Allow", ["workflow:Read", "workflow:Cancel"], ["pool/pool-a"], scope)]  # type: ignore[arg-type]
    await teams.state.role_service.put("ops", "", ops)
    await teams.user("op", ["ops"])
    wf = await teams.submit("ua", "pool-a")
    async with teams.client("op") as c:
        r = await c.post(f"/api/v1/workflows/{wf}/cancel", json={"reason": "ops"})
        assert r.status_code in ((200, 202) if status == 200 else (403,)), r.text


async def test_a_token_carries_a_subset_of_its_owners_roles(teams: Teams) -> None:
    async with teams.client("admin") as admin:
        r = await admin.post("/api/v1/tokens", json={"name": "narrow", "roles": ["user"]})
        assert r.status_code == 201, r.text
        narrow = r.json()["token"]
    async with teams.server.client(narrow) as c:
        assert (await c.get("/api/v1/me")).json()["roles"] == ["user"]
        assert (await c.post("/api/v1/pools", json={"name": "nope"})).status_code == 403
        assert (await c.get("/api/v1/users")).status_code == 403
    async with teams.client("ua") as a:
        r = await a.post("/api/v1/tokens", json={"name": "wide", "roles": ["admin"]})
        assert r.status_code == 422 and "admin" in r.json()["detail"]


async def test_token_expiry_is_honoured_capped_and_said(teams: Teams) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    async with teams.client("ua") as a:
        r = await a.post("/api/v1/tokens", json={"name": "soon", "expires_at": soon.isoformat()})
        assert r.status_code == 201, r.text
        assert r.json()["expires_at"] == soon.replace(microsecond=0).isoformat().replace(
            "+00:00", "Z"
        )
        short = r.json()["token"]
        default = (await a.post("/api/v1/tokens", json={"name": "default"})).json()
        assert datetime.fromisoformat(default["expires_at"]) > datetime.now(UTC) + timedelta(
            days=364
        )
        far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
        r = await a.post("/api/v1/tokens", json={"name": "far", "expires_at": far})
        assert r.status_code == 422 and "GANTRY_TOKEN_MAX_LIFETIME" in r.json()["detail"]
        r = await a.post("/api/v1/tokens", json={"name": "naive", "expires_at": "2030-01-01T00:00"})
        assert r.status_code == 400
        listed = (await a.get("/api/v1/tokens")).json()["items"]
        assert {"last_used_at", "expires_at", "roles"} <= listed[0].keys()
    await asyncio.sleep(2.5)
    async with teams.server.client(short) as c:
        r = await c.get("/api/v1/me")
        assert r.status_code == 401 and "expired" in r.json()["detail"]


async def test_service_accounts_use_tokens_only(teams: Teams) -> None:
    async with teams.client("admin") as admin:
        r = await admin.post(
            "/api/v1/users",
            json={"name": "ci-bot", "kind": "service", "password": "long enough password"},
        )
        assert r.status_code == 422
        r = await admin.post("/api/v1/users", json={"name": "ci-bot", "kind": "service",
                                                    "roles": ["team-a"]})  # fmt: skip
        assert r.status_code == 201, r.text
        again = await admin.post("/api/v1/users", json={"name": "ci-bot"})
        assert again.status_code == 409
    async with teams.client("admin") as admin:
        made = await admin.post("/api/v1/users/ci-bot/tokens", json={"name": "pipeline"})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        listed = (await admin.get("/api/v1/users/ci-bot/tokens")).json()["items"]
        assert [t["name"] for t in listed] == ["pipeline"] and "token" not in listed[0]
        assert (
            await admin.post("/api/v1/users/ghost/tokens", json={"name": "x"})
        ).status_code == 404
    async with teams.client("ua") as a:  # not an admin of users
        assert (await a.post("/api/v1/users/ci-bot/tokens", json={"name": "x"})).status_code == 403
    async with teams.server.client(token) as bot:
        me = (await bot.get("/api/v1/me")).json()
        assert me["kind"] == "service" and me["pools"] == ["pool-a"]
        r = await bot.post("/api/v1/workflows", json={"spec": SPEC, "pool": "pool-a"})
        assert r.status_code == 201
    assert await teams.state.auth.check_password("ci-bot", "long enough password") is None
    async with teams.client("admin") as admin:
        revoked = await admin.delete(f"/api/v1/users/ci-bot/tokens/{made.json()['id']}")
        assert revoked.status_code == 204
    async with teams.server.client(token) as bot:
        assert (await bot.get("/api/v1/me")).status_code == 401


async def test_user_administration_refuses_what_would_break(teams: Teams) -> None:
    async with teams.client("admin") as admin:
        r = await admin.post("/api/v1/users", json={"name": "x", "roles": ["no-such-role"]})
        assert r.status_code == 422 and "no-such-role" in r.json()["detail"]
        await teams.submit("ua", "pool-a")
        r = await admin.delete("/api/v1/users/ua")
        assert r.status_code == 409 and "disable" in r.json()["detail"]
        r = await admin.patch("/api/v1/users/admin", json={"disabled": True})
        assert r.status_code == 409 and "admin role" in r.json()["detail"]
        r = await admin.delete("/api/v1/roles/user")
        assert r.status_code == 409 and "built-in" in r.json()["detail"]
        bad = {"policies": [{"effect": "Allow", "actions": ["workflow:Fly"]}]}
        r = await admin.put("/api/v1/roles/odd", json=bad)
        assert r.status_code == 422 and "policies[0].actions[0]" in r.json()["detail"]
        r = await admin.get("/api/v1/users", params={"limit": 501})
        assert r.status_code == 400
        page = (await admin.get("/api/v1/users", params={"limit": 2})).json()
        assert len(page["items"]) == 2 and page["next_cursor"]
        rest = await admin.get("/api/v1/users", params={"cursor": page["next_cursor"]})
        names = [u["name"] for u in page["items"] + rest.json()["items"]]
        assert names == sorted(names) and {"admin", "ua", "ub"} <= set(names)


async def _sign_in(server: InProcessServer, name: str, password: str) -> httpx.AsyncClient:
    browser = server.client()
    form = await browser.get("/login")
    r = await browser.post("/login", data={"username": name, "password": password,
                                           "_csrf_token": csrf_token(form.text)})  # fmt: skip
    assert r.status_code == 303, r.text
    return browser


async def test_a_password_change_ends_every_session(teams: Teams) -> None:
    await teams.user("pw", ["team-a"], password="first password")
    browser = await _sign_in(teams.server, "pw", "first password")
    async with contextlib.aclosing(browser), teams.client("pw") as api:
        assert (await browser.get("/api/v1/me")).json()["via"] == "password"
        wrong = await api.post("/api/v1/me/password", json={"current": "nope", "new": "x" * 12})
        assert wrong.status_code == 422
        short = await api.post("/api/v1/me/password", json={"current": "first password",
                                                             "new": "short"})  # fmt: skip
        assert short.status_code == 400
        r = await api.post(
            "/api/v1/me/password", json={"current": "first password", "new": "second password"}
        )
        assert r.status_code == 204, r.text
        assert (await browser.get("/api/v1/me")).status_code == 401
    assert await teams.state.auth.check_password("pw", "second password") is not None


@pytest.fixture
async def replica(database_url: str, tmp_path: Path) -> AsyncIterator[InProcessServer]:
    """A second control plane on the same database."""
    srv = InProcessServer(make_settings(database_url, tmp_path / "replica"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def _within_a_second(check: Any) -> float:
    start = asyncio.get_running_loop().time()
    while True:
        if await check():
            return asyncio.get_running_loop().time() - start
        assert asyncio.get_running_loop().time() - start < 1.0, "not within 1 s"
        await asyncio.sleep(0.02)


async def test_changes_reach_another_replica_within_a_second(
    teams: Teams, replica: InProcessServer
) -> None:
    wf = await teams.submit("ua", "pool-a")
    await teams.user("pw", ["team-b"], password="first password")
    browser = await _sign_in(replica, "pw", "first password")
    await _changes_reach(teams, replica, browser, wf)
    await browser.aclose()


async def _changes_reach(
    teams: Teams, replica: InProcessServer, browser: httpx.AsyncClient, wf: str
) -> None:
    async with teams.client("ub", replica) as b, teams.client("admin") as admin:
        assert (await b.get(f"/api/v1/workflows/{wf}")).status_code == 404  # cached: no access
        assert (await browser.get("/api/v1/me")).status_code == 200
        # A role change made on one replica ...
        r = await admin.put("/api/v1/roles/team-b", json={"policies": [
            {"effect": "Allow", "actions": ["workflow:*"], "resources": ["pool/pool-a"]}]})  # fmt: skip
        assert r.status_code == 200, r.text

        async def sees() -> bool:
            return (await b.get(f"/api/v1/workflows/{wf}")).status_code == 200

        await _within_a_second(sees)  # ... is in force on the other
        # A disabled user's token and sessions stop working there too.
        r = await admin.patch("/api/v1/users/ub", json={"disabled": True})
        assert r.status_code == 200 and r.json()["disabled"] is True

        async def refused() -> bool:
            return (await b.get("/api/v1/me")).status_code == 401

        await _within_a_second(refused)
        await admin.patch("/api/v1/users/pw", json={"disabled": True})

        async def signed_out() -> bool:
            return (await browser.get("/api/v1/me")).status_code == 401

        await _within_a_second(signed_out)
        # A revoked token, too.
        token_id = (await teams.state.auth.list_tokens("ua"))[0]["id"]
        async with teams.client("ua", replica) as a:
            assert (await a.get("/api/v1/me")).status_code == 200
            assert await teams.state.auth.revoke_token("ua", int(token_id))

            async def revoked() -> bool:
                return (await a.get("/api/v1/me")).status_code == 401

            await _within_a_second(revoked)


async def test_a_backend_token_is_rotated_with_a_grace_for_the_previous_one(teams: Teams) -> None:
    async def runner_may(token: str) -> int:
        async with teams.server.client(token) as runner:
            hello = {"backend": "be-a", "protocol_version": 1, "runner_version": "rotate"}
            return (await runner.post("/api/runner/v1/sessions", json=hello)).status_code

    assert await runner_may("gbk_a") == 201
    async with teams.client("admin") as admin:
        first = await admin.post("/api/v1/backends/be-a/token")
        assert first.status_code == 201, first.text
        assert first.json()["pool"] == "pool-a"
        new = first.json()["token"]
        assert await runner_may(new) == 201
        assert await runner_may("gbk_a") == 201  # the previous one, within its grace
        second = (await admin.post("/api/v1/backends/be-a/token")).json()["token"]
        assert await runner_may(second) == 201
        assert await runner_may(new) == 201  # now the previous one
        # The one before the previous stops at once, on every replica (the hint).
        assert await runner_may("gbk_a") == 401
        assert (await admin.post("/api/v1/backends/nope/token")).status_code == 404
    async with teams.client("ua") as a:  # sees pool-a, may not administer its backends
        r = await a.post("/api/v1/backends/be-a/token")
        assert r.status_code == 403 and "backend:Admin" in r.json()["detail"]
    async with teams.client("ub") as b:  # does not even see it
        assert (await b.post("/api/v1/backends/be-a/token")).status_code == 404


async def test_the_page_offers_cancel_only_to_who_may_cancel(teams: Teams) -> None:
    await teams.user("ua2", ["team-a"])
    wf = await teams.submit("ua", "pool-a")
    for name, offered in (("ua", True), ("ua2", False), ("admin", True)):
        async with teams.client(name) as c:
            page = await c.get(f"/workflows/{wf}")
            assert page.status_code == 200
            assert ('id="cancel-form"' in page.text) is offered, name


async def test_every_list_takes_limit_and_cursor(teams: Teams) -> None:
    lists = ("/api/v1/pools", "/api/v1/backends", "/api/v1/tokens", "/api/v1/roles",
             "/api/v1/users", "/api/v1/users/ua/tokens", "/api/v1/workflows")  # fmt: skip
    async with teams.client("admin") as admin:
        for path in lists:
            for bad in (0, 501):
                r = await admin.get(path, params={"limit": bad})
                assert r.status_code == 400 and "limit" in r.text, (path, bad, r.text)
        for path, key in (("/api/v1/pools", "name"), ("/api/v1/roles", "name")):
            seen, cursor = [], None
            while True:
                params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
                page = (await admin.get(path, params=params)).json()
                assert len(page["items"]) <= 1
                seen += [item[key] for item in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            every = [item[key] for item in (await admin.get(path)).json()["items"]]
            assert seen == every and len(every) >= 3, (path, seen)


async def test_a_user_holds_a_bounded_number_of_tokens(teams: Teams) -> None:
    teams.state.auth.max_tokens = 3  # ua has one already (the fixture's)
    async with teams.client("ua") as a:
        for _ in range(2):
            assert (await a.post("/api/v1/tokens", json={"name": "more"})).status_code == 201
        r = await a.post("/api/v1/tokens", json={"name": "one too many"})
        assert r.status_code == 409 and "GANTRY_MAX_TOKENS_PER_USER" in r.json()["detail"]
        page = (await a.get("/api/v1/tokens", params={"limit": 2})).json()
        rest = (await a.get("/api/v1/tokens", params={"cursor": page["next_cursor"]})).json()
        ids = [t["id"] for t in page["items"] + rest["items"]]
        assert len(ids) == 3 and ids == sorted(ids, reverse=True)


async def test_an_open_stream_ends_when_its_callers_access_changes(teams: Teams) -> None:
    wf = await teams.submit("ua", "pool-a")
    token_id = (await teams.state.auth.list_tokens("ua"))[0]["id"]
    async with teams.client("ua") as a:
        async with a.stream("GET", f"/api/v1/workflows/{wf}/events") as events:
            assert events.status_code == 200
            lines = events.aiter_lines()
            assert (await anext(lines)).startswith("event: snapshot")
            start = asyncio.get_running_loop().time()
            await teams.state.auth.revoke_token("ua", int(token_id))
            with pytest.raises((StopAsyncIteration, httpx.RemoteProtocolError)):  # noqa: PT012
                async with asyncio.timeout(5):
                    while True:
                        await anext(lines)
            assert asyncio.get_running_loop().time() - start < 1.0, "not within 1 s"


async def test_an_empty_authorization_header_never_lets_the_cookie_skip_csrf(
    teams: Teams,
) -> None:
    """Found by attacking it: the CSRF check was skipped for any Authorization header, while
    authentication read an empty one as "no token" and used the session cookie."""
    await teams.user("cs", ["team-a"], password="csrf password")
    browser = await _sign_in(teams.server, "cs", "csrf password")
    async with contextlib.aclosing(browser):
        for header in ("", "Bearer", "Basic abc"):
            r = await browser.post("/tokens", data={"name": "x"}, headers={"authorization": header})
            assert r.status_code == 401, (header, r.status_code)
        assert (await teams.state.auth.list_tokens("cs"))[0]["name"] == "t"  # only the fixture's


async def test_a_person_keeps_a_bounded_number_of_sessions(
    teams: Teams, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.auth.sessions

    monkeypatch.setattr(app.auth.sessions, "SESSIONS_PER_USER", 3)
    await teams.user("many", ["team-a"], password="many password")
    browsers = [await _sign_in(teams.server, "many", "many password") for _ in range(5)]
    try:
        alive = [(await b.get("/api/v1/me")).status_code for b in browsers]
        assert alive == [401, 401, 200, 200, 200]  # the two oldest ended
        rows = await teams.state.db.pool.fetchval(
            "SELECT count(*) FROM web_session WHERE \"user\" = 'many'"
        )
        assert rows == 3
    finally:
        for b in browsers:
            await b.aclose()


async def test_a_stream_of_a_session_ends_when_it_signs_out(teams: Teams) -> None:
    await teams.user("so", ["team-a"], password="signout password")
    wf = await teams.submit("ua", "pool-a")
    browser = await _sign_in(teams.server, "so", "signout password")
    async with contextlib.aclosing(browser):
        async with browser.stream("GET", f"/api/v1/workflows/{wf}/events") as events:
            lines = events.aiter_lines()
            assert (await anext(lines)).startswith("event: snapshot")
            async with teams.server.client(cookies=browser.cookies) as same:
                page = await same.get("/workflows")
                out = await same.post("/logout", data={"_csrf_token": csrf_token(page.text)})
                assert out.status_code == 303
            start = asyncio.get_running_loop().time()
            with pytest.raises((StopAsyncIteration, httpx.RemoteProtocolError)):  # noqa: PT012
                async with asyncio.timeout(5):
                    while True:
                        await anext(lines)
            assert asyncio.get_running_loop().time() - start < 1.0, "not within 1 s"


async def test_a_narrow_token_mints_only_narrow_tokens(teams: Teams) -> None:
    """Found by a review: a token carrying a subset of roles, or a short life, created a
    token with every role of its owner and a year's life."""
    await teams.state.users.update("ua", roles=["team-a", "user"])
    week = datetime.now(UTC) + timedelta(days=7)
    async with teams.client("ua") as a:
        r = await a.post("/api/v1/tokens", json={"name": "narrow", "roles": ["team-a"],
                                                  "expires_at": week.isoformat()})  # fmt: skip
        assert r.status_code == 201, r.text
        narrow = r.json()["token"]
    async with teams.server.client(narrow) as n:
        minted = await n.post("/api/v1/tokens", json={"name": "child"})
        assert minted.status_code == 201, minted.text
        assert datetime.fromisoformat(minted.json()["expires_at"]) <= week
        async with teams.server.client(minted.json()["token"]) as child:
            assert (await child.get("/api/v1/me")).json()["roles"] == ["team-a"]
        wide = await n.post("/api/v1/tokens", json={"name": "wide", "roles": ["user"]})
        assert wide.status_code == 422 and "carries only team-a" in wide.json()["detail"]
        later = (week + timedelta(days=1)).isoformat()
        long = await n.post("/api/v1/tokens", json={"name": "long", "expires_at": later})
        assert long.status_code == 422 and "outlive" in long.json()["detail"]


async def test_the_submit_page_follows_the_specs_pool_unless_one_is_chosen(teams: Teams) -> None:
    """Found by a review: the page's pool list always sent a pool, which overrode the spec's
    own `pool:` without a word (a spec for the default pool ran on another)."""
    spec = SPEC.replace("  name: team\n", "  name: team\n  pool: pool-b\n")
    async with teams.client("ua") as a:
        form = (await a.get("/submit")).text
        assert '<option value="" selected>as the spec says' in form
        refused = await a.post("/submit", files={"spec": (None, spec), "pool": (None, "")})
        assert refused.status_code == 403 and "pool-b" in refused.text
        chosen = await a.post("/submit", files={"spec": (None, spec), "pool": (None, "pool-a")})
        assert chosen.status_code == 303, chosen.text


async def test_the_admin_role_and_the_last_admin_cannot_be_taken_away(teams: Teams) -> None:
    """Found by attacking it: the built-in admin role could be emptied, two admins disabling
    each other at once both succeeded, and an admin who cannot sign in counted as the last."""
    async with teams.client("admin") as admin:
        for policies in ([], [{"effect": "Deny", "actions": ["role:Admin"], "resources": ["*"]},
                              {"effect": "Allow", "actions": ["*"], "resources": ["*"]}]):  # fmt: skip
            r = await admin.put("/api/v1/roles/admin", json={"policies": policies})
            assert r.status_code == 409 and "role:Admin" in r.json()["detail"], r.text
        # An admin with no way to sign in is no admin to fall back on.
        made = await admin.post("/api/v1/users", json={"name": "ghost", "roles": ["admin"]})
        assert made.status_code == 201
        r = await admin.patch("/api/v1/users/admin", json={"disabled": True})
        assert r.status_code == 409
        # Two admins who can sign in, disabling each other at the same moment: one wins.
        await teams.user("admin2", ["admin"])
        async with teams.client("admin2") as other:
            answers = await asyncio.gather(
                admin.patch("/api/v1/users/admin2", json={"disabled": True}),
                other.patch("/api/v1/users/admin", json={"disabled": True}),
            )
        assert sorted(a.status_code for a in answers) in ([200, 409], [200, 401], [200, 403])
        enabled = await teams.state.db.pool.fetchval(
            "SELECT count(*) FROM gantry_user WHERE name IN ('admin', 'admin2') AND NOT disabled"
        )
        assert enabled == 1


async def test_a_tokens_streams_end_when_it_expires(teams: Teams) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    wf = await teams.submit("ua", "pool-a")
    async with teams.client("ua") as a:
        made = await a.post(
            "/api/v1/tokens", json={"name": "brief", "expires_at": soon.isoformat()}
        )
        brief = made.json()["token"]
        r = await a.post("/api/v1/tokens", json={"name": "none", "roles": []})
        assert r.status_code == 400  # at least one role, or leave roles out
    async with (
        teams.server.client(brief) as c,
        c.stream("GET", f"/api/v1/workflows/{wf}/events") as events,
    ):
        lines = events.aiter_lines()
        assert (await anext(lines)).startswith("event: snapshot")
        with pytest.raises((StopAsyncIteration, httpx.RemoteProtocolError)):  # noqa: PT012
            async with asyncio.timeout(10):
                while True:
                    await anext(lines)
        assert datetime.now(UTC) - soon < timedelta(seconds=1.5)


async def test_the_admin_and_token_forms_bound_what_they_take(teams: Teams) -> None:
    """The pages refuse what the API refuses: an unknown kind, too many roles, a bad role name,
    too many policies, a number of days that is none."""
    one = {"effect": "Allow", "actions": ["pool:List"], "resources": ["pool/pool-a"]}
    async with teams.client("admin") as admin:
        for form in (
            {"name": "robo", "kind": "robot"},
            {"name": "many", "roles": [f"r{i}" for i in range(65)]},
            {"name": "odd", "roles": ["not a role"]},
        ):
            r = await admin.post("/admin/users", data=form)
            assert r.status_code == 422, (form, r.status_code)
        policies = json.dumps([one] * 101)
        r = await admin.post("/admin/roles", data={"name": "big", "policies": policies})
        assert r.status_code == 422
        r = await admin.post("/tokens", data={"name": "t", "days": "abc"})
        assert r.status_code == 422
    names = [u["name"] for u in (await teams.state.users.page(500, None))[0]]
    assert not {"robo", "many", "odd"} & set(names)
