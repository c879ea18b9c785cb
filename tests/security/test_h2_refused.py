"""A refused request must not cost a runner its HTTP/2 connection (issue 7, finding 8).

When the server answers a POST before reading its body (401 from the auth middleware, 413 from
the body limit), the client is still sending DATA frames for a stream the server has finished.
hypercorn 0.18 looked that stream up, raised ``KeyError`` in ``_handle_events`` and closed the
whole connection, so every other stream on it died (hypercorn issue #329). Here two runner-like
clients, each on its own single HTTP/2 connection, interleave refused POSTs with GETs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec

from runner import protocol as p
from tests.support import RUNNER_TOKEN, InProcessServer, submit

REFUSED_POSTS = 200  # in all, shared by the two clients
# Refused for a wrong token while a GET runs on the same connection; the server answers on the
# headers, often before it has read the DATA frame. Small on purpose: httpx (httpcore 1.0.9)
# can hang a POST that waits for flow-control window while another request on its connection
# reads (pydantic/httpx2#1133, a client bug). The server returns connection window once half
# of the 64 KiB is used, so at most 32 KiB plus one refused body are unreturned: with 8 KiB
# bodies the client never has to wait, and the test sees only what the server does.
BODY_401 = b"x" * (8 * 1024)
# Refused for a wrong token, alone on the connection: more than the 10 chunks of 16 KiB the
# server queues for an app that does not read its body.
BODY_LONG_401 = b"x" * (1024 * 1024)
# Refused for size (the right token): over Litestar's default request_max_body_size of 10 MB,
# so the server answers 413 on the content-length alone and never reads the 10 MB.
BODY_413 = b"x" * (10 * 1024 * 1024 + 1)
ONE = "workflow:\n  name: one\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"
EVENTS = "/api/runner/v1/sessions/no-such-session/events"


def runner_like(server: InProcessServer) -> httpx.AsyncClient:
    # As runner/client.py: HTTP/2 with prior knowledge, one connection.
    return httpx.AsyncClient(
        base_url=server.base,
        http1=False,
        http2=True,
        timeout=30,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def refuse_and_get(
    client: httpx.AsyncClient, count: int, connections: set[Any], statuses: list[int]
) -> None:
    good = {"authorization": f"Bearer {RUNNER_TOKEN}"}
    bad = {"authorization": "Bearer gbk_wrong-token"}
    for i in range(count):
        if i % 10 == 9:  # every tenth: too large, then a GET
            refused = await client.post(EVENTS, content=BODY_413, headers=good)
            answered = await client.get("/healthz")
        elif i % 10 == 0:  # a wrong token on a long body, first on the fresh connection too
            refused = await client.post(EVENTS, content=BODY_LONG_401, headers=bad)
            answered = await client.get("/healthz")
        else:  # a wrong token, with a GET on the same connection at the same time
            refused, answered = await asyncio.gather(
                client.post(EVENTS, content=BODY_401, headers=bad), client.get("/healthz")
            )
        for response in (refused, answered):
            assert response.http_version == "HTTP/2"
            connections.add(response.extensions["network_stream"])
        statuses.append(refused.status_code)
        assert answered.status_code == 200, answered.text


async def test_refused_posts_do_not_drop_the_h2_connection(server: InProcessServer) -> None:
    connections: list[set[Any]] = [set(), set()]
    statuses: list[int] = []
    async with runner_like(server) as one, runner_like(server) as two:
        # Any RemoteProtocolError/ConnectError/ReadError from a dropped connection fails here.
        await asyncio.gather(
            refuse_and_get(one, REFUSED_POSTS // 2, connections[0], statuses),
            refuse_and_get(two, REFUSED_POSTS // 2, connections[1], statuses),
        )
    assert len(statuses) == REFUSED_POSTS
    assert statuses.count(413) == REFUSED_POSTS // 10
    assert statuses.count(401) == REFUSED_POSTS - REFUSED_POSTS // 10
    # Each client used one TCP connection from its first request to its last.
    assert [len(c) for c in connections] == [1, 1]


async def test_a_runner_connection_is_not_retired_under_its_open_stream(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    # A runner's connection carries every call of its life under one open NDJSON stream. A
    # server that retires a connection after N requests (keep_alive_max_requests, 1000 by
    # default in hypercorn and anycorn) sends GOAWAY, and httpx then fails that stream.
    requests = 1100
    connections: set[Any] = set()
    hello = p.Hello("local", 1, "fake", capacity=p.Capacity(nodes=[p.Node("n", 4, 2**33)], slots=4))
    async with runner_like(server) as runner:
        runner.headers["authorization"] = f"Bearer {RUNNER_TOKEN}"
        welcome = await runner.post("/api/runner/v1/sessions", content=msgspec.json.encode(hello))
        assert welcome.status_code == 201, welcome.text
        sid = welcome.json()["session_id"]
        async with runner.stream("GET", f"/api/runner/v1/sessions/{sid}/stream") as live:
            assert live.status_code == 200
            connections.add(live.extensions["network_stream"])
            for _ in range(requests):
                r = await runner.get("/healthz")
                assert r.status_code == 200
                connections.add(r.extensions["network_stream"])
            # The stream still delivers: a submission reaches it as a launch.
            await submit(api, ONE)
            async with asyncio.timeout(20):
                async for line in live.aiter_lines():
                    if isinstance(p.decode_stream_line(line.encode()), p.Launch):
                        break
    assert len(connections) == 1
