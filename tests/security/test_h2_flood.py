"""One HTTP/2 client cannot make the server buffer or burn its loop on control frames.

A client that sent PING frames without reading made the server queue what it sent without
bound (2 GB) and parse the backlog for minutes after it left; SETTINGS floods and rapid reset
(HEADERS then RST_STREAM, CVE-2023-44487) kept the loop busy. app/cli.py's GuardedH2Protocol
counts such frames per connection and closes it with GOAWAY ENHANCE_YOUR_CALM past a limit.
Here raw frames go over a plain socket from a thread (the server runs in the test's loop),
without reading, until the server closes the connection or a bounded number is sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
from hyperframe.frame import PingFrame, SettingsFrame

from app.cli import FLOOD_LIMITS
from tests.support import InProcessServer, make_settings

# Far more than any limit, and than the kernel buffers hold (tcp_rmem and wmem allow some
# 36 MB), so a server that keeps reading lets this many through.
MAX_FRAMES = 2_500_000
BATCH = 500
PING = PingFrame(0, opaque_data=b"12345678").serialize()
SETTINGS = SettingsFrame(
    0, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535}
).serialize()
HANG = 120  # seconds: a hang detector, not a timing assertion


def port(server: InProcessServer) -> int:
    return urlsplit(server.base).port or 80


def open_h2(server: InProcessServer) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port(server)))
    sock.settimeout(10)  # a server that stops reading (without closing) stalls the sender
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


AFTERMATH = 15.0  # seconds a server has, after the last frame, to close a flooding connection


def flood(
    server: InProcessServer,
    batch: Callable[[], bytes],
    frames_per_batch: int,
    max_frames: int = MAX_FRAMES,
) -> str:
    """Send batches without reading: "closed" (by the server), "stalled" or "accepted"."""
    sock, _ = open_h2(server)
    sent = 0
    try:
        while sent < max_frames:
            sock.sendall(batch())
            sent += frames_per_batch
        # Everything may fit in the kernel's socket buffers before the server has read it:
        # then what counts is whether the server, having read it, closes the connection.
        sock.settimeout(AFTERMATH)
        while sock.recv(65536):
            pass
        return "closed"  # EOF: the server closed it
    except (BrokenPipeError, ConnectionResetError):
        return "closed"
    except TimeoutError:
        return "stalled" if sent < max_frames else "accepted"
    finally:
        sock.close()


async def healthz_answers(server: InProcessServer) -> None:
    async with server.client(http1=False, http2=True) as other:
        response = await other.get("/healthz")
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"


async def test_a_ping_flood_without_reading_is_closed(server: InProcessServer) -> None:
    async with asyncio.timeout(HANG):
        outcome = await asyncio.to_thread(flood, server, lambda: PING * BATCH, BATCH)
        assert outcome == "closed"
        await healthz_answers(server)


async def test_a_settings_flood_is_closed(server: InProcessServer) -> None:
    async with asyncio.timeout(HANG):
        outcome = await asyncio.to_thread(flood, server, lambda: (PING + SETTINGS) * BATCH, BATCH)
        assert outcome == "closed"
        outcome = await asyncio.to_thread(flood, server, lambda: SETTINGS * BATCH, BATCH)
        assert outcome == "closed"
        await healthz_answers(server)


async def test_rapid_reset_is_closed(server: InProcessServer) -> None:
    # HEADERS for /healthz then RST_STREAM at once, as CVE-2023-44487; no sign-in needed.
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.data_to_send()  # flood() sends its own preface; this one only numbers the streams
    headers = [(":method", "GET"), (":path", "/healthz"), (":scheme", "http")]
    headers.append((":authority", f"127.0.0.1:{port(server)}"))
    pairs = 100

    def batch() -> bytes:
        for _ in range(pairs):
            stream_id = client.get_next_available_stream_id()
            client.send_headers(stream_id, headers, end_stream=True)
            client.reset_stream(stream_id)
        return client.data_to_send()

    async with asyncio.timeout(HANG):
        # 20,000 pairs as in the finding: a server without a limit takes them all.
        outcome = await asyncio.to_thread(flood, server, batch, 2 * pairs, 2 * 20_000)
        assert outcome == "closed"
        await healthz_answers(server)


def pings_then_read(server: InProcessServer, count: int) -> list[h2.events.Event]:
    """Send ``count`` PINGs in one write, then read every event until the server stops."""
    sock, conn = open_h2(server)
    events: list[h2.events.Event] = []
    try:
        sock.sendall(PING * count)
        acks = 0
        while acks < count:
            data = sock.recv(65536)
            if not data:
                break
            new = conn.receive_data(data)
            events += new
            acks += sum(isinstance(e, h2.events.PingAckReceived) for e in new)
            if any(isinstance(e, h2.events.ConnectionTerminated) for e in new):
                break
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
    return events


async def test_the_server_says_enhance_your_calm(server: InProcessServer) -> None:
    async with asyncio.timeout(HANG):
        events = await asyncio.to_thread(pings_then_read, server, FLOOD_LIMITS["ping"] + 1)
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway, events
    assert goaway[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway[0].additional_data == b"ping flood"


async def test_pings_within_the_limit_are_answered(server: InProcessServer) -> None:
    count = FLOOD_LIMITS["ping"] // 2
    async with asyncio.timeout(HANG):
        events = await asyncio.to_thread(pings_then_read, server, count)
    assert sum(isinstance(e, h2.events.PingAckReceived) for e in events) == count
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


async def test_a_connection_that_never_sends_a_request_is_closed_after_the_keep_alive(
    database_url: str, tmp_path: Path
) -> None:
    """Found by attacking it: the HTTP/2 preface and SETTINGS, then nothing, held a connection
    (and a file descriptor) for ever; 4,000 of them took 3,510 of the server's descriptors."""
    srv = InProcessServer(make_settings(database_url, tmp_path, keep_alive=2))
    await srv.start()
    try:

        def idle_then_closed() -> bool:
            sock, _ = open_h2(srv)
            sock.settimeout(HANG)
            try:
                while sock.recv(65536):
                    pass
                return True  # EOF: the server closed it
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
            finally:
                sock.close()

        assert await asyncio.to_thread(idle_then_closed), "the idle connection stayed open"
    finally:
        await srv.stop()
