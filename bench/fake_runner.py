"""A runner that speaks protocol v1 over HTTP/2 but runs nothing: it measures the control plane.

Each instance is one backend on its own HTTP/2 connection. It acknowledges launches, and reports
state when told to, stamping the time each report was sent so the benchmark can measure how
long a report takes to reach an SSE subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from runner import protocol as p

__all__ = ("FakeRunner",)


class FakeRunner:
    def __init__(self, base: str, backend: str, token: str, slots: int = 100_000) -> None:
        self.backend = backend
        self.http = httpx.AsyncClient(
            base_url=base + "/api/runner/v1",
            http1=False,
            http2=True,
            headers={"authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(60, read=120),
            limits=httpx.Limits(max_connections=1),
        )
        self.capacity = p.Capacity(
            nodes=[p.Node(f"{backend}-node", cpu=100_000, memory=2**50, gpu=0)], slots=slots
        )
        self.session = ""
        self.epoch = 0
        self.launches: dict[int, p.Attempt] = {}
        self.launched_at: dict[int, float] = {}
        self.sent_at: dict[tuple[str, str, str], float] = {}  # (workflow, task, status) -> time
        self.new_launch = asyncio.Event()
        self._stream_task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._pending_acks: list[int] = []

    async def _post(self, path: str, body: Any, reply: type[Any]) -> Any:
        r = await self.http.post(path, content=msgspec.json.encode(body))
        r.raise_for_status()
        return msgspec.json.decode(r.content, type=reply)

    async def connect(self) -> None:
        welcome = await self._post(
            "/sessions", p.Hello(self.backend, 1, "bench", capacity=self.capacity), p.Welcome
        )
        self.session, self.epoch = welcome.session_id, welcome.epoch
        self._stream_task = asyncio.create_task(self._read_stream())
        self._beat_task = asyncio.create_task(self._beat(welcome.heartbeat_interval))

    async def _beat(self, interval: float) -> None:
        """Heartbeats, as a real runner sends: without them leases expire and tasks fail."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(httpx.HTTPError):
                await self.heartbeat()

    async def _read_stream(self) -> None:
        while True:
            try:
                async with self.http.stream("GET", f"/sessions/{self.session}/stream") as r:
                    async for line in r.aiter_lines():
                        msg = p.decode_stream_line(line.encode())
                        if isinstance(msg, p.Launch):
                            self.launches[msg.attempt.id] = msg.attempt
                            self.launched_at[msg.attempt.id] = time.monotonic()
                            self._pending_acks.append(msg.seq)
                            self.new_launch.set()
            except (httpx.HTTPError, asyncio.CancelledError):
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                await asyncio.sleep(0.2)

    async def report(self, attempts: list[int], status: str, batch: int = 200) -> None:
        """Report ``status`` for ``attempts`` in batches, recording when each was sent."""
        for i in range(0, len(attempts), batch):
            now = datetime.now(UTC)
            events = [
                p.StateReport(
                    a, self.epoch, status, now, exit_code=0 if status == "COMPLETED" else None
                )
                for a in attempts[i : i + batch]
            ]
            acks, self._pending_acks = self._pending_acks, []
            sent = time.monotonic()
            for a in attempts[i : i + batch]:
                att = self.launches[a]
                self.sent_at[(att.workflow_id, att.task, status)] = sent
            await self._post(
                f"/sessions/{self.session}/events", p.EventBatch(events, acks), p.EventReply
            )

    async def heartbeat(self) -> None:
        await self._post(
            f"/sessions/{self.session}/heartbeat",
            p.Heartbeat(self.capacity, live=list(self.launches)),
            p.HeartbeatReply,
        )

    async def close(self) -> None:
        for task in (self._stream_task, self._beat_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self.http.aclose()
