"""The runner's main loop: a session, its stream, and the reports, logs and heartbeats.

While a session lives, five tasks share one HTTP/2 connection: the stream reader (launches and
cancels in), the reporter (state reports and launch acks out), the log shipper (chunks by byte
offset), the heartbeat (capacity out, lease renewal, lost cancels back) and the watcher (which
notices attempts that ended). Anything going wrong ends the session; the loop backs off with
jitter and opens a new one, offering its inventory so live attempts are kept. Attempts keep
running meanwhile: they belong to the executor, not to this process.

An attempt's final status is reported only after its whole log has been acknowledged, so a
workflow that is COMPLETED has complete logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from runner import __version__
from runner import protocol as p
from runner.client import AuthError, RunnerClient, SessionGone, backoff
from runner.executors.base import STREAMS, AttemptState, Executor

__all__ = ("Runner",)

log = logging.getLogger("gantry.runner")
_LOG_CHUNK = 256 * 1024
_LOG_BATCH = 1024 * 1024
# Chunks per batch, and the most one attempt's read may give: a task
# alternating tiny writes once made batches of 37,000 chunks that the server refused (413).
_LOG_BATCH_CHUNKS = 2048
_LOG_CHUNKS_PER_ATTEMPT = 512
_WATCH_SECONDS = 0.1


@dataclass(slots=True)
class _Pending:
    """A state report waiting to be sent; the epoch is stamped when it is sent."""

    attempt: int
    status: str
    time: datetime
    exit_code: int | None = None
    reason: str | None = None
    node: str | None = None


@dataclass(slots=True)
class _Tracked:
    launch: p.Launch
    epoch: int
    started: bool = False
    phase: str = "pending"  # the last phase reported: pending, initializing or running
    ended: AttemptState | None = None
    final_queued: bool = False
    offsets: dict[p.Stream, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))

    @property
    def id(self) -> int:
        return self.launch.attempt.id


class _Stop(Exception):
    pass


class Runner:
    def __init__(
        self,
        client: RunnerClient,
        executor: Executor,
        backend: str,
        *,
        cluster_id: str = "",
    ) -> None:
        self.client = client
        self.executor = executor
        self.backend = backend
        self.cluster_id = cluster_id
        self.node = socket.gethostname()
        self.attempts: dict[int, _Tracked] = {}
        self.outbox: list[_Pending] = []
        self.acks: set[int] = set()
        self.session_id: str | None = None
        self.epoch = 0
        self.connected = asyncio.Event()
        self._wake_reporter = asyncio.Event()
        self._heartbeat_interval = 5.0
        self._flush_interval = 0.2
        self._waiting_groups: dict[tuple[str, str], set[int]] = {}

    # -- the session loop -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self.executor.open()
            except Exception as exc:  # e.g. the Kubernetes API is not reachable yet
                log.warning("the executor could not connect: %s", exc)
                failures = min(failures + 1, 8)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff(failures, cap=10.0))
                continue
            try:
                await self._session(stop)
            except _Stop:
                break
            except AuthError as exc:
                log.error("the control plane refused this runner's token: %s", exc)
            except SessionGone as exc:
                log.info("session ended (%s); opening a new one", exc)
            except (httpx.HTTPError, OSError, RuntimeError) as exc:
                log.warning("connection to the control plane failed: %r", exc)
            self.connected.clear()
            failures = min(failures + 1, 8)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff(failures, cap=10.0))

    async def _session(self, stop: asyncio.Event) -> None:
        for held in await self.executor.held():
            if held.launch.attempt.id not in self.attempts:
                t = _Tracked(held.launch, held.epoch, started=held.started)
                self.attempts[t.id] = t
        inventory = [
            p.InventoryItem(t.id, t.epoch, "RUNNING" if t.started else "SCHEDULING")
            for t in self.attempts.values()
        ]
        welcome = await self.client.hello(
            p.Hello(
                backend=self.backend,
                protocol_version=p.PROTOCOL_VERSION,
                runner_version=__version__,
                cluster_id=self.cluster_id,
                capacity=await self.executor.capacity(),
                inventory=inventory,
            )
        )
        self.session_id, self.epoch = welcome.session_id, welcome.epoch
        self._heartbeat_interval = welcome.heartbeat_interval
        self._flush_interval = welcome.log_flush_interval
        log.info("session %s open (epoch %d)", self.session_id, self.epoch)
        for decision in welcome.decisions:
            kept = self.attempts.get(decision.attempt)
            if kept is None:
                continue
            if decision.action == "kill":
                log.info("attempt %d: killed on reconnect (%s)", kept.id, decision.reason)
                await self._drop(kept.id, kill=True)
                continue
            kept.epoch = decision.epoch
            await self.executor.set_epoch(kept.id, kept.epoch)
            for offset in decision.offsets:
                kept.offsets[offset.stream] = offset.offset
            if not kept.started:
                await self._start(kept)
        self.connected.set()
        tasks = [
            asyncio.create_task(self._stream_loop(), name="stream"),
            asyncio.create_task(self._report_loop(), name="report"),
            asyncio.create_task(self._log_loop(), name="logs"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._watch_loop(), name="watch"),
            asyncio.create_task(_raise_when(stop), name="stop"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    # -- the stream -----------------------------------------------------------------------

    async def _stream_loop(self) -> None:
        failures = 0
        while True:
            assert self.session_id is not None
            try:
                async for message in self.client.stream(self.session_id, read_timeout=60.0):
                    failures = 0
                    if isinstance(message, p.Launch):
                        await self._on_launch(message)
                    elif isinstance(message, p.Cancel):
                        await self._on_cancel(message)
                    elif isinstance(message, p.Goodbye):
                        if not message.reconnect:
                            raise SessionGone(message.reason)
                        break
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError):
                failures += 1
                if failures > 3:
                    raise
            await asyncio.sleep(backoff(failures, base=0.2, cap=2.0))

    async def _on_launch(self, launch: p.Launch) -> None:
        a = launch.attempt
        if a.id not in self.attempts:
            await self.executor.prepare(launch)
            t = _Tracked(launch, launch.epoch)
            self.attempts[a.id] = t
            if a.barrier and a.group_size > 1:
                key = (a.workflow_id, a.group)
                waiting = self._waiting_groups.setdefault(key, set())
                waiting.add(a.id)
                if len(waiting) >= a.group_size:
                    del self._waiting_groups[key]
                    for aid in sorted(waiting):
                        if (member := self.attempts.get(aid)) is not None and not member.started:
                            await self._start(member)
            else:
                await self._start(t)
        self.acks.add(launch.seq)
        self._wake_reporter.set()

    async def _start(self, t: _Tracked) -> None:
        state = await self.executor.start(t.id)
        t.started = True
        self._progress(t, state)

    def _progress(self, t: _Tracked, state: AttemptState) -> None:
        """Report INITIALIZING and RUNNING as the executor's phase reaches them, once each."""
        node = state.node or self.node
        if not state.running:
            if t.phase != "running" and state.exit_code is not None:
                self._queue(t.id, "RUNNING", node=node)  # it ran, however briefly
            t.ended = state
            return
        if state.phase in ("initializing", "running") and t.phase == "pending":
            t.phase = "initializing"
            self._queue(t.id, "INITIALIZING", node=node)
        if state.phase == "running" and t.phase != "running":
            t.phase = "running"
            self._queue(t.id, "RUNNING", node=node)

    async def _on_cancel(self, cancel: p.Cancel) -> None:
        t = self.attempts.get(cancel.attempt)
        if t is None:
            # Never launched here: say so, so the control plane stops counting it.
            self._queue(cancel.attempt, "FAILED", reason="not running on this runner")
            return
        if not t.started:
            t.started = True
            t.ended = AttemptState(False, None, "FAILED", "canceled before it started")
            return
        if t.ended is not None:
            return  # already over; its end is being reported
        log.info("attempt %d: stopping (%s)", t.id, cancel.reason or "canceled")
        await self.executor.stop(t.id, 0.0 if cancel.force else cancel.grace)

    # -- reports --------------------------------------------------------------------------

    def _queue(self, attempt: int, status: str, **kw: object) -> None:
        self.outbox.append(_Pending(attempt, status, datetime.now(UTC), **kw))  # type: ignore[arg-type]
        self._wake_reporter.set()

    async def _report_loop(self) -> None:
        while True:
            await self._wake_reporter.wait()
            self._wake_reporter.clear()
            while self.outbox or self.acks:
                assert self.session_id is not None
                pending = self.outbox[:500]
                acks = sorted(self.acks)
                events = []
                for item in pending:
                    t = self.attempts.get(item.attempt)
                    events.append(
                        p.StateReport(
                            attempt=item.attempt,
                            epoch=t.epoch if t is not None else self.epoch,
                            status=item.status,
                            time=item.time,
                            exit_code=item.exit_code,
                            reason=p.fit_report_text(item.reason, p.MAX_REASON),
                            node=p.fit_report_text(item.node, p.MAX_NODE_NAME),
                        )
                    )
                reply = await self.client.events(self.session_id, p.EventBatch(events, acks))
                del self.outbox[: len(pending)]
                self.acks.difference_update(acks)
                final = {e.attempt for e in events if e.status not in ("INITIALIZING", "RUNNING")}
                for result in reply.results:
                    if result.outcome in ("stale", "unknown"):
                        log.warning(
                            "attempt %d: %s here; stopping it", result.attempt, result.outcome
                        )
                        await self._drop(result.attempt, kill=True)
                    elif result.attempt in final:
                        await self._drop(result.attempt, kill=False)
                for refusal in reply.refused:
                    # Sending it again would be refused again; the lease ends the attempt.
                    log.error("report %s refused: %s", refusal.path, refusal.reason)
                    if refusal.attempt in final:
                        await self._drop(refusal.attempt, kill=False)
                for cancel in reply.cancels:
                    await self._on_cancel(cancel)

    async def _drop(self, attempt: int, *, kill: bool) -> None:
        if kill:
            await self.executor.stop(attempt, 0.0)
        await self.executor.forget(attempt)
        self.attempts.pop(attempt, None)

    # -- the watcher and the log shipper ----------------------------------------------------

    async def _watch_loop(self) -> None:
        while True:
            for t in list(self.attempts.values()):
                if t.started and t.ended is None:
                    self._progress(t, await self.executor.state(t.id))
            await asyncio.sleep(_WATCH_SECONDS)

    async def _log_loop(self) -> None:
        while True:
            if not await self._ship_logs():
                await asyncio.sleep(self._flush_interval)

    async def _ship_logs(self) -> bool:
        """Send one batch of new log bytes; True when a full batch went (there may be more)."""
        assert self.session_id is not None
        chunks: list[p.LogChunk] = []
        size = 0
        more = False  # an attempt had more pieces than one call gives
        quiet: list[_Tracked] = []
        for t in list(self.attempts.values()):
            if not t.started:
                continue
            ended_before_read = t.ended is not None
            had_data = False
            if size >= _LOG_BATCH or len(chunks) >= _LOG_BATCH_CHUNKS:
                more = True
                continue  # not read this time: not known to be caught up either
            # Both streams in the order the task wrote them (where the executor knows it):
            # the control plane numbers lines in the order chunks arrive.
            pieces = await self.executor.read_logs(
                t.id, dict(t.offsets), _LOG_CHUNK, _LOG_CHUNKS_PER_ATTEMPT
            )
            more |= len(pieces) >= _LOG_CHUNKS_PER_ATTEMPT
            for piece in pieces:
                had_data = True
                chunk = p.LogChunk(t.id, t.epoch, piece.stream, piece.offset, piece.data, piece.at)
                chunks.append(chunk)
                size += len(piece.data)
            if ended_before_read and not had_data and not t.final_queued:
                quiet.append(t)
        if chunks:
            reply = await self.client.logs(self.session_id, p.LogBatch(chunks))
            for offset in reply.offsets:
                acked = self.attempts.get(offset.attempt)
                if acked is not None:
                    acked.offsets[offset.stream] = offset.offset
            for attempt in reply.refused:
                log.warning(
                    "attempt %d: logs refused (fenced by a newer session); stopping it", attempt
                )
                await self._drop(attempt, kill=True)
        for t in quiet:
            # Ended, and every byte of its log is acknowledged: report how it ended.
            if t.id in self.attempts:
                self._final_report(t)
        return size >= _LOG_BATCH or len(chunks) >= _LOG_BATCH_CHUNKS or more

    def _final_report(self, t: _Tracked) -> None:
        assert t.ended is not None
        t.final_queued = True
        state = t.ended
        if state.status is not None:
            self._queue(t.id, state.status, reason=state.reason, exit_code=state.exit_code)
        elif state.exit_code == 0:
            self._queue(t.id, "COMPLETED", exit_code=0)
        else:
            self._queue(t.id, "FAILED", exit_code=state.exit_code)

    # -- heartbeat ------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            assert self.session_id is not None
            reply = await self.client.heartbeat(
                self.session_id,
                p.Heartbeat(await self.executor.capacity(), live=sorted(self.attempts)),
            )
            for refusal in reply.refused:
                log.error("capacity %s not counted: %s", refusal.path, refusal.reason)
            for attempt in reply.kill:
                log.warning("attempt %d: unknown to the control plane; stopping it", attempt)
                await self._drop(attempt, kill=True)
            for cancel in reply.cancels:
                await self._on_cancel(cancel)


async def _raise_when(stop: asyncio.Event) -> None:
    await stop.wait()
    raise _Stop
