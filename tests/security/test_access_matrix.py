"""The access matrix: every route of the app against every kind of caller, checked against a real server.

The rows are keyed by the app's own route table, so a route added without a row here fails
`test_every_route_has_a_row`. Each row says which kind of route it is (who may use it) and how
to make a well-formed request to it; the expected answer per caller follows from the kind,
with overrides where a route answers differently on purpose. Nothing may ever answer 5xx.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest

from app.access.policy import Policy
from runner import protocol as p
from tests.support import ADMIN_TOKEN, RUNNER_TOKEN, InProcessServer, csrf_token

pytestmark = pytest.mark.timeout(600)

HELLO_SPEC = "workflow:\n  name: matrix\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"
RUNNER_B_TOKEN = "gbk_matrix-runner-b"

CALLERS = (
    "anonymous",
    "malformed",  # an Authorization header that is not a usable bearer token
    "revoked",  # a token of the owner's that was revoked
    "expired",  # a token of the owner's past its expires_at
    "signed_out",  # the owner's session cookie, copied before signing out
    "user",  # alice: owns the workflows the rows act on (role user: pool default)
    "other",  # bob: another ordinary user of the same pool
    "pool_b",  # carol: a user of pool-b only (role team-b), not of alice's pool
    "denied",  # dave: role user plus a Deny of workflow:Cancel on pool/default
    "service",  # ci-bot: a service account with role user, by its token
    "subset",  # the admin's own token that carries only the role user
    "admin",
    "runner_a",  # the runner of backend `local`, whose session the rows use
    "runner_b",  # the runner of backend `second`
)
UNAUTHENTICATED = ("anonymous", "malformed", "revoked", "expired", "signed_out")
# People who are not alice and not an admin, in alice's pool, and carol outside it.
OTHERS = ("other", "denied", "service", "subset")
PEOPLE = ("user", *OTHERS, "pool_b", "admin")
NOT_ALICE = tuple(c for c in PEOPLE if c != "user")
RUNNERS = ("runner_a", "runner_b")

# What a caller may get: "pass" (2xx, or 3xx not to the sign-in page), "unauth" (401, or a
# redirect to the sign-in page), "forbidden" (403), "notfound" (404), "invalid" (422).
Outcome = str


def _expect(kind: str) -> dict[str, Outcome]:
    if kind == "public":
        return dict.fromkeys(CALLERS, "pass")
    base = dict.fromkeys(UNAUTHENTICATED, "unauth")
    if kind == "runner":
        return {**base, **dict.fromkeys(PEOPLE, "forbidden"), "runner_a": "pass",
                "runner_b": "notfound"}  # fmt: skip
    base.update(dict.fromkeys(RUNNERS, "forbidden"))
    if kind == "person":
        return {**base, **dict.fromkeys(PEOPLE, "pass")}
    if kind == "pool":  # reads alice's workflow: those who may read its pool
        return {**base, **dict.fromkeys(PEOPLE, "pass"), "pool_b": "notfound"}
    if kind == "submit":  # submits to the default pool: workflow:Create there
        return {**base, **dict.fromkeys(PEOPLE, "pass"), "pool_b": "forbidden"}
    if kind == "owner":  # acts on alice's workflow: alice or an admin
        return {**base, **dict.fromkeys(OTHERS, "forbidden"), "user": "pass",
                "pool_b": "notfound", "admin": "pass"}  # fmt: skip
    if kind == "admin":
        return {**base, **dict.fromkeys(PEOPLE, "forbidden"), "admin": "pass"}
    if kind == "mine":  # one of alice's own tokens: nobody else even sees it
        return {**base, **dict.fromkeys(PEOPLE, "notfound"), "user": "pass"}
    raise ValueError(kind)


@dataclass
class Ctx:
    server: InProcessServer
    tokens: dict[str, str]  # caller → its bearer token
    signed_out_cookies: httpx.Cookies
    workflow_id: str  # alice's, never cancelled by the rows that only read

    @property
    def alice_token(self) -> str:
        return self.tokens["user"]

    async def new_workflow(self) -> str:
        async with self.server.client(self.alice_token) as c:
            r = await c.post("/api/v1/workflows", json={"spec": HELLO_SPEC})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

    async def new_alice_token(self) -> int:
        auth = self.server.app.state.auth
        await auth.create_token("alice", "matrix")
        return int((await auth.list_tokens("alice"))[0]["id"])

    async def runner_session(self) -> str:
        async with self.server.client(RUNNER_TOKEN) as c:
            hello = p.Hello(backend="local", protocol_version=1, runner_version="matrix")
            r = await c.post("/api/runner/v1/sessions", content=msgspec.json.encode(hello))
            assert r.status_code == 201, r.text
            return str(r.json()["session_id"])


Request = tuple[str, str, dict[str, Any]]
Maker = Callable[[Ctx], Awaitable[Request]]


@dataclass
class Row:
    kind: str
    make: Maker
    overrides: dict[str, Outcome] = field(default_factory=dict)
    stream: bool = False  # a long-lived response: read the status line only
    signs_out: bool = False  # success is a redirect to the sign-in page

    def expected(self) -> dict[str, Outcome]:
        return {**_expect(self.kind), **self.overrides}


def get(path: str | Callable[[Ctx], str]) -> Maker:
    async def make(ctx: Ctx) -> Request:
        return "GET", path(ctx) if callable(path) else path, {}

    return make


def _wf(suffix: str = "") -> Callable[[Ctx], str]:
    return lambda ctx: suffix.replace("{id}", ctx.workflow_id)


async def _cancel_api(ctx: Ctx) -> Request:
    wf = await ctx.new_workflow()
    return "POST", f"/api/v1/workflows/{wf}/cancel", {"json": {"reason": "matrix"}}


async def _cancel_page(ctx: Ctx) -> Request:
    wf = await ctx.new_workflow()
    return "POST", f"/workflows/{wf}/cancel", {"data": {"reason": "matrix"}}


async def _bulk_cancel(ctx: Ctx) -> Request:
    wf = await ctx.new_workflow()
    return "POST", "/workflows/cancel", {"data": {"ids": [wf], "reason": "matrix"}}


async def _resubmit(ctx: Ctx) -> Request:
    return "POST", f"/workflows/{ctx.workflow_id}/resubmit", {}


async def _submit_api(ctx: Ctx) -> Request:
    return "POST", "/api/v1/workflows", {"json": {"spec": HELLO_SPEC}}


async def _submit_page(ctx: Ctx) -> Request:
    files = {"file": ("spec.yaml", HELLO_SPEC.encode())}  # the page's form is multipart
    return "POST", "/submit", {"data": {"pool": "default"}, "files": files}


async def _create_pool(ctx: Ctx) -> Request:
    return "POST", "/api/v1/pools", {"json": {"name": f"p{_n()}"}}


async def _put_pool(ctx: Ctx) -> Request:
    return "PUT", "/api/v1/pools/default", {"json": {"description": "matrix"}}


async def _patch_pool(ctx: Ctx) -> Request:
    return "PATCH", "/api/v1/pools/default", {"json": {"maintenance": False}}


async def _create_backend(ctx: Ctx) -> Request:
    return "POST", "/api/v1/backends", {"json": {"name": f"b{_n()}", "pool": "default"}}


async def _rotate_backend_token(ctx: Ctx) -> Request:
    return "POST", "/api/v1/backends/second/token", {}


async def _create_token_api(ctx: Ctx) -> Request:
    return "POST", "/api/v1/tokens", {"json": {"name": "matrix"}}


async def _create_token_page(ctx: Ctx) -> Request:
    return "POST", "/tokens", {"data": {"name": "matrix"}}


async def _delete_token(ctx: Ctx) -> Request:
    return "DELETE", f"/api/v1/tokens/{await ctx.new_alice_token()}", {}


async def _revoke_token_page(ctx: Ctx) -> Request:
    return "POST", f"/tokens/{await ctx.new_alice_token()}/revoke", {}


async def _change_password(ctx: Ctx) -> Request:
    # Alice's right current password (her new one is the same): she passes; for bob and the
    # admin, who have no password, it is the wrong current one.
    body = {"current": "alice-password", "new": "alice-password"}
    return "POST", "/api/v1/me/password", {"json": body}


async def _create_user(ctx: Ctx) -> Request:
    return "POST", "/api/v1/users", {"json": {"name": f"made{_n()}"}}


async def _throwaway_user(ctx: Ctx) -> str:
    name = f"gone{_n()}"
    await ctx.server.app.state.users.create(name)
    return name


async def _patch_user(ctx: Ctx) -> Request:
    name = await _throwaway_user(ctx)
    return "PATCH", f"/api/v1/users/{name}", {"json": {"display_name": "Renamed"}}


async def _delete_user(ctx: Ctx) -> Request:
    return "DELETE", f"/api/v1/users/{await _throwaway_user(ctx)}", {}


async def _user_token(ctx: Ctx) -> Request:
    return "POST", f"/api/v1/users/{await _throwaway_user(ctx)}/tokens", {"json": {"name": "m"}}


async def _revoke_user_token(ctx: Ctx) -> Request:
    name = await _throwaway_user(ctx)
    token_id, _ = await ctx.server.app.state.auth.issue_token(name, "m")
    return "DELETE", f"/api/v1/users/{name}/tokens/{token_id}", {}


_EMPTY_ROLE = {"description": "matrix", "policies": []}


async def _put_role(ctx: Ctx) -> Request:
    return "PUT", f"/api/v1/roles/r{_n()}", {"json": _EMPTY_ROLE}


async def _delete_role(ctx: Ctx) -> Request:
    name = f"r{_n()}"
    await ctx.server.app.state.role_service.put(name, "matrix", [])
    return "DELETE", f"/api/v1/roles/{name}", {}


async def _account_password(ctx: Ctx) -> Request:
    form = {"current": "alice-password", "new": "alice-password", "confirm": "alice-password"}
    return "POST", "/account/password", {"data": form}


async def _create_user_page(ctx: Ctx) -> Request:
    return "POST", "/admin/users", {"data": {"name": f"paged{_n()}", "roles": "user"}}


async def _update_user_page(ctx: Ctx) -> Request:
    name = await _throwaway_user(ctx)
    return "POST", f"/admin/users/{name}", {"data": {"action": "disable"}}


async def _put_role_page(ctx: Ctx) -> Request:
    return "POST", "/admin/roles", {"data": {"name": f"pr{_n()}", "policies": "[]"}}


async def _delete_role_page(ctx: Ctx) -> Request:
    name = f"r{_n()}"
    await ctx.server.app.state.role_service.put(name, "matrix", [])
    return "POST", f"/admin/roles/{name}/delete", {}


async def _login(ctx: Ctx) -> Request:
    # A wrong password: a readable 401 page for everyone (the sign-in form is public).
    # A new name each time: ten failures of one account would be throttled (429).
    return "POST", "/login", {"data": {"username": f"nobody{_n()}", "password": "wrong"}}


async def _password_token(ctx: Ctx) -> Request:
    # As the sign-in form: public, a wrong password is 401 whoever asks (and a credential the
    # caller sends changes nothing).
    body = {"username": f"nobody{_n()}", "password": "wrong", "name": "cli"}
    return "POST", "/api/v1/auth/token", {"json": body}


async def _logout(ctx: Ctx) -> Request:
    return "POST", "/logout", {}


def _runner(suffix: str, body: Any = None, method: str = "POST") -> Maker:
    async def make(ctx: Ctx) -> Request:
        session = await ctx.runner_session()
        kw = {"content": msgspec.json.encode(body)} if body is not None else {}
        return method, f"/api/runner/v1/sessions/{session}/{suffix}", kw

    return make


async def _hello(ctx: Ctx) -> Request:
    hello = p.Hello(backend="local", protocol_version=1, runner_version="matrix")
    return "POST", "/api/runner/v1/sessions", {"content": msgspec.json.encode(hello)}


_counter = 0


def _n() -> int:
    global _counter
    _counter += 1
    return _counter


LOG = "/workflows/{id}/tasks/t/logs"
MATRIX: dict[str, Row] = {
    # operations and static files
    "GET /healthz": Row("public", get("/healthz")),
    "GET /readyz": Row("public", get("/readyz")),
    "GET /metrics": Row("person", get("/metrics")),
    "GET /static/{file_path:path}": Row("public", get("/static/app.css")),
    "GET /favicon.ico": Row("public", get("/favicon.ico")),
    "GET /schema": Row("person", get("/schema")),
    "GET /schema/swagger": Row("person", get("/schema/swagger")),
    "GET /schema/{path:str}": Row(  # Litestar's answer for schema paths it does not serve
        "person", get("/schema/nothing-here"), dict.fromkeys(PEOPLE, "notfound")
    ),
    "GET /schema/openapi.json": Row("person", get("/schema/openapi.json")),
    "GET /schema/oauth2-redirect.html": Row("person", get("/schema/oauth2-redirect.html")),
    # sign-in: the form is public; a wrong password is a 401 page whoever asks
    "GET /login": Row("public", get("/login")),
    "POST /login": Row("public", _login, dict.fromkeys(CALLERS, "unauth")),
    "POST /logout": Row("person", _logout, signs_out=True),
    # single sign-on: public; this server has no provider configured, so both say 404 to all
    # (with one, tests/security/test_oidc.py covers them)
    "GET /auth/oidc/login": Row(
        "public", get("/auth/oidc/login"), dict.fromkeys(CALLERS, "notfound")
    ),
    "GET /auth/oidc/callback": Row(
        "public", get("/auth/oidc/callback?state=s&code=c"), dict.fromkeys(CALLERS, "notfound")
    ),
    "GET /api/v1/auth/config": Row("public", get("/api/v1/auth/config")),
    "POST /api/v1/auth/token": Row("public", _password_token, dict.fromkeys(CALLERS, "unauth")),
    "GET /api/v1/version": Row("public", get("/api/v1/version")),
    # JSON API
    "GET /api/v1/workflows": Row("person", get("/api/v1/workflows")),
    "POST /api/v1/workflows": Row("submit", _submit_api),
    "GET /api/v1/workflows/{workflow_id:str}": Row("pool", get(_wf("/api/v1/workflows/{id}"))),
    "GET /api/v1/workflows/{workflow_id:str}/spec": Row(
        "pool", get(_wf("/api/v1/workflows/{id}/spec"))
    ),
    "GET /api/v1/workflows/{workflow_id:str}/history": Row(
        "pool", get(_wf("/api/v1/workflows/{id}/history"))
    ),
    "GET /api/v1/workflows/{workflow_id:str}/events": Row(
        "pool", get(_wf("/api/v1/workflows/{id}/events")), stream=True
    ),
    "GET /api/v1/workflows/{workflow_id:str}/tasks/{task:str}/logs": Row(
        "pool", get(_wf("/api/v1/workflows/{id}/tasks/t/logs"))
    ),
    "GET /api/v1/workflows/{workflow_id:str}/logs": Row(
        "pool", get(_wf("/api/v1/workflows/{id}/logs"))
    ),
    "POST /api/v1/workflows/{workflow_id:str}/cancel": Row("owner", _cancel_api),
    "GET /api/v1/pools": Row("person", get("/api/v1/pools")),
    "GET /api/v1/pools/{name:str}": Row("pool", get("/api/v1/pools/default")),
    # Changing it takes pool:Admin; carol, who may not list the pool, is told nothing of it.
    "PUT /api/v1/pools/{name:str}": Row("admin", _put_pool, {"pool_b": "notfound"}),
    "PATCH /api/v1/pools/{name:str}": Row("admin", _patch_pool, {"pool_b": "notfound"}),
    "POST /api/v1/pools": Row("admin", _create_pool),
    "GET /api/v1/backends": Row("person", get("/api/v1/backends")),
    "POST /api/v1/backends": Row("admin", _create_backend),
    "POST /api/v1/backends/{name:str}/token": Row(  # backend B's: runner B keeps its grace
        "admin",
        _rotate_backend_token,
        {"pool_b": "notfound"},  # carol does not see it
    ),
    "GET /api/v1/tokens": Row("person", get("/api/v1/tokens")),
    "POST /api/v1/tokens": Row("person", _create_token_api),
    "DELETE /api/v1/tokens/{token_id:int}": Row("mine", _delete_token),
    # identity, users and roles (the teams issue)
    "GET /api/v1/me": Row("person", get("/api/v1/me")),
    "POST /api/v1/me/password": Row(
        "person", _change_password, dict.fromkeys(NOT_ALICE, "invalid")
    ),
    "GET /api/v1/users": Row("admin", get("/api/v1/users")),
    "POST /api/v1/users": Row("admin", _create_user),
    "GET /api/v1/users/{name:str}": Row("admin", get("/api/v1/users/alice")),
    "PATCH /api/v1/users/{name:str}": Row("admin", _patch_user),
    "DELETE /api/v1/users/{name:str}": Row("admin", _delete_user),
    "GET /api/v1/users/{name:str}/tokens": Row("admin", get("/api/v1/users/alice/tokens")),
    "POST /api/v1/users/{name:str}/tokens": Row("admin", _user_token),
    "DELETE /api/v1/users/{name:str}/tokens/{token_id:int}": Row("admin", _revoke_user_token),
    "GET /api/v1/roles": Row("admin", get("/api/v1/roles")),
    "GET /api/v1/roles/{name:str}": Row("admin", get("/api/v1/roles/user")),
    "PUT /api/v1/roles/{name:str}": Row("admin", _put_role),
    "DELETE /api/v1/roles/{name:str}": Row("admin", _delete_role),
    "GET /api/v1/audit": Row("admin", get("/api/v1/audit")),
    # runner API: only the runner of the session's backend
    "POST /api/runner/v1/sessions": Row(
        "runner", _hello, {"runner_b": "forbidden"}
    ),  # B may not speak in A's name
    "GET /api/runner/v1/sessions/{session_id:str}/stream": Row(
        "runner", _runner("stream", method="GET"), stream=True
    ),
    "POST /api/runner/v1/sessions/{session_id:str}/events": Row(
        "runner", _runner("events", p.EventBatch())
    ),
    "POST /api/runner/v1/sessions/{session_id:str}/heartbeat": Row(
        "runner", _runner("heartbeat", p.Heartbeat(p.Capacity()))
    ),
    "POST /api/runner/v1/sessions/{session_id:str}/logs": Row(
        "runner", _runner("logs", p.LogBatch())
    ),
    # pages
    "GET /": Row("person", get("/")),
    "GET /workflows": Row("person", get("/workflows")),
    "GET /workflows/live": Row("person", get("/workflows/live"), stream=True),
    "POST /workflows/cancel": Row(
        "person", _bulk_cancel
    ),  # answers 303 to all; who may cancel what is checked below
    "GET /workflows/{workflow_id:str}": Row("pool", get(_wf("/workflows/{id}"))),
    "GET /workflows/{workflow_id:str}/live": Row(
        "pool", get(_wf("/workflows/{id}/live")), stream=True
    ),
    "GET /workflows/{workflow_id:str}/events": Row(
        "pool", get(_wf("/workflows/{id}/events?before=1000000"))
    ),
    "GET /workflows/{workflow_id:str}/spec.txt": Row(
        "pool", get(_wf("/workflows/{id}/spec.txt?which=rendered_spec"))
    ),
    "POST /workflows/{workflow_id:str}/cancel": Row("owner", _cancel_page),
    "POST /workflows/{workflow_id:str}/resubmit": Row("pool", _resubmit),
    "GET /workflows/{workflow_id:str}/tasks/{task:str}/logs": Row("pool", get(_wf(LOG))),
    "GET /workflows/{workflow_id:str}/tasks/{task:str}/logs/earlier": Row(
        "pool", get(_wf(LOG + "/earlier?before=1"))
    ),
    "GET /workflows/{workflow_id:str}/tasks/{task:str}/logs/live": Row(
        "pool", get(_wf(LOG + "/live?at=0~0~")), stream=True
    ),
    "GET /workflows/{workflow_id:str}/logs": Row("pool", get(_wf("/workflows/{id}/logs"))),
    "GET /workflows/{workflow_id:str}/logs/download": Row(
        "pool", get(_wf("/workflows/{id}/logs/download"))
    ),
    "GET /workflows/{workflow_id:str}/logs/earlier": Row(
        "pool", get(_wf("/workflows/{id}/logs/earlier?before=1"))
    ),
    "GET /workflows/{workflow_id:str}/logs/live": Row(
        "pool", get(_wf("/workflows/{id}/logs/live?at=0~0~")), stream=True
    ),
    "GET /submit": Row("person", get("/submit")),
    "POST /submit": Row("submit", _submit_page),
    "GET /pools": Row("person", get("/pools")),
    "GET /pools/live": Row("person", get("/pools/live"), stream=True),
    "GET /tokens": Row("person", get("/tokens")),
    "GET /account": Row("person", get("/account")),
    "POST /account/password": Row("person", _account_password, dict.fromkeys(NOT_ALICE, "invalid")),
    "GET /admin/users": Row("admin", get("/admin/users")),
    "POST /admin/users": Row("admin", _create_user_page),
    "POST /admin/users/{name:str}": Row("admin", _update_user_page),
    "GET /admin/roles": Row("admin", get("/admin/roles")),
    "POST /admin/roles": Row("admin", _put_role_page),
    "POST /admin/roles/{name:str}/delete": Row("admin", _delete_role_page),
    "POST /tokens": Row("person", _create_token_page),
    "GET /admin/audit": Row("admin", get("/admin/audit")),
    "POST /tokens/{token_id:int}/revoke": Row(
        "person", _revoke_token_page
    ),  # answers 303 to all; that only alice's revoke takes effect is checked below
}


def route_keys(app: Any) -> set[str]:
    keys = set()
    for route in app.routes:
        for method in getattr(route, "methods", ()):
            if method not in ("HEAD", "OPTIONS"):
                keys.add(f"{method} {route.path}")
    return keys


def test_every_route_has_a_row() -> None:
    from pathlib import Path

    from app.asgi import create_app
    from app.settings import Settings

    app = create_app(
        Settings(database_url="postgresql://unused/db", data_dir=Path("/nonexistent"),
                 secret_key="k")
    )  # fmt: skip
    routes = route_keys(app)
    missing = sorted(routes - MATRIX.keys())
    stale = sorted(MATRIX.keys() - routes)
    assert not missing, f"routes without a row in the access matrix: {missing}"
    assert not stale, f"rows for routes that no longer exist: {stale}"


async def _signed_out_cookies(server: InProcessServer) -> httpx.Cookies:
    """Alice signs in through the form, the cookies are copied, then she signs out."""
    async with server.client() as browser:
        form = await browser.get("/login")
        signed_in = await browser.post(
            "/login",
            data={"username": "alice", "password": "alice-password", "next": "/workflows",
                  "_csrf_token": csrf_token(form.text)},
        )  # fmt: skip
        assert signed_in.status_code == 303, signed_in.text
        assert (await browser.get("/api/v1/workflows")).status_code == 200
        copied = httpx.Cookies(browser.cookies)
        page = await browser.get("/workflows")
        out = await browser.post("/logout", data={"_csrf_token": csrf_token(page.text)})
        assert out.status_code == 303
    return copied


def _client(server: InProcessServer, ctx: Ctx, caller: str) -> httpx.AsyncClient:
    tokens = {**ctx.tokens, "admin": ADMIN_TOKEN, "runner_a": RUNNER_TOKEN,
              "runner_b": RUNNER_B_TOKEN}  # fmt: skip
    headers = {"accept": "text/html"}
    if caller in tokens:
        headers["authorization"] = f"Bearer {tokens[caller]}"
    elif caller == "malformed":
        headers["authorization"] = "Bearer"
    client = httpx.AsyncClient(base_url=server.base, headers=headers, timeout=30)
    if caller == "signed_out":
        client.cookies = ctx.signed_out_cookies
    return client


def _classify(response: httpx.Response, signs_out: bool) -> Outcome:
    status = response.status_code
    location = response.headers.get("location", "")
    if signs_out and 300 <= status < 400 and location == "/login":
        return "pass"
    if status == 401 or (300 <= status < 400 and location.startswith("/login")):
        return "unauth"
    if status < 400:
        return "pass"
    return {403: "forbidden", 404: "notfound", 422: "invalid"}.get(status, f"status {status}")


async def _call(client: httpx.AsyncClient, request: Request, stream: bool) -> httpx.Response:
    method, url, kw = request
    if method != "GET" and "authorization" not in client.headers:
        # A browser's unsafe request carries the CSRF token its pages gave it; without one
        # a refusal would be the CSRF check's, not the access rule's under test.
        token = csrf_token((await client.get("/login")).text)
        if "data" in kw:
            kw = {**kw, "data": {**kw["data"], "_csrf_token": token}}
        else:
            kw = {**kw, "headers": {"x-csrf-token": token}}
    if stream:
        async with client.stream(method, url, **kw) as response:
            return response  # the status line is enough; leaving closes the stream
    return await client.request(method, url, **kw)


async def _callers(server: InProcessServer) -> dict[str, str]:
    """The people of the matrix and their tokens (see CALLERS)."""
    state = server.app.state
    auth = state.auth
    await auth.ensure_user("alice", ["user"], "alice-password")
    await auth.ensure_user("bob", ["user"], None)
    await state.pools.create_pool("pool-b")
    await state.role_service.put(
        "team-b", "", [Policy("Allow", ["workflow:*", "pool:List"], ["pool/pool-b"])]
    )
    await state.users.create("carol", roles=["team-b"])
    await state.role_service.put(
        "no-cancel", "", [Policy("Deny", ["workflow:Cancel"], ["pool/default"])]
    )
    await state.users.create("dave", roles=["user", "no-cancel"])
    await state.users.create("ci-bot", kind="service", roles=["user"])
    tokens = {
        "user": await auth.create_token("alice", "matrix"),
        "other": await auth.create_token("bob", "matrix"),
        "pool_b": await auth.create_token("carol", "matrix"),
        "denied": await auth.create_token("dave", "matrix"),
        "service": await auth.create_token("ci-bot", "matrix"),
        "subset": (await auth.issue_token("admin", "subset", None, ["user"]))[1],
        "revoked": await auth.create_token("alice", "to-revoke"),
        "expired": await auth.create_token("alice", "to-expire"),
    }
    listed = {t["name"]: t["id"] for t in await auth.list_tokens("alice")}
    assert await auth.revoke_token("alice", int(listed["to-revoke"]))
    async with state.db.connection() as conn:
        await conn.execute(
            "UPDATE api_token SET expires_at = now() - interval '1 second' WHERE id = $1",
            listed["to-expire"],
        )
    return tokens


async def test_every_route_answers_every_caller_as_it_should(server: InProcessServer) -> None:
    tokens = await _callers(server)
    await server.app.state.pools.set_backend_token("second", "default", RUNNER_B_TOKEN)
    ctx = Ctx(server, tokens, await _signed_out_cookies(server), "")
    ctx.workflow_id = await ctx.new_workflow()

    wrong: list[str] = []
    for key, row in MATRIX.items():
        for caller, expected in row.expected().items():
            request = await row.make(ctx)
            async with _client(server, ctx, caller) as client:
                try:
                    response = await _call(client, request, row.stream)
                except httpx.TransportError as exc:  # the server dropped the connection
                    wrong.append(f"{key} as {caller}: expected {expected}, got {exc!r}")
                    continue
            got = _classify(response, row.signs_out)
            if response.status_code >= 500 or got != expected:
                wrong.append(
                    f"{key} as {caller}: expected {expected}, got {response.status_code}"
                    f" {response.headers.get('location', '')}"
                )
    assert not wrong, "\n".join(wrong)


async def test_forms_that_answer_everyone_act_only_for_those_allowed(
    server: InProcessServer,
) -> None:
    """Bulk cancel and token revoke answer 303 to every person; only allowed changes happen."""
    auth = server.app.state.auth
    await auth.ensure_user("alice", ["user"], None)
    await auth.ensure_user("bob", ["user"], None)
    alice = await auth.create_token("alice", "t")
    bob = await auth.create_token("bob", "t")
    async with server.client(alice) as a, server.client(bob) as b:
        wf = (await a.post("/api/v1/workflows", json={"spec": HELLO_SPEC})).json()["id"]
        r = await b.post("/workflows/cancel", data={"ids": [wf]})
        assert r.status_code == 303
        assert (await a.get(f"/api/v1/workflows/{wf}")).json()["status"] == "PENDING"
        token_id = next(t["id"] for t in await auth.list_tokens("alice") if t["name"] == "t")
        assert (await b.post(f"/tokens/{token_id}/revoke")).status_code == 303
        assert (await a.get("/api/v1/tokens")).status_code == 200  # alice's token still works
        assert (await a.post(f"/tokens/{token_id}/revoke")).status_code == 303
        assert (await a.get("/api/v1/tokens")).status_code == 401
