"""The runner's HTTP/2 connection to the control plane: one client, one TCP connection.

Cleartext URLs use HTTP/2 with prior knowledge (``http1=False``); https URLs negotiate h2 with
ALPN. Idempotent calls (events, logs, heartbeat) are retried with backoff and jitter; opening a
session is not, since the loop opens a new one when anything goes wrong. Importing this module
fixes an HTTP/2 upload stall of httpcore (below).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import ssl
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx
import msgspec
from httpcore._async.http2 import AsyncHTTP2Connection

from runner import protocol as p

__all__ = ("AuthError", "RunnerClient", "SessionGone", "backoff")

T = TypeVar("T")
_encoder = msgspec.json.Encoder()


# -- httpcore's HTTP/2 upload stall (pydantic/httpx2#1133, fix proposed in #1163) -------------
#
# httpcore 1.0.9 waits for flow-control window in ``_wait_for_outgoing_flow`` by calling
# ``_receive_events()``, which takes the connection's read lock and then always reads from the
# socket. The runner's NDJSON stream is nearly always inside that lock, blocked in a read. So
# when a log upload (up to 1 MiB, about 1.4 MB of JSON, against the 65,535-byte window a server
# or an ingress grants by default) runs out of window, it queues for the lock; the stream's read
# receives the WINDOW_UPDATE it waits for, and the upload then takes the lock and reads again
# for an update that already came. The server has nothing more to send (it waits for the rest
# of the body), so the upload sits until some other frame arrives (a heartbeat's answer, a
# ping) or its read timeout fires, and a read timeout fails every stream of the connection,
# the NDJSON stream included (tests/runner/test_flow_control.py). A bigger window on our
# server would not remove it: runners often reach the control plane through an ingress
# (deploy/base/control-plane/ingress.yaml) that grants its own windows. The fault is in the
# client, so it is fixed there, as upstream proposes: a task that waits for window, once it
# holds the read lock, reads from the network only while its window is still empty.
#
# Done by replacing two methods of httpcore's connection class, for the whole process (`gantry
# dev` runs a runner beside the server): elsewhere it changes nothing but skipping a read that
# would wait for credit already granted. pyproject.toml bounds httpcore to the 1.0 series these
# internals are from, and this import fails loudly if they move.

for _name in ("_wait_for_outgoing_flow", "_receive_events", "_read_incoming_data"):
    if not callable(getattr(AsyncHTTP2Connection, _name, None)):  # pragma: no cover
        raise ImportError(
            f"httpcore's AsyncHTTP2Connection has no {_name}: review runner/client.py"
        )

_waiting_for_window: contextvars.ContextVar[tuple[AsyncHTTP2Connection, int] | None] = (
    contextvars.ContextVar("gantry_waiting_for_window", default=None)
)
_httpcore_read_incoming_data = AsyncHTTP2Connection._read_incoming_data


def _outgoing_flow(connection: AsyncHTTP2Connection, stream_id: int) -> int:
    """How many bytes ``stream_id`` may send now (its and the connection's window, one frame)."""
    state = connection._h2_state
    return min(state.local_flow_control_window(stream_id), state.max_outbound_frame_size)


async def _wait_for_outgoing_flow(self: AsyncHTTP2Connection, request: Any, stream_id: int) -> int:
    # httpcore's loop, but ``<= 0``: a SETTINGS frame that lowers INITIAL_WINDOW_SIZE can make a
    # window negative (httpcore#1082), which h2 refuses to send into.
    flow = _outgoing_flow(self, stream_id)
    if flow > 0:
        return flow
    token = _waiting_for_window.set((self, stream_id))
    try:
        while flow <= 0:
            await self._receive_events(request)  # reads, under the read lock, via the below
            flow = _outgoing_flow(self, stream_id)
    finally:
        _waiting_for_window.reset(token)
    return flow


async def _read_incoming_data(self: AsyncHTTP2Connection, request: Any) -> list[Any]:
    # Called by ``_receive_events`` with the read lock held. If this task only waits for window
    # and a read another stream made while this one queued for the lock brought it, do not read.
    waiting = _waiting_for_window.get()
    if waiting is not None and waiting[0] is self and _outgoing_flow(self, waiting[1]) > 0:
        return []
    return await _httpcore_read_incoming_data(self, request)


AsyncHTTP2Connection._wait_for_outgoing_flow = _wait_for_outgoing_flow  # type: ignore[method-assign]
AsyncHTTP2Connection._read_incoming_data = _read_incoming_data  # type: ignore[method-assign]


class SessionGone(Exception):
    """The session ended on the server (a newer one replaced it): open a new session."""


class AuthError(Exception):
    """The server refused the token (401/403): wrong token or wrong backend name."""


def backoff(attempt: int, base: float = 0.5, cap: float = 15.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2**attempt))


class RunnerClient:
    def __init__(
        self, server_url: str, token: str, *, verify: str | bool | ssl.SSLContext = True
    ) -> None:
        base = server_url.rstrip("/") + "/api/runner/v1"
        tls = base.startswith("https://")
        if isinstance(verify, str):  # a CA bundle for a private certificate
            verify = ssl.create_default_context(cafile=verify)
        self.http = httpx.AsyncClient(
            base_url=base,
            http1=tls,  # cleartext: HTTP/2 only, with prior knowledge
            http2=True,
            verify=verify,
            headers={"authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def _post(self, path: str, body: Any, reply: type[T]) -> T:
        response = await self.http.post(
            path, content=_encoder.encode(body), headers={"content-type": "application/json"}
        )
        _raise_for(response)
        return msgspec.json.decode(response.content, type=reply)

    async def _post_retrying(self, path: str, body: Any, reply: type[T], attempts: int = 4) -> T:
        for i in range(attempts):
            try:
                return await self._post(path, body, reply)
            except (httpx.TransportError, _ServerError):
                if i == attempts - 1:
                    raise
                await asyncio.sleep(backoff(i))
        raise AssertionError("unreachable")

    async def hello(self, hello: p.Hello) -> p.Welcome:
        return await self._post("/sessions", hello, p.Welcome)

    async def events(self, session: str, batch: p.EventBatch) -> p.EventReply:
        return await self._post_retrying(f"/sessions/{session}/events", batch, p.EventReply)

    async def logs(self, session: str, batch: p.LogBatch) -> p.LogReply:
        return await self._post_retrying(f"/sessions/{session}/logs", batch, p.LogReply)

    async def heartbeat(self, session: str, hb: p.Heartbeat) -> p.HeartbeatReply:
        return await self._post_retrying(f"/sessions/{session}/heartbeat", hb, p.HeartbeatReply)

    async def stream(self, session: str, read_timeout: float) -> AsyncIterator[p.StreamMessage]:
        """The session's NDJSON stream, message by message, until the server ends it."""
        timeout = httpx.Timeout(30.0, connect=10.0, read=read_timeout)
        async with self.http.stream("GET", f"/sessions/{session}/stream", timeout=timeout) as r:
            if r.status_code >= 400:
                await r.aread()
                _raise_for(r)
            async for line in r.aiter_lines():
                if line.strip():
                    yield p.decode_stream_line(line.encode())


class _ServerError(Exception):
    pass


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    detail = response.text[:500]
    if response.status_code in (401, 403):
        raise AuthError(f"{response.status_code}: {detail}")
    if response.status_code in (404, 409):
        raise SessionGone(detail)
    if response.status_code >= 500:
        raise _ServerError(f"{response.status_code}: {detail}")
    raise RuntimeError(f"the control plane refused a request ({response.status_code}): {detail}")
