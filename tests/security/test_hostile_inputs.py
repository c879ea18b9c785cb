"""Hostile inputs at the edge: each reproduction of issue 7 (items 4 and 5) answers 4xx naming the
field, never a 500; a runner's bad capacity is refused per node and never reaches a page.

The last test walks the app's own route table, so a new route with an unbounded parameter fails
it: every path and query parameter of every route gets a NUL byte, an overlong string and a huge
integer, and no answer may be a 5xx.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from runner import protocol as p
from tests.support import ADMIN_TOKEN, RUNNER_TOKEN, InProcessServer, submit

ONE = "workflow:\n  name: one\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"
HUGE = 99999999999999999999
TWO_63 = 2**63


def names_field(response: httpx.Response, field: str) -> None:
    """A 4xx problem whose text names ``field``."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.text, response.text


def html_client(server: InProcessServer) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "accept": "text/html"}
    return httpx.AsyncClient(base_url=server.base, headers=headers, timeout=30)


def runner_http(server: InProcessServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base + "/api/runner/v1",
        http1=False,
        http2=True,
        headers={"authorization": f"Bearer {RUNNER_TOKEN}"},
        timeout=20,
    )


async def hello(http: httpx.AsyncClient, capacity: p.Capacity | None = None) -> p.Welcome:
    capacity = capacity or p.Capacity(nodes=[p.Node("n", cpu=4, memory=2**30)], slots=4)
    r = await http.post(
        "/sessions", content=msgspec.json.encode(p.Hello("local", 1, "test", capacity=capacity))
    )
    assert r.status_code == 201, r.text
    return msgspec.json.decode(r.content, type=p.Welcome)


# -- the API ------------------------------------------------------------------------------


async def test_token_names_with_nul_or_over_100_characters_are_refused(
    api: httpx.AsyncClient,
) -> None:
    names_field(await api.post("/api/v1/tokens", json={"name": "a\x00b"}), "name")
    names_field(await api.post("/api/v1/tokens", json={"name": "x" * 101}), "name")
    ok = await api.post("/api/v1/tokens", json={"name": "x" * 100})
    assert ok.status_code == 201, ok.text


async def test_huge_retry_and_token_id_are_refused(api: httpx.AsyncClient) -> None:
    workflow = await submit(api, ONE)
    r = await api.get(f"/api/v1/workflows/{workflow}/tasks/t/logs", params={"retry": HUGE})
    names_field(r, "retry")
    names_field(await api.delete(f"/api/v1/tokens/{HUGE}"), "token_id")
    assert (await api.delete(f"/api/v1/tokens/{2**63 - 1}")).status_code == 404


async def test_nul_in_strings_that_reach_postgres_is_refused(api: httpx.AsyncClient) -> None:
    workflow = await submit(api, ONE)
    names_field(
        await api.post(f"/api/v1/workflows/{workflow}/cancel", json={"reason": "a\x00"}), "reason"
    )
    for name in ("status", "pool", "name", "user", "cursor"):
        names_field(await api.get("/api/v1/workflows", params={name: "a\x00"}), name)
    names_field(await api.get("/api/v1/workflows/a%00b"), "workflow_id")
    # A cursor is opaque but decodable: one crafted to carry a NUL is refused like any other.
    crafted = msgspec.json.encode(
        ["submitted", "2026-12-01T00:00:00+00:00", "a\x00", "2026-12-01T00:00:00+00:00"]
    )
    cursor = base64.urlsafe_b64encode(crafted).decode().rstrip("=")
    names_field(await api.get("/api/v1/workflows", params={"cursor": cursor}), "cursor")
    names_field(await api.post("/api/v1/workflows", json={"spec": ONE, "pool": "a\x00"}), "pool")
    names_field(await api.post("/api/v1/pools", json={"name": "p", "description": "\x00"}), "desc")


async def test_body_fields_are_bounded_and_unknown_fields_refused(api: httpx.AsyncClient) -> None:
    """The envelope is refused at the edge (400 naming the field) before any spec work."""
    too_many = {f"k{i}": i for i in range(1001)}
    for body, field in (
        ({"spec": ONE, "colour": 1}, "colour"),
        ({"spec": "#" * (1024 * 1024 + 1)}, "spec"),
        ({"spec": ONE, "set": too_many}, "set"),
        ({"spec": ONE, "set": {"k\x00": 1}}, "set"),
        ({"spec": ONE, "set": {"k" * 129: 1}}, "set"),
        ({"spec": ONE, "priority": "URGENT"}, "priority"),
        ({"spec": ONE, "pool": "p" * 65}, "pool"),
    ):
        r = await api.post("/api/v1/workflows", json=body)
        assert r.status_code == 400, (field, r.status_code, r.text[:300])
        names_field(r, field)
    deep = "[" * 3000 + "]" * 3000  # msgspec's decoder recurses on `Any` values
    r = await api.post(
        "/api/v1/workflows",
        content=f'{{"spec": "x", "set": {{"a": {deep}}}}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    r = await api.post("/api/v1/pools", json={"name": "p", "platforms": {"x" * 65: {}}})
    names_field(r, "platforms")


async def test_html_forms_refuse_nul_with_a_readable_page(server: InProcessServer) -> None:
    async with server.client(ADMIN_TOKEN) as api:
        workflow = await submit(api, ONE)
    # A cookie-less form post carrying a Bearer token is exempt from CSRF (API clients).
    async with html_client(server) as client:
        r = await client.post(f"/workflows/{workflow}/cancel", data={"reason": "a\x00"})
        assert r.status_code == 422, r.text
        assert "text/html" in r.headers["content-type"]
        assert "reason" in r.text
        r = await client.get("/workflows", params={"pool": "a\x00"})
        assert 400 <= r.status_code < 500
        r = await client.get(f"/workflows/{workflow}/tasks/t/logs", params={"retry": HUGE})
        assert r.status_code == 400, r.text


# -- the runner API -----------------------------------------------------------------------


async def test_runner_cluster_id_over_200_characters_is_refused(server: InProcessServer) -> None:
    async with runner_http(server) as http:
        body = msgspec.to_builtins(p.Hello("local", 1, "test"))
        r = await http.post("/sessions", json={**body, "cluster_id": "c" * 201})
        names_field(r, "cluster_id")
        r = await http.post("/sessions", json={**body, "cluster_id": "c\x00"})
        names_field(r, "cluster_id")
        r = await http.post("/sessions", json={**body, "cluster_id": "c" * 200})
        assert r.status_code == 201, r.text


async def test_runner_ids_of_2_63_are_refused(server: InProcessServer) -> None:
    async with runner_http(server) as http:
        welcome = await hello(http)
        base = f"/sessions/{welcome.session_id}"
        event = {"attempt": TWO_63, "epoch": 1, "status": "RUNNING", "time": "2026-12-01T00:00:00Z"}
        names_field(await http.post(f"{base}/events", json={"events": [event]}), "attempt")
        names_field(await http.post(f"{base}/events", json={"acks": [TWO_63]}), "acks")
        names_field(
            await http.post(f"{base}/heartbeat", json={"capacity": {}, "live": [TWO_63]}), "live"
        )
        chunk = {"attempt": 1, "epoch": TWO_63, "stream": "stdout", "offset": 0, "data": ""}
        names_field(await http.post(f"{base}/logs", json={"chunks": [chunk]}), "epoch")
        # The largest bigint is a well-formed id of an attempt this backend does not have.
        r = await http.post(f"{base}/heartbeat", json={"capacity": {}, "live": [TWO_63 - 1]})
        assert r.status_code == 200, r.text
        assert msgspec.json.decode(r.content, type=p.HeartbeatReply).kill == [TWO_63 - 1]


async def test_a_bad_report_is_refused_alone(server: InProcessServer) -> None:
    async with runner_http(server) as http:
        welcome = await hello(http)
        now = datetime.now(UTC)
        batch = p.EventBatch(
            [
                p.StateReport(5, welcome.epoch, "WAITING", now),  # not a runner's status
                p.StateReport(6, welcome.epoch, "FAILED", now, reason="boom\x00"),
                p.StateReport(7, welcome.epoch, "RUNNING", now),  # unknown here, but well-formed
            ]
        )
        r = await http.post(
            f"/sessions/{welcome.session_id}/events", content=msgspec.json.encode(batch)
        )
        assert r.status_code == 200, r.text
        reply = msgspec.json.decode(r.content, type=p.EventReply)
        assert [(x.path, x.attempt) for x in reply.refused] == [("events[0]", 5), ("events[1]", 6)]
        assert "WAITING" in reply.refused[0].reason and "NUL" in reply.refused[1].reason
        assert [(x.attempt, x.outcome) for x in reply.results] == [(7, "unknown")]


def test_the_runner_fits_its_report_text_to_the_protocol() -> None:
    """An executor's message with a NUL, or a long one, is sent fitted, not refused."""
    reason = p.fit_report_text("bad\x00" + "x" * 10_000, p.MAX_REASON)
    node = p.fit_report_text("n" * 253, p.MAX_NODE_NAME)
    assert reason is not None and "\x00" not in reason and len(reason) == p.MAX_REASON
    report = p.StateReport(1, 1, "FAILED", datetime.now(UTC), reason=reason, node=node)
    assert p.report_problem(report, {"FAILED"}) is None
    assert p.report_problem(msgspec.structs.replace(report, node="n" * 201), {"FAILED"})


async def test_absurd_capacity_is_refused_per_node_and_pages_stay_up(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    good = p.Node("good", cpu=8, memory=2**34, gpu=1)
    bad = [p.Node("a", cpu=1e308, memory=2**30), p.Node("b", cpu=1e308, memory=2**30)]
    async with runner_http(server) as http:
        # The hello's capacity is checked the same way: the Welcome names what was not counted.
        first = await hello(http, p.Capacity(nodes=[good, bad[0]]))
        assert [x.path for x in first.refused] == ["capacity.nodes[1]"]
        welcome = await hello(http)
        hb = p.Heartbeat(p.Capacity(nodes=[*bad, good], slots=4))
        r = await http.post(
            f"/sessions/{welcome.session_id}/heartbeat", content=msgspec.json.encode(hb)
        )
        assert r.status_code == 200, r.text
        reply = msgspec.json.decode(r.content, type=p.HeartbeatReply)
        assert [x.path for x in reply.refused] == ["capacity.nodes[0]", "capacity.nodes[1]"]
        assert "cpu" in reply.refused[0].reason
        # Other impossible numbers are refused the same way, one node at a time.
        for node in (
            {"name": "x", "cpu": -1, "memory": 1},
            {"name": "x", "cpu": 1, "memory": 2**51},
            {"name": "x", "cpu": 1, "memory": 1, "gpu": 1025},
            {"name": "", "cpu": 1, "memory": 1},
            {"name": "n" * 254, "cpu": 1, "memory": 1},
            {"name": "n\x00", "cpu": 1, "memory": 1},
        ):
            r = await http.post(
                f"/sessions/{welcome.session_id}/heartbeat",
                json={"capacity": {"nodes": [node, msgspec.to_builtins(good)]}},
            )
            assert r.status_code == 200, r.text
            assert len(r.json()["refused"]) == 1, (node, r.text)
        r = await http.post(
            f"/sessions/{welcome.session_id}/heartbeat",
            json={"capacity": {"nodes": [{"name": "n", "cpu": 1, "memory": 1}] * 10_001}},
        )
        names_field(r, "nodes")
        r = await http.post(
            f"/sessions/{welcome.session_id}/heartbeat", content=msgspec.json.encode(hb)
        )
        assert r.status_code == 200
    backends = await api.get("/api/v1/backends")
    assert backends.status_code == 200, backends.text
    (local,) = [b for b in backends.json()["items"] if b["name"] == "local"]
    assert [n["name"] for n in local["capacity"]["nodes"]] == ["good"]
    assert (await api.get("/api/v1/pools")).status_code == 200
    page = await api.get("/pools", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text


async def test_pages_survive_whatever_capacity_is_stored(
    server: InProcessServer, api: httpx.AsyncClient, database_url: str
) -> None:
    """A row written before validation existed (or by hand) cannot break a page either."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """UPDATE backend SET capacity = '{"nodes": [{"name": "a", "cpu": 1e308, "memory": 1},
               {"name": "b", "cpu": 1e308, "memory": 1}, {"cpu": "lots"}, 7], "slots": "many"}'
               WHERE name = 'local'"""
        )
    finally:
        await conn.close()
    for path in ("/api/v1/backends", "/api/v1/pools", "/pools"):
        r = await api.get(path, headers={"accept": "text/html"} if path == "/pools" else {})
        assert r.status_code == 200, (path, r.text)


# -- every route ---------------------------------------------------------------------------

_PARAM = re.compile(r"\{(\w+):(\w+)\}")
# What a route's path parameters are replaced by when another parameter is the one under test.
_SAMPLE = {"str": "sample", "int": "999999", "path": "app.css"}


def _routes(
    app: Any,
) -> list[tuple[str, str, list[str], list[tuple[str, type]], dict[str, str], Any]]:
    """(method, path template, path parameter names, query parameters) for every route."""
    out = []
    for route in app.routes:
        for method, handler in getattr(route, "route_handler_map", {}).items():
            if method in ("HEAD", "OPTIONS"):
                continue
            handler = handler[0] if isinstance(handler, tuple) else handler
            path_params = [name for name, _ in _PARAM.findall(route.path)]
            kinds = dict(_PARAM.findall(route.path))
            query = [
                (name, field.annotation)
                for name, field in handler.parsed_fn_signature.parameters.items()
                if name not in ("self", "request", "data", *path_params)
            ]
            out.append((method, route.path, path_params, query, kinds, handler))
    return out


def _fill(path: str, values: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: values.get(m.group(1), _SAMPLE.get(m.group(2), "x")), path)


async def _status(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    params: dict[str, str] | None = None,
    json: Any = None,
) -> tuple[int, str]:
    """The status of one request, without waiting for a stream (SSE, NDJSON) to end."""
    async with client.stream(method, url, params=params, json=json, timeout=30) as r:
        text = (await r.aread()).decode(errors="replace")[:500] if r.status_code >= 500 else ""
        return r.status_code, text


HOSTILE = ["a\x00b", "x" * 70_000, str(HUGE), str(-HUGE), "%00"]


def _sample(t: Any) -> Any:
    """A plausible value of msgspec type ``t`` (so that only the field under test is wrong)."""
    if isinstance(t, msgspec.inspect.NoneType):
        return None
    if isinstance(t, msgspec.inspect.UnionType):
        return _sample(t.types[0])
    if isinstance(t, msgspec.inspect.StrType):
        return "sample"
    if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        return 1
    if isinstance(t, msgspec.inspect.BoolType):
        return False
    if isinstance(t, msgspec.inspect.DateTimeType):
        return "2026-12-01T00:00:00Z"
    if isinstance(t, msgspec.inspect.LiteralType):
        return t.values[0]
    if isinstance(t, msgspec.inspect.ListType | msgspec.inspect.SetType):
        return []
    if isinstance(t, msgspec.inspect.DictType):
        return {}
    if isinstance(t, msgspec.inspect.StructType):
        return {f.encode_name: _sample(f.type) for f in t.fields if f.required}
    return "sample"


def _bodies(handler: Any) -> list[tuple[str, dict[str, Any]]]:
    """(field, body) pairs: a plausible body of the handler's Struct with one field made hostile."""
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return []
    struct = next(
        (
            t
            for t in (data.annotation, *getattr(data.annotation, "__args__", ()))
            if isinstance(t, type) and issubclass(t, msgspec.Struct)
        ),
        None,
    )
    if struct is None:
        return []  # a form: its fields are not in the signature (see the form tests above)
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    base = _sample(info)
    out = []
    for f in info.fields:
        for value in ("a\x00b", "x" * 70_000, HUGE, -HUGE, [HUGE], {"k\x00": "v"}):
            out.append((f.encode_name, {**base, f.encode_name: value}))
    return out


@pytest.mark.timeout(240)
async def test_every_route_bounds_every_parameter(server: InProcessServer) -> None:
    routes = _routes(server.app)
    assert len(routes) > 30  # the walk sees the real table
    seen: list[tuple[str, str, int]] = []
    async with html_client(server) as pages, runner_http(server) as runner:
        runner.base_url = httpx.URL(server.base)  # the walk sends whole paths
        for method, path, path_params, query, kinds, handler in routes:
            # Runner routes need a backend token to get past authentication to the bounds.
            client = runner if path.startswith("/api/runner/") else pages
            for name in path_params:
                for value in HOSTILE:
                    if len(value) > 8000:
                        continue  # longer than a request line may be (hypercorn answers 4xx)
                    if kinds[name] == "int" and not value.lstrip("-").isdigit():
                        continue  # not a number: no route matches (404 pages: the web worker's tests)
                    url = _fill(path, {name: value.replace("\x00", "%00")})
                    status, text = await _status(client, method, url)
                    seen.append((method, url[:80], status))
                    assert status < 500, (method, url[:200], status, text)
            for name, _ in query:
                for value in HOSTILE:
                    if len(value) > 8000:
                        value = value[:8000]
                    status, text = await _status(client, method, _fill(path, {}), {name: value})
                    seen.append((method, f"{path}?{name}", status))
                    assert status < 500, (method, path, name, value[:40], status, text)
            for field, body in _bodies(handler):
                status, text = await _status(client, method, _fill(path, {}), json=body)
                seen.append((method, f"{path} {field}", status))
                assert status < 500, (method, path, field, status, text)
    assert any(s[1].startswith("/api/runner/") and s[2] == 400 for s in seen)  # bounds reached


async def test_bulk_cancel_takes_at_most_a_pages_worth(server: InProcessServer) -> None:
    """26,000 ids in one form post took 19.5 s and left a 1 MB flash message (a hostile test)."""
    async with server.client(ADMIN_TOKEN) as admin:
        r = await admin.post(
            "/workflows/cancel",
            data={"ids": [f"w-{i}" for i in range(501)]},
            headers={"accept": "text/html"},
        )
        assert r.status_code == 422
        assert "at most 500" in r.text
        r = await admin.post("/workflows/cancel", data={"ids": ["w-1"] * 3})
        assert r.status_code == 303
        # Each id is tried once: the flash on the page it leads to names w-1 once.
        listing = await admin.get(r.headers["location"], headers={"accept": "text/html"})
        assert listing.text.count("w-1 (") == 1, listing.text


async def test_a_log_position_not_given_out_by_the_server_is_refused(
    api: httpx.AsyncClient,
) -> None:
    """A stream number past int4 broke the live log's stream inside its generator."""
    wid = await submit(api, ONE)
    for at in ("0~0~1.5.0.0", f"0~0~1.{2**40}.0.0", f"0~0~{2**63}.1.0.0", "-1~0~"):
        r = await api.get(f"/workflows/{wid}/tasks/t/logs/live", params={"at": at})
        assert r.status_code == 400, (at, r.status_code)
        assert "not one this server gave out" in r.text
    async with api.stream(
        "GET", f"/workflows/{wid}/tasks/t/logs/live", params={"at": "0~0~1.1.0.0"}
    ) as ok:
        assert ok.status_code == 200


async def test_a_cancel_reason_from_a_form_is_kept_whole_or_refused(
    api: httpx.AsyncClient,
) -> None:
    """The form used to cut a reason to 500 characters without saying so; the API takes 2000."""
    wid = await submit(api, ONE)
    refused = await api.post(
        f"/workflows/{wid}/cancel", data={"reason": "r" * 2001}, headers={"accept": "text/html"}
    )
    assert refused.status_code == 422 and "at most 2000" in refused.text
    kept = await api.post(f"/workflows/{wid}/cancel", data={"reason": "k" * 2000})
    assert kept.status_code == 303
    wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
    assert "k" * 2000 in (wf["reason"] or "")
