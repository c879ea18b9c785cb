"""Issue 7, items 6 and 9: error pages, browser hardening headers, revocable sessions, throttling.

Every test runs against the real server (hypercorn, PostgreSQL) through HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support import (
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    ROOT,
    InProcessServer,
    csrf_token,
    make_settings,
    self_signed_cert,
)

HTML = {"accept": "text/html,application/xhtml+xml"}
COOKIE = "gantry_session"
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
CSP_PARTS = [
    "default-src 'self'",
    "script-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "object-src 'none'",
]


async def _sign_in(
    client: httpx.AsyncClient, username: str = "admin", password: str = ADMIN_PASSWORD
) -> httpx.Response:
    token = csrf_token((await client.get("/login")).text)
    return await client.post(
        "/login", data={"username": username, "password": password, "_csrf_token": token}
    )


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    with_trace = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not with_trace, [r.getMessage() for r in with_trace]
    assert "Traceback" not in caplog.text


# -- item 6: unknown pages, wrong methods, the favicon ---------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no-such-page", 404),
        ("GET", "/workflows/a/b/c/d/e", 404),
        ("PUT", "/workflows", 405),
        ("TRACE", "/readyz", 405),
        ("DELETE", "/login", 405),
    ],
)
async def test_unknown_pages_and_methods_are_readable_pages(
    server: InProcessServer,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with server.client() as anon:
        r = await anon.request(method, path, headers=HTML)
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("text/html")
    assert f"{status} ·" in r.text
    assert '<nav aria-label="Main">' in r.text and 'href="/workflows"' in r.text
    # The CSRF header of the page holds a token or nothing, never a Python repr.
    header = re.search(r"hx-headers='([^']*)'", r.text)
    assert header and "<function" not in header.group(1) and "object at" not in r.text
    assert '"x-csrf-token": ""' in header.group(1)
    if status == 405:
        assert r.headers.get("allow"), "a 405 says which methods the path takes"
        assert method in r.text
    _no_tracebacks(caplog)


async def test_not_found_under_api_is_problem_json(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with server.client(ADMIN_TOKEN) as api:
        for method, path, status in [
            ("GET", "/api/v1/no-such-thing", 404),
            ("PATCH", "/api/v1/workflows", 405),
        ]:
            r = await api.request(method, path)
            assert r.status_code == status
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["status"] == status and r.json()["title"]
    _no_tracebacks(caplog)


async def test_a_signed_in_not_found_page_shows_the_user_and_a_working_token(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with server.client() as browser:
        assert (await _sign_in(browser)).status_code == 303
        r = await browser.get("/workflows/no-such-workflow", headers=HTML)
        assert r.status_code == 404
        assert '<nav aria-label="Main">' in r.text and "Sign out" in r.text
        header = re.search(r"hx-headers='\{\"x-csrf-token\": \"([^\"]*)\"\}'", r.text)
        assert header and header.group(1) == csrf_token(r.text)
    _no_tracebacks(caplog)


async def test_favicon_is_served_to_anyone(server: InProcessServer) -> None:
    async with server.client() as anon:
        r = await anon.get("/favicon.ico")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("image/")
        assert r.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
        svg = await anon.get("/static/favicon.svg")
        assert svg.status_code == 200 and b"<svg" in svg.content


async def test_a_real_server_error_is_logged_once(
    server: InProcessServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(user: str) -> list[dict[str, object]]:
        raise RuntimeError("the token list broke")

    monkeypatch.setattr(server.app.state.auth, "list_tokens", broken)
    caplog.set_level(logging.DEBUG)
    async with server.client(ADMIN_TOKEN) as api:
        r = await api.get("/tokens", headers=HTML)
    assert r.status_code == 500 and "Internal server error" in r.text
    assert '<nav aria-label="Main">' in r.text
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and "the token list broke" in caplog.text
    assert caplog.text.count("Traceback") <= 1


# -- item 9: headers on every response -------------------------------------------------------


def _check_headers(r: httpx.Response, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (what, name, r.headers.get(name))
    csp = r.headers.get("content-security-policy", "")
    for part in CSP_PARTS:
        assert part in csp, (what, part, csp)
    assert "'unsafe-inline'" not in csp.split("style-src-attr")[0], (what, csp)
    assert "unsafe-eval" not in csp


async def test_every_kind_of_answer_carries_the_browser_headers(server: InProcessServer) -> None:
    async with server.client() as anon:
        _check_headers(await anon.get("/login"), "page")
        _check_headers(await anon.get("/static/app.js"), "static file")
        _check_headers(await anon.get("/favicon.ico"), "favicon")
        _check_headers(await anon.get("/nope", headers=HTML), "404 page")
        _check_headers(await anon.put("/workflows", headers=HTML), "405 page")
        _check_headers(await anon.get("/workflows", headers=HTML), "redirect to sign-in")
        _check_headers(await anon.get("/api/v1/workflows"), "401 problem")
        _check_headers(await anon.get("/healthz"), "health check")
    async with server.client(ADMIN_TOKEN) as api:
        _check_headers(await api.get("/api/v1/workflows"), "API answer")
        _check_headers(await api.get("/pools", headers=HTML), "page signed in")
        # A live fragment stream: the headers come with its first bytes.
        async with api.stream("GET", "/pools/live", headers={"hx-request": "true"}) as live:
            assert live.status_code == 200
            _check_headers(live, "fragment stream")
        # The OpenAPI explorer runs Swagger UI's inline bootstrap, but still cannot be framed.
        docs = await api.get("/schema/swagger")
        assert docs.status_code == 200
        assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
        assert docs.headers["x-frame-options"] == "DENY"


def _template_files() -> list[Path]:
    files = sorted((ROOT / "app" / "templates").rglob("*.html"))
    assert len(files) >= 8, files
    return files


def test_templates_hold_no_inline_script_or_event_handler() -> None:
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
    handler = re.compile(r"""\s(on[a-z]+|hx-on[:\w-]*)\s*=""", re.IGNORECASE)
    offenders = []
    for path in _template_files():
        text = path.read_text()
        for pattern in (inline_script, handler):
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0).strip()}")
    assert not offenders, offenders


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    # The patterns above would catch the offending forms (so the scan cannot pass vacuously).
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
    handler = re.compile(r"""\s(on[a-z]+|hx-on[:\w-]*)\s*=""", re.IGNORECASE)
    assert inline_script.search("<script>alert(1)</script>")
    assert not inline_script.search('<script src="/static/app.js" defer></script>')
    assert handler.search('<button onclick="x()">')
    assert handler.search('<form hx-on:submit="x()">')
    assert not handler.search('<div sse-connect="/x" action="/y">')


# -- item 9: sessions end on the server --------------------------------------------------------


async def test_a_cookie_copied_before_sign_out_is_refused_after_it(server: InProcessServer) -> None:
    async with server.client() as browser:
        signed_in = await _sign_in(browser)
        assert signed_in.status_code == 303
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
        stolen = browser.cookies[COOKIE]
        page = await browser.get("/workflows")
        assert page.status_code == 200
        token = csrf_token(page.text)
        assert (await browser.post("/logout", data={"_csrf_token": token})).status_code == 303
    async with server.client(cookies={COOKIE: stolen}) as thief:
        assert (await thief.get("/api/v1/workflows")).status_code == 401
        r = await thief.get("/workflows", headers=HTML)
        assert r.status_code in (302, 303, 307) and r.headers["location"].startswith("/login")


async def test_the_session_id_changes_at_sign_in(server: InProcessServer) -> None:
    planted = "a" * 64  # a value an attacker chose and planted in the victim's browser
    async with server.client(cookies={COOKIE: planted}) as browser:
        signed_in = await _sign_in(browser)
        assert signed_in.status_code == 303
        first = signed_in.cookies[COOKIE]
        assert first != planted
    async with server.client(cookies={COOKIE: first}) as browser:
        assert (await browser.get("/api/v1/workflows")).status_code == 200
        # Signing in again issues another id and ends the previous one.
        again = await _sign_in(browser)
        assert again.status_code == 303
        second = again.cookies[COOKIE]
        assert second != first
    for value, works in ((planted, False), (first, False), (second, True)):
        async with server.client(cookies={COOKIE: value}) as c:
            expected = 200 if works else 401
            assert (await c.get("/api/v1/workflows")).status_code == expected, value


async def test_anonymous_visits_store_no_sessions(
    server: InProcessServer, database_url: str
) -> None:
    async with server.client() as anon:
        for _ in range(5):
            await anon.get("/login")
            await anon.get("/workflows", headers=HTML)
        assert COOKIE not in anon.cookies
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM web_session") == 0
    finally:
        await conn.close()


async def test_end_sessions_of_a_user_ends_them_all(server: InProcessServer) -> None:
    cookies = []
    for _ in range(2):
        async with server.client() as browser:
            assert (await _sign_in(browser)).status_code == 303
            cookies.append(browser.cookies[COOKIE])
    assert await server.app.state.auth.end_sessions("admin") == 2
    for value in cookies:
        async with server.client(cookies={COOKIE: value}) as c:
            assert (await c.get("/api/v1/workflows")).status_code == 401


async def test_expired_sessions_are_refused_and_cleaned_up(
    server: InProcessServer, database_url: str
) -> None:
    async with server.client() as browser:
        assert (await _sign_in(browser)).status_code == 303
        old = browser.cookies[COOKIE]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE web_session SET expires_at = now() - interval '1 second'")
        async with server.client(cookies={COOKIE: old}) as c:
            assert (await c.get("/api/v1/workflows")).status_code == 401
        async with server.client() as browser:
            assert (await _sign_in(browser)).status_code == 303
        # The expired row was removed by the next sign-in; only the new session is left.
        assert await conn.fetchval("SELECT count(*) FROM web_session") == 1
        assert await conn.fetchval("SELECT count(*) FROM web_session WHERE expires_at < now()") == 0
    finally:
        await conn.close()


# -- item 9: sign-in throttling ----------------------------------------------------------------


async def test_ten_wrong_passwords_then_the_right_one_is_429(server: InProcessServer) -> None:
    auth = server.app.state.auth
    await auth.ensure_user("alice", ["user"], "alice-password")
    async with server.client() as guesser:
        for i in range(10):
            r = await _sign_in(guesser, "admin", f"guess-{i}")
            assert r.status_code == 401, i
        r = await _sign_in(guesser, "admin", ADMIN_PASSWORD)
        assert r.status_code == 429
        retry_after = int(r.headers["retry-after"])
        assert 0 < retry_after <= 15 * 60
        assert r.headers["content-type"].startswith("text/html")
        assert "Too many failed sign-ins" in r.text and "Try again in" in r.text
        assert COOKIE not in guesser.cookies
        # Another account from the same address still signs in (the per-address limit is higher).
        assert (await _sign_in(guesser, "alice", "alice-password")).status_code == 303
    # The same account from another client is throttled too: the count is the account's.
    async with server.client() as owner:
        assert (await _sign_in(owner, "ADMIN", ADMIN_PASSWORD)).status_code == 429


async def test_parallel_guesses_cannot_slip_past_the_count(server: InProcessServer) -> None:
    async with server.client() as guesser:
        token = csrf_token((await guesser.get("/login")).text)

        async def guess(i: int) -> int:
            data = {"username": "admin", "password": f"guess-{i}", "_csrf_token": token}
            return (await guesser.post("/login", data=data)).status_code

        codes = await asyncio.gather(*(guess(i) for i in range(25)))
    assert sorted(codes) == [401] * 10 + [429] * 15


@pytest.fixture
async def strict_server(database_url: str, tmp_path: Path) -> AsyncIterator[InProcessServer]:
    srv = InProcessServer(
        make_settings(database_url, tmp_path, sign_in_account_limit=5, sign_in_address_limit=8)
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_per_address_limit_and_a_success_does_not_reset_it(
    strict_server: InProcessServer,
) -> None:
    auth = strict_server.app.state.auth
    await auth.ensure_user("alice", ["user"], "alice-password")
    async with strict_server.client() as c:
        for i in range(4):
            assert (await _sign_in(c, "bob", f"guess-{i}")).status_code == 401
        # A correct sign-in in between resets alice's own count, not the address's.
        assert (await _sign_in(c, "alice", "alice-password")).status_code == 303
        for i in range(4):
            assert (await _sign_in(c, "carol", f"guess-{i}")).status_code == 401
        # 8 failures from this address now: every account is refused from here.
        r = await _sign_in(c, "alice", "alice-password")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "your network address" in r.text


async def test_a_right_password_clears_the_accounts_failures(
    strict_server: InProcessServer,
) -> None:
    auth = strict_server.app.state.auth
    await auth.ensure_user("alice", ["user"], "alice-password")
    async with strict_server.client() as c:
        for i in range(4):
            assert (await _sign_in(c, "alice", f"typo-{i}")).status_code == 401
        assert (await _sign_in(c, "alice", "alice-password")).status_code == 303
        for i in range(3):
            assert (await _sign_in(c, "alice", f"typo-{i}")).status_code == 401
        # 3 failures since the success (not 7): below the account limit of 5.
        assert (await _sign_in(c, "alice", "alice-password")).status_code == 303


async def test_cookies_are_secure_behind_tls(database_url: str, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    srv = InProcessServer(
        make_settings(database_url, tmp_path, certfile=str(cert), keyfile=str(key))
    )
    await srv.start()
    try:
        async with srv.client() as browser:
            form = await browser.get("/login")
            csrf_cookie = form.cookies["gantry_csrf"]
            r = await browser.post(
                "/login",
                data={
                    "username": "admin",
                    "password": ADMIN_PASSWORD,
                    "_csrf_token": csrf_token(form.text),
                },
                headers={"cookie": f"gantry_csrf={csrf_cookie}"},
            )
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert cookie.startswith(COOKIE) and "secure" in cookie and "httponly" in cookie
    finally:
        await srv.stop()
