"""Windows onto task logs: the tail first, earlier parts on demand, around a line, search.

A window reads only the chunks it shows (by id, newest first, up to a byte budget), plus one
prefix sum of ``log_chunk.newlines`` for its line numbers, so a 200 MB log opens as fast as a
small one. A window records where a live follow resumes: the last chunk it read and, per
(attempt, stream), the byte offset after its last complete line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import regex

from app.db import Database, Hub
from app.logs.lines import Key, Line, LineAssembler
from app.logs.text import TextLog, chunk_page, follow_text, read_text

__all__ = ("BUDGET", "Resume", "Window", "Windows")

# A live view reads at most this much per step: each line of it becomes an object with its
# HTML (a page of 64 MiB of empty lines made millions of them).
_LIVE_BYTES = 256 * 1024
# Seconds a text follower waits after a hint for more to come, so that it reads in batches.
_COALESCE = 0.25

BUDGET = 512 * 1024  # bytes of log per window
MAX_MATCHES = 5000


@dataclass(slots=True)
class Resume:
    """Where a live follow picks up: after chunk ``after``, at these offsets, numbering on."""

    after: int
    number: int
    offsets: dict[Key, tuple[int, bool]] = field(default_factory=dict)  # key -> (offset, skip)

    def encode(self) -> str:
        parts = [f"{k[0]}.{k[1]}.{o}.{int(s)}" for k, (o, s) in sorted(self.offsets.items())]
        return f"{self.after}~{self.number}~{','.join(parts)}"

    @classmethod
    def decode(cls, text: str) -> Resume:
        try:
            after, number, keys = text.split("~")
            offsets: dict[Key, tuple[int, bool]] = {}
            for part in filter(None, keys.split(",")):
                task, stream, offset, skip = part.split(".")
                key = (_bigint(task), int(stream))
                if key[1] not in (1, 2):  # stdout, stderr (app/logs/service.py STREAM_NAMES)
                    raise ValueError(stream)
                offsets[key] = (_bigint(offset), skip == "1")
            return cls(_bigint(after), int(number), offsets)
        except ValueError:
            raise ValueError("the log position is not one this server gave out") from None


def _bigint(text: str) -> int:
    """A number that reaches a bigint column: 0 to 2**63 - 1, else ValueError."""
    value = int(text)
    if not 0 <= value <= 2**63 - 1:
        raise ValueError(text)
    return value


@dataclass(slots=True)
class Window:
    lines: list[Line]
    first_id: int | None = None  # the oldest chunk shown: "earlier" reads before it
    last_id: int | None = None
    has_earlier: bool = False
    has_later: bool = False
    resume: Resume | None = None  # set when the window reaches the end of the log


SEARCH_SECONDS = 2.0


class LineFilter:
    """Whether a line matches a filter, within a time budget for the whole search.

    Regular expressions use the ``regex`` package, which can stop a match after a timeout: a
    pathological pattern (catastrophic backtracking) ends the search with a clear error
    instead of holding a server thread forever. Matching runs off the event loop.
    """

    def __init__(self, query: str, is_regex: bool, seconds: float = SEARCH_SECONDS) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self._pattern: Any = None
        self._folded = query.casefold()
        if is_regex:
            try:
                self._pattern = regex.compile(query)
            except regex.error as exc:
                raise ValueError(f"the regular expression is invalid: {exc}") from None

    def check_time(self) -> None:
        """The budget covers the whole search, plain text too: over a log of several hundred
        megabytes even a substring search (and cutting the log into lines) takes minutes (a
        hostile test: 93 s for one request)."""
        if time.monotonic() > self.deadline:
            raise ValueError(
                f"searching this log took longer than {self.seconds:g} s; make the filter more "
                "specific, look at a task's own log, or download the log and search it there"
            )

    def none_in(self, text: str) -> bool:
        """Whether no line of ``text`` can contain the plain-text filter (lets a search count
        a chunk's lines without cutting them). Never for a regular expression, which may
        behave differently over several lines (anchors, lookarounds)."""
        return self._pattern is None and self._folded not in text.casefold()

    def __call__(self, text: str) -> bool:
        if self._pattern is None:
            return self._folded in text.casefold()
        try:
            return (
                self._pattern.search(text, timeout=max(0.001, self.deadline - time.monotonic()))
                is not None
            )
        except TimeoutError:
            raise ValueError(
                f"the regular expression took longer than {self.seconds:g} s over this log; "
                "make it simpler or more specific"
            ) from None


def compile_filter(query: str | None, is_regex: bool) -> LineFilter | None:
    """A line predicate, or None for no filter; raises ValueError for a bad pattern."""
    if not query:
        return None
    if len(query) > 200:
        raise ValueError("the filter is longer than 200 characters")
    return LineFilter(query, is_regex)


class Windows:
    def __init__(self, db: Database, hub: Hub) -> None:
        self.db = db
        self.hub = hub

    async def _rows_back(
        self, conn: asyncpg.Connection, attempts: list[int], before: int | None, budget: int
    ) -> list[asyncpg.Record]:
        """Chunks before ``before`` (or the newest), newest first, until ``budget`` bytes."""
        rows: list[asyncpg.Record] = []
        size = 0
        cursor = before
        while size < budget:
            page = await conn.fetch(
                """
                SELECT id, task, stream, start, data, coalesce(printed_at, received_at) AS at
                FROM log_chunk
                WHERE task = ANY($1::bigint[]) AND ($2::bigint IS NULL OR id < $2)
                ORDER BY id DESC LIMIT 64
                """,
                attempts,
                cursor,
            )
            if not page:
                break
            for r in page:
                rows.append(r)
                size += len(r["data"])
                if size >= budget:
                    break
            cursor = rows[-1]["id"]
        rows.reverse()
        return rows

    async def _start(
        self, conn: asyncpg.Connection, attempts: list[int], first_id: int
    ) -> tuple[LineAssembler, dict[Key, tuple[int, bool]], bool]:
        """An assembler for a window from chunk ``first_id``: its line numbers continue the
        line ends before it, and lines the window starts inside get their beginnings back.
        Also returns where each key ends before the window, and whether anything is before."""
        base = await conn.fetchval(
            "SELECT coalesce(sum(newlines), 0) FROM log_chunk "
            "WHERE task = ANY($1::bigint[]) AND id < $2",
            attempts,
            first_id,
        )
        tails = await conn.fetch(
            """
            SELECT DISTINCT ON (task, stream) task, stream, start + length(data) AS "end",
                   get_byte(data, length(data) - 1) = 10 AS ends_line
            FROM log_chunk WHERE task = ANY($1::bigint[]) AND id < $2
            ORDER BY task, stream, id DESC
            """,
            attempts,
            first_id,
        )
        assembler = LineAssembler(number=int(base))
        ends: dict[Key, tuple[int, bool]] = {}
        for r in tails:
            key = (r["task"], r["stream"])
            ends[key] = (r["end"], False)
            if not r["ends_line"]:
                begin, prefix, whole = await self._line_beginning(conn, key, first_id)
                if whole:
                    assembler.partial[key] = bytearray(prefix)
                    ends[key] = (begin, False)
                else:  # a line longer than the limit: show it from the window on
                    assembler.partial[key] = bytearray(b"[...] ")
                    ends[key] = (r["end"], True)
        return assembler, ends, bool(tails)

    async def _line_beginning(
        self, conn: asyncpg.Connection, key: Key, before: int, limit: int = 1024 * 1024
    ) -> tuple[int, bytes, bool]:
        """The bytes of ``key`` after its last line end before chunk ``before``: (offset,
        bytes, whether the line's whole beginning fits in ``limit``)."""
        parts: list[bytes] = []
        size = 0
        cursor = before
        while size < limit:
            row = await conn.fetchrow(
                """
                SELECT id, start, data FROM log_chunk
                WHERE task = $1 AND stream = $2 AND id < $3 ORDER BY id DESC LIMIT 1
                """,
                key[0],
                key[1],
                cursor,
            )
            if row is None:
                return 0, b"".join(reversed(parts)), True
            data = bytes(row["data"])
            cut = data.rfind(b"\n")
            if cut >= 0:
                parts.append(data[cut + 1 :])
                return row["start"] + cut + 1, b"".join(reversed(parts)), True
            parts.append(data)
            size += len(data)
            cursor = row["id"]
        return 0, b"", False

    async def tail(self, attempts: list[int], complete: bool, budget: int = BUDGET) -> Window:
        async with self.db.connection() as conn:
            rows = await self._rows_back(conn, attempts, None, budget)
            if not rows:
                return Window([], resume=Resume(0, 0))
            assembler, ends, has_earlier = await self._start(conn, attempts, rows[0]["id"])
        lines: list[Line] = []
        first_start: dict[Key, int] = {}
        for r in rows:
            key = (r["task"], r["stream"])
            first_start.setdefault(key, ends.get(key, (r["start"], False))[0])
            lines += assembler.feed(key, r["start"], bytes(r["data"]), at=r["at"])
        window = Window(lines, rows[0]["id"], rows[-1]["id"], has_earlier)
        if complete:
            window.lines += assembler.flush()
            return window
        offsets = dict(ends)  # keys with nothing in the window resume where they ended
        for key, start in first_start.items():
            if key in assembler.consumed:
                offsets[key] = (assembler.consumed[key], False)
            else:  # no line end yet in the window: resume where its open line begins
                offsets[key] = (start, ends.get(key, (0, False))[1])
        window.resume = Resume(rows[-1]["id"], assembler.number, offsets)
        return window

    async def earlier(self, attempts: list[int], before: int, budget: int = BUDGET) -> Window:
        """The lines whose ends arrived just before chunk ``before``."""
        async with self.db.connection() as conn:
            rows = await self._rows_back(conn, attempts, before, budget)
            if not rows:
                return Window([])
            assembler, _, has_earlier = await self._start(conn, attempts, rows[0]["id"])
        lines: list[Line] = []
        for r in rows:
            lines += assembler.feed(
                (r["task"], r["stream"]), r["start"], bytes(r["data"]), at=r["at"]
            )
        # Lines still open end in a later window, which fetches their beginnings itself.
        return Window(lines, rows[0]["id"], rows[-1]["id"], has_earlier, True)

    async def around(self, attempts: list[int], number: int, budget: int = BUDGET) -> Window | None:
        """A window that contains line ``number`` (for deep links), or None past the end."""
        async with self.db.connection() as conn:
            chunk = await conn.fetchval(
                """
                SELECT id FROM (
                    SELECT id, sum(newlines) OVER (ORDER BY id) AS ends
                    FROM log_chunk WHERE task = ANY($1::bigint[])) x
                WHERE ends >= $2 ORDER BY id LIMIT 1
                """,
                attempts,
                number,
            )
            if chunk is None:
                return None
            following = await conn.fetchval(
                """
                SELECT max(id) FROM (SELECT id FROM log_chunk WHERE task = ANY($1::bigint[])
                AND id > $2 ORDER BY id LIMIT 8) x
                """,
                attempts,
                chunk,
            )
            newest = await conn.fetchval(
                "SELECT max(id) FROM log_chunk WHERE task = ANY($1::bigint[])", attempts
            )
        window = await self.earlier(attempts, (following or chunk) + 1, budget)
        window.has_later = window.last_id is not None and window.last_id < (newest or 0)
        return window

    async def search(self, attempts: list[int], keep: LineFilter, complete: bool) -> Window:
        """Every matching line of the whole log (at most 5,000), within the filter's time
        budget; raises ValueError past it. Lines are cut and matched in a thread, a page of
        chunks at a time, never on the event loop; the connection is held only to read."""
        assembler = LineAssembler()
        matches: list[Line] = []
        cursor = 0
        while len(matches) < MAX_MATCHES:
            keep.check_time()
            async with self.db.connection() as conn:
                page, _ = await chunk_page(conn, attempts, cursor)
            if not page:
                break
            matches += await asyncio.to_thread(_match_page, assembler, page, keep)
            cursor = page[-1]["id"]
        if complete:
            matches += await asyncio.to_thread(assembler.flush, keep)
        return Window(matches[:MAX_MATCHES], last_id=cursor)

    def text(
        self, attempts: list[int], names: dict[int, str], timestamps: bool = False
    ) -> AsyncIterator[bytes]:
        """The whole log as text, every line prefixed with its task (the merged download and
        ``GET /api/v1/workflows/{id}/logs``)."""
        return read_text(self.db, attempts, TextLog(timestamps, names), newline=True)

    def follow_text(
        self,
        attempts: list[int],
        names: dict[int, str],
        is_complete: Callable[[], Awaitable[bool]],
        topics: list[str],
        timestamps: bool = False,
    ) -> AsyncIterator[bytes]:
        """The merged log as text from its start, then new lines as they come, until every
        attempt has ended (``GET /api/v1/workflows/{id}/logs?follow=true``)."""
        log = TextLog(timestamps, names)
        return follow_text(
            self.db, self.hub, attempts, log, is_complete, topics, newline=True, coalesce=_COALESCE
        )

    async def follow(
        self,
        attempts: list[int],
        resume: Resume,
        is_complete: Callable[[], object],
        topics: list[str],
    ) -> AsyncIterator[list[Line]]:
        """New lines after ``resume`` until the log is complete (then the last partial lines)."""
        assembler = LineAssembler(
            number=resume.number, skip={k for k, (_, s) in resume.offsets.items() if s}
        )
        offsets = {k: o for k, (o, _) in resume.offsets.items()}
        with self.hub.subscribe(*topics) as sub:
            async with self.db.connection() as conn:
                # Bytes of lines the page could not finish: re-read them first.
                reread = await conn.fetch(
                    """
                    SELECT c.id, c.task, c.stream, c.start, c.data,
                           coalesce(c.printed_at, c.received_at) AS at FROM log_chunk c
                    JOIN unnest($2::bigint[], $3::int[], $4::bigint[]) AS k(task, stream, off)
                      ON c.task = k.task AND c.stream = k.stream
                    WHERE c.task = ANY($1::bigint[]) AND c.id <= $5
                      AND c.start + length(c.data) > k.off
                    ORDER BY c.id
                    """,
                    attempts,
                    [k[0] for k in offsets],
                    [k[1] for k in offsets],
                    list(offsets.values()),
                    resume.after,
                )
            cursor = resume.after
            batch = await asyncio.to_thread(self._feed, assembler, offsets, reread)
            if batch:
                yield batch
            while True:
                complete = await is_complete()  # type: ignore[misc]
                async with self.db.connection() as conn:
                    rows, more = await chunk_page(conn, attempts, cursor, budget=_LIVE_BYTES)
                if rows:
                    cursor = rows[-1]["id"]
                    batch = await asyncio.to_thread(self._feed, assembler, offsets, rows)
                    if batch:
                        yield batch
                    if more:
                        continue
                if complete:
                    last = assembler.flush()
                    if last:
                        yield last
                    return
                if await sub.get(timeout=15) is None:
                    yield []  # nothing new: lets the caller ping
                sub.drain()

    @staticmethod
    def _feed(
        assembler: LineAssembler, offsets: dict[Key, int], rows: list[asyncpg.Record]
    ) -> list[Line]:
        lines: list[Line] = []
        for r in rows:
            key = (r["task"], r["stream"])
            data = bytes(r["data"])
            start, end = r["start"], r["start"] + len(data)
            done = offsets.get(key, 0)
            if end <= done:
                continue
            if start < done:
                data, start = data[done - start :], done
            offsets[key] = end
            lines += assembler.feed(key, start, data, at=r["at"])
        return lines


def _match_page(
    assembler: LineAssembler, page: list[asyncpg.Record], keep: LineFilter
) -> list[Line]:
    out: list[Line] = []
    for r in page:
        keep.check_time()
        key = (r["task"], r["stream"])
        out += assembler.feed(key, r["start"], bytes(r["data"]), keep=keep, at=r["at"])
        if len(out) >= MAX_MATCHES:
            break
    return out
