"""The database: Piccolo engine and connection pool, transactions, and the LISTEN/NOTIFY hub.

Services publish change hints with ``notify(conn, topic, ...)`` inside their transaction;
Postgres delivers a NOTIFY only when the transaction commits (and drops it on rollback), so
hints are published after commit by construction. Each replica's ``Hub`` listens on one
dedicated connection, reconnects when it drops, and fans hints out to local subscribers.
We keep our own hub because Litestar's asyncpg channels backend opens a connection per publish
and does not reconnect (litestar#4110, #5008).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
from piccolo.engine.postgres import PostgresEngine

__all__ = ("CHANNEL", "RESYNC", "Database", "Hub", "Subscription", "make_engine", "notify")

log = logging.getLogger(__name__)

CHANNEL = "gantry"
RESYNC = "*resync*"  # sent to every subscriber after the hub reconnects: hints may be lost


def make_engine(url: str) -> PostgresEngine:
    """A Piccolo engine for ``url`` (any asyncpg DSN, including a Unix-socket one)."""
    return PostgresEngine(config={"dsn": url}, extensions=())


async def notify(conn: asyncpg.Connection, *topics: str) -> None:
    """Queue change hints on ``conn``'s transaction; Postgres sends them on commit."""
    if topics:
        await conn.execute(
            "SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t", CHANNEL, list(set(topics))
        )


class Database:
    """The engine, its pool, and a transaction helper that yields the asyncpg connection.

    A server has two: the request pool, which Piccolo's tables are bound to, and a reserve
    (``bind_tables=False``) that only the scheduler, the sweeper and the runner API use, so a
    burst of slow requests cannot take the connections the control loop needs. The reserve's
    users run raw SQL on the connection this class yields (Piccolo table queries would go to
    the request pool's engine). ``statement_timeout`` (seconds, 0 for none) is set on every
    connection of the pool, so no statement can hold its connection and locks for long.
    """

    def __init__(
        self,
        url: str,
        pool_size: int = 20,
        *,
        statement_timeout: float = 0,
        bind_tables: bool = True,
        name: str = "requests",
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.statement_timeout = statement_timeout
        self.bind_tables = bind_tables
        self.name = name
        self.engine = make_engine(url)

    async def start(self) -> None:
        from app.piccolo_app import TABLES

        server_settings = {"application_name": f"gantry-{self.name}"}
        if self.statement_timeout > 0:
            server_settings["statement_timeout"] = str(max(1, int(self.statement_timeout * 1000)))
        await self.engine.start_connection_pool(
            min_size=min(2, self.pool_size),
            max_size=self.pool_size,
            server_settings=server_settings,
        )
        if self.bind_tables:
            for table in TABLES:
                table._meta.db = self.engine

    async def close(self) -> None:
        if self.engine.pool is not None:
            await self.engine.close_connection_pool()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.engine.pool is not None, "Database.start() was not awaited"
        return self.engine.pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction; Piccolo queries made inside it use the same connection."""
        async with self.engine.transaction() as tx:
            yield tx.connection

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for reads that need no transaction."""
        async with self.pool.acquire() as conn:
            yield conn

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2):
                async with self.pool.acquire() as conn:
                    return bool(await conn.fetchval("SELECT 1"))
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False


class Subscription:
    """A subscriber's queue of hints for the topics it asked for."""

    __slots__ = ("_hub", "queue", "topics")

    def __init__(self, hub: Hub, topics: Iterable[str]) -> None:
        self._hub = hub
        self.topics = frozenset(topics)
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)

    def push(self, topic: str) -> None:
        try:
            self.queue.put_nowait(topic)
        except asyncio.QueueFull:
            # A slow consumer: drop the backlog and ask it to re-read everything once.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)

    async def get(self, timeout: float | None = None) -> str | None:
        """The next hint, or None after ``timeout`` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def drain(self) -> set[str]:
        """Every hint already queued, without waiting (coalesces bursts)."""
        topics = set()
        while not self.queue.empty():
            topics.add(self.queue.get_nowait())
        return topics

    def close(self) -> None:
        self._hub._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    """One LISTEN connection per replica, fanning NOTIFY hints out to subscribers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connected = asyncio.Event()
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._ever_connected = False

    def subscribe(self, *topics: str) -> Subscription:
        sub = Subscription(self, topics)
        for topic in sub.topics:
            self._subs[topic].add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        for topic in sub.topics:
            subs = self._subs.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[topic]

    def _deliver(self, topic: str) -> None:
        for sub in tuple(self._subs.get(topic, ())):
            sub.push(topic)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._deliver(payload)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gantry-hub")
        try:
            await asyncio.wait_for(self.connected.wait(), 10)
        except TimeoutError:
            log.warning("hub: not connected after 10 s; retrying in the background")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)

    async def _run(self) -> None:
        delay = 0.2
        while True:
            lost = asyncio.Event()
            try:
                self._conn = await asyncpg.connect(self.url, timeout=10)
                self._conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await self._conn.add_listener(CHANNEL, self._on_notify)
                self.connected.set()
                delay = 0.2
                if self._ever_connected:  # a reconnect: hints may have been missed
                    for subs in tuple(self._subs.values()):
                        for sub in tuple(subs):
                            sub.push(RESYNC)
                self._ever_connected = True
                # Check the connection now and then: a silently dead TCP link never
                # fires the termination listener.
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 15)
                    if not lost.is_set():
                        async with asyncio.timeout(5):
                            await self._conn.fetchval("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect with backoff
                log.warning("hub: listener connection lost (%s); reconnecting", exc)
            self.connected.clear()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.terminate()
                self._conn = None
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
