"""HTTP/2 flow control on the runner's one connection: log uploads never stall behind the stream.

httpcore 1.0.9 could leave a POST that waited for flow-control window reading the socket for a
WINDOW_UPDATE that the NDJSON stream's read had already received (pydantic/httpx2#1133): the
upload sat until some other frame came, or failed with ReadTimeout after 30 s and took the
whole connection, the runner's stream included, with it. runner/client.py fixes the wait.

``asyncio.timeout`` here is a hang detector with a generous bound, not a timing assertion.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from runner import __version__
from runner import protocol as p
from runner.client import RunnerClient
from tests.support import (
    RUNNER_TOKEN,
    InProcessServer,
    make_settings,
    runner_in_loop,
    submit,
    task_of,
    wait_for,
)

HANG = 60.0  # seconds: far beyond what these uploads need, far below a stuck test's end
KiB = 1024


@pytest.fixture
async def quiet_server(database_url: str, tmp_path: Path) -> AsyncIterator[InProcessServer]:
    """The control plane with stream pings an hour apart: nothing but the uploads' own frames
    moves on the connection, so a stalled upload waits for its read timeout."""
    server = InProcessServer(make_settings(database_url, tmp_path, ping_interval=3600.0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _post_logs(
    client: RunnerClient, session: str, batch: p.LogBatch, connections: set[Any]
) -> p.LogReply:
    # Without RunnerClient's retries: a retry on a new connection would hide the stall.
    response = await client.http.post(
        f"/sessions/{session}/logs",
        content=msgspec.json.encode(batch),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    connections.add(response.extensions["network_stream"])
    return msgspec.json.decode(response.content, type=p.LogReply)


async def test_log_uploads_beside_the_open_stream_complete(quiet_server: InProcessServer) -> None:
    client = RunnerClient(quiet_server.base, RUNNER_TOKEN)
    try:
        welcome = await client.hello(p.Hello("local", p.PROTOCOL_VERSION, __version__))
        session = welcome.session_id
        stream_open = asyncio.Event()

        async def read_stream() -> None:
            async for _message in client.stream(session, read_timeout=3600.0):
                stream_open.set()

        reader = asyncio.create_task(read_stream())
        # The server pings once when the stream opens; after that the stream is silent.
        async with asyncio.timeout(HANG):
            await stream_open.wait()

        sizes = [256 * KiB, 512 * KiB, 768 * KiB, 1024 * KiB] * 3
        unknown = 10**12  # no such attempt: the server reads each body whole, then refuses it
        connections: set[Any] = set()

        async def upload(i: int, size: int) -> p.LogReply:
            chunk = p.LogChunk(unknown + i, 0, "stdout", 0, os.urandom(size))
            return await _post_logs(client, session, p.LogBatch([chunk]), connections)

        async def chatter() -> None:
            for _ in range(5):
                await client.events(session, p.EventBatch())
                await client.heartbeat(session, p.Heartbeat(p.Capacity()))

        async with asyncio.timeout(HANG):
            # One upload alone, with only the stream open, is the runner's everyday case (its
            # log shipper sends one batch at a time); it already stalled.
            first = await upload(0, 1024 * KiB)
            assert first.refused == [unknown]
            replies = await asyncio.gather(
                *(upload(i, size) for i, size in enumerate(sizes, start=1)), chatter()
            )
        for i, reply in enumerate(replies[:-1], start=1):
            assert reply.refused == [unknown + i]
        assert not reader.done(), "the NDJSON stream must outlive the uploads"
        # The connection is still the one it was: every request went over it.
        response = await client.http.get(f"/sessions/{session}/nope")
        assert response.http_version == "HTTP/2"
        connections.add(response.extensions["network_stream"])
        assert len(connections) == 1, "every upload and the last request shared one connection"
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    finally:
        await client.close()


async def test_a_runner_ships_a_large_log_in_bounded_time(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The real runner: its stream, heartbeats and log shipper on one connection, 8 MiB of log."""
    size = 8 * 1024 * KiB
    spec = f"""\
workflow:
  name: big-log
  tasks:
  - name: talk
    image: ubuntu
    command: [sh, -c, 'head -c {size} /dev/zero | tr "\\\\0" x; echo; echo the-end']
"""
    async with runner_in_loop(server.base, tmp_path / "r", sandbox="none"):
        wid = await submit(api, spec)
        async with asyncio.timeout(HANG):
            wf = await wait_for(api, wid, timeout=HANG)
    assert wf["status"] == "COMPLETED", wf
    assert task_of(wf, "talk")["status"] == "COMPLETED"
    log = (await api.get(f"/api/v1/workflows/{wid}/tasks/talk/logs")).content
    assert log.count(b"x") == size
    assert log.rstrip().endswith(b"the-end")
