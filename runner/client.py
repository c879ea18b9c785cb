"""The runner's HTTP/2 connection to the control plane: one client, one TCP connection.

Cleartext URLs use HTTP/2 with prior knowledge (``http1=False``); https URLs negotiate h2 with
ALPN. Idempotent calls (events, logs, heartbeat) are retried with backoff and jitter; opening a
session is not, since the loop opens a new one when anything goes wrong.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx
import msgspec

from runner import protocol as p

__all__ = ("AuthError", "RunnerClient", "SessionGone", "backoff")

T = TypeVar("T")
_encoder = msgspec.json.Encoder()


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
