"""Logs as plain text (the API and the CLI): whole lines in the order their ends arrived, a
line one stream has not finished never glued to another's, optionally each line's time, and
for several tasks each line's task.

Built with bytes operations over whole chunks, never an object per line: a log of 16 MB of
empty lines made 16 million line objects (3.6 GB) and a line of 128 MB without a newline was
rebuilt on every chunk (quadratic), each freezing the server (a hostile review). The caller
feeds pages of bounded size (``PAGE_BYTES``) and does so in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.db import Database, Hub

__all__ = ("PAGE_BYTES", "TextLog", "chunk_page", "follow_text", "once", "read_text")

# Bytes of chunks read per page. A page of empty lines with prefix and time comes out some
# 30 times larger (8 MB for 256 KiB), built in one step of a thread that holds the GIL.
PAGE_BYTES = 256 * 1024
# An unfinished line is held (to keep it whole) up to this long; a longer one is written as it
# comes, so that a line of 1 GiB without a newline is not held in memory per reader.
LONG_LINE = 1 << 20


async def chunk_page(
    conn: asyncpg.Connection,
    attempts: list[int],
    cursor: int,
    limit: int = 256,
    budget: int = PAGE_BYTES,
) -> tuple[list[asyncpg.Record], bool]:
    """The next chunks of ``attempts`` after chunk ``cursor``, in arrival order: at most
    ``limit`` of them and about ``budget`` bytes (always at least one); and whether more
    follow. A chunk may hold 256 KiB, so 256 of them made pages of 64 MiB."""
    rows = await conn.fetch(
        """
        WITH next AS (
            SELECT id, octet_length(data) AS n FROM log_chunk
            WHERE task = ANY($1::bigint[]) AND id > $2 ORDER BY id LIMIT $3
        ), kept AS (
            SELECT id FROM (SELECT id, sum(n) OVER (ORDER BY id) - n AS before FROM next) w
            WHERE before < $4
        )
        SELECT c.id, c.task, c.stream, c.start, c.data,
               coalesce(c.printed_at, c.received_at) AS at,
               (SELECT count(*) FROM next) AS seen
        FROM log_chunk c JOIN kept ON kept.id = c.id ORDER BY c.id
        """,
        attempts,
        cursor,
        limit,
        budget,
    )
    more = bool(rows) and (rows[0]["seen"] == limit or rows[0]["seen"] > len(rows))
    return list(rows), more


def _stamp(at: datetime) -> bytes:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ ").encode()


class TextLog:
    """Chunks (rows with ``stream``, ``data``, ``at`` and, for several tasks, ``task``) in,
    text out. ``names``: the task of each attempt id, to start each line with ``[task] `` (the
    merged view); None for one attempt. ``timestamps``: each line's time, after its prefix."""

    def __init__(self, timestamps: bool, names: dict[int, str] | None = None) -> None:
        self.timestamps = timestamps
        self.names = names
        self.partial: dict[Any, bytearray] = {}  # per (attempt, stream): its unfinished line
        self.began: dict[Any, datetime] = {}  # when each unfinished line's first byte came
        self.open: set[Any] = set()  # streams whose long unfinished line is partly written

    def _head(self, key: Any, at: datetime) -> bytes:
        prefix = b"" if self.names is None else f"[{self.names.get(key[0], '?')}] ".encode()
        return prefix + (_stamp(at) if self.timestamps else b"")

    def feed(self, rows: Sequence[Any]) -> bytes:
        out = bytearray()
        for r in rows:
            key = (r["task"] if self.names is not None else None, r["stream"])
            data = bytes(r["data"])
            if not data:
                continue
            if key not in self.partial:
                self.began[key] = r["at"]
            last = data.rfind(b"\n")
            if last < 0:
                if key in self.open:
                    out += data
                    continue
                held = self.partial.setdefault(key, bytearray())
                held.extend(data)
                if len(held) > LONG_LINE:
                    out += self._head(key, self.began.pop(key)) + self.partial.pop(key)
                    self.open.add(key)
                continue
            first = data.find(b"\n")
            if key in self.open:  # the rest of a long line already partly written
                self.open.discard(key)
            else:
                # The line the chunk ends: it began with the unfinished one, at its time.
                out += self._head(key, self.began[key])
                out += self.partial.pop(key, b"")
            out += data[: first + 1]
            middle = data[first + 1 : last + 1]
            if middle:  # the chunk's own whole lines, all at the chunk's time
                head = self._head(key, r["at"])
                out += head + middle[:-1].replace(b"\n", b"\n" + head) + b"\n"
            if last + 1 < len(data):
                self.partial[key] = bytearray(data[last + 1 :])
                self.began[key] = r["at"]
        return bytes(out)

    def flush(self, newline: bool = False) -> bytes:
        """The unfinished lines, oldest first; with ``newline`` each ends one (the merged
        view, where lines of several tasks follow), else they are as they are."""
        keys = sorted(self.partial, key=lambda k: self.began[k])
        parts = [self._head(k, self.began[k]) + self.partial.pop(k) for k in keys]
        ends = b"\n" * len(self.open) if newline else b""  # long lines already written
        self.open.clear()
        return ends + (b"".join(p + b"\n" for p in parts) if newline else b"\n".join(parts))


async def once(body: bytes) -> AsyncIterator[bytes]:
    """A text answer of one piece (a notice in place of a log)."""
    yield body


async def read_text(
    db: Database, attempts: list[int], log: TextLog, newline: bool
) -> AsyncIterator[bytes]:
    """The attempts' log as it is now, page after page, each cut in a thread; the
    unfinished lines last (``TextLog.flush``)."""
    cursor = 0
    while True:
        async with db.connection() as conn:
            page, more = await chunk_page(conn, attempts, cursor)
        if page:
            cursor = page[-1]["id"]
            yield await asyncio.to_thread(log.feed, page)
        if not more:
            break
    yield log.flush(newline)


async def follow_text(
    db: Database,
    hub: Hub,
    attempts: list[int],
    log: TextLog,
    is_complete: Callable[[], Awaitable[bool]],
    topics: list[str],
    newline: bool,
    coalesce: float = 0.0,
) -> AsyncIterator[bytes]:
    """The attempts' log from its start, then new lines as they come, until every attempt
    has ended and its log is complete. ``coalesce``: seconds to wait after a hint for more,
    so that a follower of many attempts reads in batches (2,000 tasks' hints woke each of 50
    followers every time, and multiplied the server's CPU fourfold: a hostile review)."""
    cursor = 0
    with hub.subscribe(*topics) as sub:
        while True:
            complete = await is_complete()  # before reading: nothing is missed after it
            async with db.connection() as conn:
                page, more = await chunk_page(conn, attempts, cursor)
            if page:
                cursor = page[-1]["id"]
                text = await asyncio.to_thread(log.feed, page)
                if text:
                    yield text
                if more:
                    continue
            if complete:
                yield log.flush(newline)
                return
            await sub.get(timeout=5)
            if coalesce:
                await asyncio.sleep(coalesce)
            sub.drain()
