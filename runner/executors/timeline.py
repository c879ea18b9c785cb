"""An attempt's log timeline: which stream reached which byte when, so both streams ship in
the order the task wrote them, each piece with its time.

A timeline is a file of records ``o|e END TIME_NS``: the task's stdout (o) or stderr (e)
reached byte END in a window that began at TIME_NS. The local executor's supervisor writes it
from the task's pipes (runner/supervise.py); the Kubernetes executor writes it from the
kubelet's timestamped log (runner/executors/kubernetes/executor.py). ``read`` turns it into
the pieces ``Executor.read_logs`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.executors.base import LogPiece
from runner.protocol import Stream

__all__ = ("WINDOW_NS", "read", "record")

# Records read per call (about 30,000), and how far apart in time reads of one stream may be
# and still be shipped as one piece (each piece has one time).
_READ_WINDOW = 1 << 20
_JOIN_NS = 10_000_000
# A writer keeps at most one record per stream per window of this many ns (runner/supervise.py,
# which imports nothing of the runner, keeps its own copy; a task alternating
# one-byte writes made a record per byte: a hostile test, the timeline 28 times its log).
WINDOW_NS = 2_000_000


def record(stream: Stream, end: int, ns: int) -> bytes:
    """One timeline record."""
    return b"%s %d %d\n" % (b"o" if stream == "stdout" else b"e", end, ns)


@dataclass(slots=True)
class _Span:
    """Bytes ``begin``..``end`` of one stream, first written at ``ns``."""

    stream: Stream
    begin: int
    end: int
    ns: int
    data: bytes = b""


def read(
    timeline: Path,
    files: dict[Stream, Path],
    offsets: dict[Stream, int],
    limit: int,
    max_pieces: int,
    cursor: int,
) -> tuple[list[LogPiece], int]:
    """The bytes after ``offsets`` in timeline order: at most ``limit`` bytes of each stream
    and ``max_pieces`` pieces; ``cursor`` is where in the timeline the records not yet
    shipped begin (the second value is its new place). A stream without a file is empty."""
    spans: list[_Span] = []
    begin = dict(offsets)
    shipped = dict.fromkeys(offsets, 0)
    full = False
    # Window after window while every record read was shipped already: an empty answer
    # means caught up, and the runner then reports the attempt's end (a window of only
    # acknowledged records once read as "caught up" lost the rest of a log).
    while not spans and not full:
        start = cursor
        with open(timeline, "rb") as f:
            f.seek(start)
            raw = f.read(_READ_WINDOW)
        records = raw.split(b"\n")[:-1]  # the last one may be half written
        done = start  # timeline bytes of records already shipped
        leading = True
        for line in records:
            code, end_text, ns_text = line.split(b" ")
            stream: Stream = "stdout" if code == b"o" else "stderr"
            end = int(end_text)
            if end <= offsets[stream]:
                if leading:
                    done += len(line) + 1
                continue
            leading = False
            start_at = begin[stream]
            if end <= start_at:
                continue
            # At most `limit` bytes of each stream and `max_pieces` pieces per call; once
            # full the scan stops, so nothing later (of either stream) goes ahead.
            take = min(end, start_at + limit - shipped[stream])
            last = spans[-1] if spans else None
            ns = int(ns_text)
            if take <= start_at:
                full = True
            elif (
                last is not None
                and last.stream == stream
                and last.end == start_at
                and ns - last.ns <= _JOIN_NS
            ):
                last.end = take
            elif len(spans) >= max_pieces:
                full = True
            else:
                spans.append(_Span(stream, start_at, take, ns))
            if full:
                break
            begin[stream] = take
            shipped[stream] += take - start_at
            if take < end:
                full = True
                break
        cursor = done
        if done == start or not records:
            break  # nothing more in the timeline than what is shipped
    for stream, path in files.items():
        mine = [sp for sp in spans if sp.stream == stream]
        if mine:
            with open(path, "rb") as f:
                for sp in mine:
                    f.seek(sp.begin)
                    sp.data = f.read(sp.end - sp.begin)
    pieces = [LogPiece(sp.stream, sp.begin, sp.data, sp.ns / 1e9) for sp in spans if sp.data]
    return pieces, cursor
