"""Log chunks to numbered, escaped, coloured lines.

Chunks arrive by id (arrival order), each from one stream of one attempt (a *key*). Lines are
assembled per key, so stdout and stderr never mix inside a line, and numbered by the ordinal of
their line end in arrival order: line N is the one whose "\\n" was the N-th to arrive. That is
what ``log_chunk.newlines`` prefix sums give without reading the log, so a window anywhere in a
200 MB log knows its line numbers.

A window that starts inside a line (its key's bytes began earlier) skips that line's tail:
``skip`` names those keys. ``consumed`` says, per key, the byte offset after the last line end
assembled, which is where a live follow resumes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Protocol

from app.logs.ansi import AnsiState, to_html

__all__ = ("Key", "Line", "LineAssembler", "render_lines")

Key = tuple[int, int]  # (attempt id, stream: 1 stdout, 2 stderr)


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    key: Key
    html: str
    text: str  # plain text without escape sequences, for filtering
    at: datetime | None = None  # when its first byte was written (the chunk's time)


class Filter(Protocol):
    """A search: whether a line's plain text matches, and whether a run of lines can."""

    def __call__(self, text: str) -> bool: ...

    def none_in(self, text: str) -> bool:
        """True only if no line of ``text`` (lines joined by newlines) can match."""
        ...

    def check_time(self) -> None:
        """Raises once the search has used its time budget."""
        ...


_STRIP = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


@dataclass(slots=True)
class LineAssembler:
    number: int = 0  # line ends seen so far (the number of the last line end)
    skip: set[Key] = field(default_factory=set)
    partial: dict[Key, bytearray] = field(default_factory=dict)
    consumed: dict[Key, int] = field(default_factory=dict)
    colours: dict[Key, AnsiState] = field(default_factory=dict)
    began: dict[Key, datetime | None] = field(default_factory=dict)  # each open line's time

    def feed(
        self,
        key: Key,
        start: int,
        data: bytes,
        emit: bool = True,
        keep: Filter | None = None,
        at: datetime | None = None,
    ) -> list[Line]:
        """Add a chunk of ``key`` that begins at byte ``start``; returns completed lines.

        With ``keep`` only the lines it accepts are built: a search reads whole logs, and
        building every line's HTML to return a few cost most of its time (a hostile test: two
        searches of a 25 MB log held /healthz at 280 ms p99). A chunk in which the filter
        cannot match at all is only counted."""
        lines: list[Line] = []
        pos = 0
        if key in self.skip:
            cut = data.find(b"\n")
            if cut < 0:
                return lines
            self.skip.discard(key)
            self.number += 1
            pos = cut + 1
            self.consumed[key] = start + pos
        buf = self.partial.setdefault(key, bytearray())
        if not buf:
            self.began[key] = at  # the next line begins in this chunk
        if keep is not None and emit and self._skipped(key, start, data, pos, buf, keep):
            self.began[key] = at
            return lines
        while True:
            cut = data.find(b"\n", pos)
            if cut < 0:
                buf += data[pos:]
                break
            buf += data[pos:cut]
            self.number += 1
            if keep is not None and self.number % 4096 == 0:
                keep.check_time()  # one chunk may hold 500,000 short lines
            if emit:
                line = self._line(key, bytes(buf), keep, self.began.get(key, at))
                if line is not None:
                    lines.append(line)
            buf.clear()
            self.began[key] = at
            pos = cut + 1
            self.consumed[key] = start + pos
        return lines

    def _skipped(
        self, key: Key, start: int, data: bytes, pos: int, buf: bytearray, keep: Filter
    ) -> bool:
        """Counts the chunk's complete lines without building them if none can match.

        Only for text without escape sequences: their colours must be carried on line by
        line, and the filter sees text without them."""
        last = data.rfind(b"\n")
        if last < pos:
            return False
        region = bytes(buf) + data[pos:last]
        if b"\x1b" in region or not keep.none_in(region.decode("utf-8", errors="replace")):
            return False
        self.number += region.count(b"\n") + 1
        buf.clear()
        buf += data[last + 1 :]
        self.consumed[key] = start + last + 1
        return True

    def flush(self, keep: Filter | None = None) -> list[Line]:
        """The unterminated last line of each key (the log is complete)."""
        lines = []
        for key, buf in self.partial.items():
            if buf:
                self.number += 1
                line = self._line(key, bytes(buf), keep, self.began.get(key))
                if line is not None:
                    lines.append(line)
                buf.clear()
        return lines

    def open_keys(self) -> list[Key]:
        """Keys with an unterminated line."""
        return [k for k, buf in self.partial.items() if buf]

    def _line(
        self, key: Key, raw: bytes, keep: Filter | None = None, at: datetime | None = None
    ) -> Line | None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        state = self.colours.setdefault(key, AnsiState())
        coloured = "\x1b" in text
        plain = _STRIP.sub("", text) if coloured else text
        if keep is not None and not keep(plain):
            if coloured:
                to_html(text, state)  # carries the line's colours on to the next
            return None
        return Line(self.number, key, to_html(text, state), plain, at)


_STREAM_CLASS = {1: "out", 2: "err"}


def render_lines(lines: Iterable[Line], task_names: dict[int, str] | None = None) -> str:
    """Lines as HTML rows with anchored numbers; ``task_names`` adds a task column."""
    out = []
    for line in lines:
        task = ""
        if task_names is not None:
            name = escape(task_names.get(line.key[0], "?"))
            task = f'<span class="tk">{name}</span>'
        when = ""
        if line.at is not None:  # shown with "Show times" (app.js), hidden otherwise
            utc = line.at.astimezone(UTC)
            when = (
                f'<time class="lt" datetime="{utc.isoformat()}">'
                f"{utc:%H:%M:%S}.{utc.microsecond // 1000:03d}</time>"
            )
        out.append(
            f'<div class="ln {_STREAM_CLASS[line.key[1]]}" id="L{line.number}">'
            f'<a class="n" href="#L{line.number}">{line.number}</a>{when}{task}'
            f'<span class="tx">{line.html}</span></div>'
        )
    return "".join(out)
