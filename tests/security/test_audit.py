"""The audit log against a real server: one row per state-changing request (refused ones too),
none for reads or a runner's reports, never a secret; filters, keyset pages and who may read it."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest

from app.audit.middleware import ACTIONS, NOT_AUDITED, UNSAFE
from runner import protocol as p
from tests.security.test_roles import SPEC, Teams
from tests.support import ADMIN_TOKEN, InProcessServer, csrf_token

pytestmark = pytest.mark.timeout(300)

PASSWORD = "a password never to be logged"


@pytest.fixture
async def teams(server: InProcessServer) -> Teams:
    teams = await Teams(server).setup()
    await teams.user("pw", ["team-a"], password=PASSWORD)
    return teams


class Log:
    """The audit rows written since the last look."""

    def __init__(self, server: InProcessServer) -> None:
        self.db = server.app.state.db
        self.seen = 0

    async def all(self) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            return [dict(r) for r in await conn.fetch("SELECT * FROM audit_event ORDER BY id")]

    async def new(self) -> list[dict[str, Any]]:
        rows = [r for r in await self.all() if r["id"] > self.seen]
        if rows:
            self.seen = rows[-1]["id"]
        return rows

    async def one(self, **expected: Any) -> dict[str, Any]:
        rows = await self.new()
        assert len(rows) == 1, rows
        row = rows[0]
        assert {k: row[k] for k in expected} == expected, row
        assert row["source"] == "127.0.0.1"
        return row

    async def none(self) -> None:
        assert await self.new() == []


def hello(backend: str) -> bytes:
    return msgspec.json.encode(p.Hello(backend=backend, protocol_version=1, runner_version="t"))


def test_every_unsafe_route_is_named_or_deliberately_left_out() -> None:
    from pathlib import Path

    from app.asgi import create_app
    from app.settings import Settings

    app = create_app(
        Settings(database_url="postgresql://unused/db", data_dir=Path("/nonexistent"),
                 secret_key="k")
    )  # fmt: skip
    unsafe = {
        f"{method} {route.path_format}"
        for route in app.routes
        for method in getattr(route, "methods", ())
        if method in UNSAFE
    }
    named = set(ACTIONS) | NOT_AUDITED
    assert not unsafe - named, f"unsafe routes without an audit action: {sorted(unsafe - named)}"
    assert not named - unsafe, (
        f"audit actions for routes that do not exist: {sorted(named - unsafe)}"
    )


async def test_each_change_is_one_row_and_reads_none(teams: Teams) -> None:
    server = teams.server
    log = Log(server)
    await log.new()  # whatever setting up wrote (nothing: it went through the services)
    async with teams.client("ua") as a, teams.client("ub") as b, teams.client("admin") as admin:
        r = await a.post("/api/v1/workflows", json={"spec": SPEC, "pool": "pool-a"})
        assert r.status_code == 201
        wf = r.json()["id"]
        await log.one(principal="ua", via="token", action="workflow:Create", target=wf,
                      outcome="allowed", status=201)  # fmt: skip
        assert (await a.get(f"/api/v1/workflows/{wf}")).status_code == 200
        assert (await a.get("/workflows")).status_code == 200
        await log.none()

        assert (await a.post(f"/api/v1/workflows/{wf}/cancel", json={})).status_code in (200, 202)
        await log.one(principal="ua", via="token", action="workflow:Cancel", target=wf,
                      outcome="allowed")  # fmt: skip

        refused = await b.post("/api/v1/workflows", json={"spec": SPEC, "pool": "pool-a"})
        assert refused.status_code == 403
        await log.one(principal="ub", via="token", action="workflow:Create", outcome="denied",
                      status=403)  # fmt: skip

        r = await admin.put("/api/v1/roles/team-c", json={"description": "c", "policies": []})
        assert r.status_code == 200, r.text
        await log.one(principal="admin", via="token", action="role:Admin", target="team-c",
                      outcome="allowed", status=200)  # fmt: skip

        r = await admin.post("/api/v1/backends/be-a/token")
        assert r.status_code in (200, 201), r.text
        rotated = r.json()["token"]
        await log.one(principal="admin", action="backend:Admin", target="be-a", outcome="allowed")

        r = await a.post("/api/v1/tokens", json={"name": "laptop"})
        assert r.status_code == 201
        token = r.json()["token"]
        await log.one(principal="ua", action="credentials:Token", target=str(r.json()["id"]),
                      outcome="allowed", status=201)  # fmt: skip

    # A token that is no token: refused by authentication, and still recorded.
    async with server.client("gnt_no-such-token") as nobody:
        assert (await nobody.post("/api/v1/workflows", json={"spec": SPEC})).status_code == 401
    await log.one(principal="", via="token", action="workflow:Create", outcome="denied",
                  status=401)  # fmt: skip

    async with server.client() as browser:
        form = await browser.get("/login")
        wrong = await browser.post("/login", data={"username": "pw", "password": "not it",
                                                   "_csrf_token": csrf_token(form.text)})  # fmt: skip
        assert wrong.status_code == 401
        await log.one(principal="pw", via="password", action="auth:SignIn", outcome="denied",
                      status=401)  # fmt: skip
        right = await browser.post("/login", data={"username": "pw", "password": PASSWORD,
                                                   "_csrf_token": csrf_token(form.text)})  # fmt: skip
        assert right.status_code == 303
        await log.one(principal="pw", via="password", action="auth:SignIn", outcome="allowed",
                      status=303)  # fmt: skip
        # A form posted without its CSRF token: refused by the CSRF check, recorded as such.
        assert (await browser.post("/tokens", data={"name": "forged"})).status_code == 403
        await log.one(principal="pw", via="password", action="credentials:Token",
                      outcome="denied", status=403)  # fmt: skip
        page = await browser.get("/workflows")
        out = await browser.post("/logout", data={"_csrf_token": csrf_token(page.text)})
        assert out.status_code == 303
        await log.one(principal="pw", via="password", action="auth:SignOut", outcome="allowed")

    async with server.client(rotated) as runner:
        r = await runner.post("/api/runner/v1/sessions", content=hello("be-a"))
        assert r.status_code == 201, r.text
        first = r.json()["session_id"]
        await log.one(principal="be-a", via="token", action="runner:SessionOpen", target=first,
                      outcome="allowed", status=201)  # fmt: skip
        beat = msgspec.json.encode(p.Heartbeat(p.Capacity()))
        for _ in range(3):
            r = await runner.post(f"/api/runner/v1/sessions/{first}/heartbeat", content=beat)
            assert r.status_code == 200, r.text
        await log.none()
        # A new session ends the first: its opening is the request's row, its closing the service's.
        r = await runner.post("/api/runner/v1/sessions", content=hello("be-a"))
        second = r.json()["session_id"]
        rows = await log.new()
        assert [(x["action"], x["target"], x["principal"]) for x in rows] == [
            ("runner:SessionClose", first, "be-a"),
            ("runner:SessionOpen", second, "be-a"),
        ]
        refused = await runner.post("/api/runner/v1/sessions", content=hello("be-b"))
        assert refused.status_code == 403
        await log.one(principal="be-a", action="runner:SessionOpen", outcome="denied")

    everything = repr(await log.all())
    for secret in (PASSWORD, "not it", token, rotated, ADMIN_TOKEN, "gbk_a", "gnt_no-such-token"):
        assert secret not in everything


async def test_filters_and_keyset_pages(teams: Teams) -> None:
    for _ in range(3):
        await teams.submit("ua", "pool-a")
    async with teams.client("ub") as b:
        for _ in range(2):
            assert (await b.post("/api/v1/workflows", json={"spec": SPEC, "pool": "pool-a"})
                    ).status_code == 403  # fmt: skip
    async with teams.client("admin") as admin:

        async def items(**params: Any) -> list[dict[str, Any]]:
            r = await admin.get("/api/v1/audit", params=params)
            assert r.status_code == 200, r.text
            return r.json()["items"]  # type: ignore[no-any-return]

        everything = await items()
        assert len(everything) == 5
        assert set(everything[0]) == {"time", "principal", "via", "action", "target", "source",
                                      "outcome"}  # fmt: skip
        assert [i["principal"] for i in everything] == ["ub", "ub", "ua", "ua", "ua"]
        assert len(await items(principal="ua")) == 3
        assert len(await items(outcome="denied")) == 2
        assert len(await items(action="workflow:Create", principal="ub")) == 2
        assert await items(action="workflow:Cancel") == []
        wf = everything[2]["target"]
        assert [i["target"] for i in await items(target=wf)] == [wf]
        now = datetime.now(UTC)
        assert len(await items(since=(now - timedelta(minutes=5)).isoformat())) == 5
        assert await items(since=(now + timedelta(minutes=5)).isoformat()) == []
        assert await items(until=(now - timedelta(minutes=5)).isoformat()) == []

        seen, cursor = [], None
        while True:
            r = await admin.get(
                "/api/v1/audit", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
            )
            page = r.json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == everything
        # New rows do not shift a page already begun (keyset on the id).
        first = (await admin.get("/api/v1/audit", params={"limit": 2})).json()
        await teams.submit("ua", "pool-a")
        rest = await admin.get("/api/v1/audit", params={"cursor": first["next_cursor"]})
        assert rest.json()["items"] == everything[2:]

        for limit in (0, 501):
            r = await admin.get("/api/v1/audit", params={"limit": limit})
            assert r.status_code == 400 and "limit" in r.json()["detail"], r.text
        r = await admin.get("/api/v1/audit", params={"since": "2026-12-01T00:00:00"})
        assert r.status_code == 400 and "since" in r.json()["detail"]
        r = await admin.get("/api/v1/audit", params={"cursor": "bm90IGEgY3Vyc29y"})
        assert r.status_code == 422 and "cursor" in r.json()["detail"]
        r = await admin.get("/api/v1/audit", params={"target": "x" * 201})
        assert r.status_code == 400 and "target" in r.json()["detail"]

        html = await admin.get("/admin/audit", params={"principal": "ub", "limit": 1},
                               headers={"accept": "text/html"})  # fmt: skip
        assert html.status_code == 200 and "workflow:Create" in html.text
        assert 'href="/admin/audit"' in html.text  # the nav links it for those who may read it
        assert "Older" in html.text and "cursor=" in html.text


async def test_only_audit_read_may_read_it(teams: Teams) -> None:
    async with teams.client("ua") as a:
        r = await a.get("/api/v1/audit")
        assert r.status_code == 403 and "audit:Read" in r.json()["detail"]
        r = await a.get("/admin/audit", headers={"accept": "text/html"})
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
        assert "audit:Read" in r.text and "Traceback" not in r.text
        workflows = await a.get("/workflows")
        assert 'href="/admin/audit"' not in workflows.text
    # A role that grants only audit:Read is enough.
    from app.access.policy import Policy

    await teams.state.role_service.put("auditor", "", [Policy("Allow", ["audit:Read"], ["*"])])
    await teams.user("au", ["auditor"])
    async with teams.client("au") as auditor:
        assert (await auditor.get("/api/v1/audit")).status_code == 200
        assert (await auditor.get("/admin/audit")).status_code == 200


async def test_a_failed_write_is_logged_and_the_answer_goes_out(
    teams: Teams, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @property
        def pool(self) -> Any:
            raise OSError("the database is gone")

    audit = teams.state.audit
    audit.db = Broken()
    try:
        with caplog.at_level(logging.ERROR, logger="app.audit.service"):
            wf = await teams.submit("ua", "pool-a")
        assert wf
        assert "could not write the audit event workflow:Create" in caplog.text
    finally:
        audit.db = teams.state.db


async def test_streams_and_refusals_still_answer(teams: Teams) -> None:
    """A followed log (a GET) passes untouched; an unsafe request's refusal keeps its body."""
    wf = await teams.submit("ua", "pool-a")
    async with teams.client("ua") as a:
        with contextlib.suppress(httpx.ReadTimeout):
            async with a.stream("GET", f"/api/v1/workflows/{wf}/events", timeout=2) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("event: snapshot"):
                        break
        r = await a.post("/api/v1/workflows", json={"spec": SPEC, "pool": "pool-b"})
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"


async def test_found_by_a_review_times_tokens_in_paths_and_anonymous_floods(
    teams: Teams, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.audit.middleware

    async with teams.server.client(ADMIN_TOKEN) as admin:
        for bad in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            for path in ("/api/v1/audit", "/admin/audit"):
                r = await admin.get(path, params={"until": bad})
                assert r.status_code == 400, (path, bad, r.status_code)
        pasted = "gnt_" + "S" * 40
        await admin.post(f"/api/v1/workflows/{pasted}/cancel", json={})
        rows = await Log(teams.server).all()
        assert all("SSSS" not in r["target"] for r in rows)
    monkeypatch.setattr(app.audit.middleware, "REFUSALS_PER_MINUTE", 5)
    before = len(await Log(teams.server).all())
    async with teams.server.client("gnt_made-up") as anonymous:
        for _ in range(12):
            assert (await anonymous.post("/api/v1/workflows/x/cancel", json={})).status_code == 401
    written = len(await Log(teams.server).all()) - before
    assert written <= 10, written  # 12 before; a minute may turn over once during the test
