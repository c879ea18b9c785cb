"""Log lines: assembly per stream, numbering by arrival of line ends, ANSI colours, escaping."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.logs.ansi import AnsiState, to_html
from app.logs.lines import Line, LineAssembler, render_lines
from app.logs.windows import LineFilter


def test_lines_are_assembled_per_stream_and_numbered_by_arrival() -> None:
    a = LineAssembler()
    lines = a.feed((1, 1), 0, b"out one\nout tw")
    lines += a.feed((1, 2), 0, b"err one\n")
    lines += a.feed((1, 1), 14, b"o\n")
    assert [(x.number, x.key[1], x.text) for x in lines] == [
        (1, 1, "out one"),
        (2, 2, "err one"),
        (3, 1, "out two"),
    ]
    assert a.consumed == {(1, 1): 16, (1, 2): 8}
    assert a.feed((1, 1), 16, b"tail") == []
    assert [(x.number, x.text) for x in a.flush()] == [(4, "tail")]


def test_a_window_that_starts_mid_line_skips_its_tail() -> None:
    a = LineAssembler(number=10, skip={(1, 1)})
    lines = a.feed((1, 1), 100, b"rest of an old line\nnew line\n")
    assert [(x.number, x.text) for x in lines] == [(12, "new line")]


def test_ansi_colours_become_classes_and_everything_else_is_escaped() -> None:
    state = AnsiState()
    html = to_html("\x1b[1;31mred <b>bold</b>\x1b[0m plain \x1b]0;title\x07\x1b[2K", state)
    assert html == '<span class="b fc1">red &lt;b&gt;bold&lt;/b&gt;</span> plain '
    assert to_html("\x1b[38;5;196mx", state) == '<span style="color:#ff0000">x</span>'
    assert (
        to_html("still red", state) == '<span style="color:#ff0000">still red</span>'
    )  # state carries on
    assert (
        to_html("\x1b[38;2;1;2;3m\x1b[48;5;4my", AnsiState())
        == '<span class="bc4" style="color:#010203">y</span>'
    )


def test_rendered_lines_link_their_numbers_and_escape_task_names() -> None:
    a = LineAssembler()
    html = render_lines(a.feed((7, 2), 0, b"<script>alert(1)</script>\n"), {7: "<i>t</i>"})
    assert 'id="L1"' in html and 'href="#L1"' in html and 'class="ln err"' in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;i&gt;t&lt;/i&gt;" in html


def _search(chunks: list[tuple[tuple[int, int], bytes]], keep: LineFilter) -> list[Line]:
    a, offsets, out = LineAssembler(), dict[tuple[int, int], int](), []
    for key, data in chunks:
        out += a.feed(key, offsets.get(key, 0), data, keep=keep)
        offsets[key] = offsets.get(key, 0) + len(data)
    return out + a.flush(keep)


def _every_line_then_filter(
    chunks: list[tuple[tuple[int, int], bytes]], keep: LineFilter
) -> list[Line]:
    a, offsets, out = LineAssembler(), dict[tuple[int, int], int](), []
    for key, data in chunks:
        out += a.feed(key, offsets.get(key, 0), data)
        offsets[key] = offsets.get(key, 0) + len(data)
    return [line for line in out + a.flush() if keep(line.text)]


_PIECES = [b"Strasse", b"STRA\xc3\x9fE", b"\n", b"\r\n", b"x", b"\x1b[31m", b"\x1b[0m", b"\xff"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([(1, 1), (1, 2), (2, 1)]),
            st.lists(st.sampled_from(_PIECES), max_size=12).map(b"".join),
        ),
        max_size=12,
    ),
    st.sampled_from([("strasse", False), ("x\x1b", False), ("STRASSE", False), ("^x+$", True)]),
)
def test_a_search_builds_only_matching_lines_and_finds_what_filtering_every_line_finds(
    chunks: list[tuple[tuple[int, int], bytes]], query: tuple[str, bool]
) -> None:
    keep = LineFilter(*query, seconds=60)
    assert _search(chunks, keep) == _every_line_then_filter(chunks, keep)


def test_a_chunk_where_the_filter_cannot_match_is_counted_without_its_lines() -> None:
    a = LineAssembler()
    keep = LineFilter("needle", False)
    assert a.feed((1, 1), 0, b"hay\n" * 1000 + b"part", keep=keep) == []
    assert a.number == 1000 and a.consumed == {(1, 1): 4000}
    found = a.feed((1, 1), 4004, b" of a NEEDLE line\nhay\n", keep=keep)
    assert [(x.number, x.text) for x in found] == [(1001, "part of a NEEDLE line")]


def test_the_text_log_keeps_each_stream_s_lines_whole() -> None:
    """An unfinished line of one stream is not glued to the other stream's next line, and
    comes last; with timestamps each line starts with the time its first byte was written."""
    from datetime import UTC, datetime

    from app.logs.text import TextLog

    t = [datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(4)]
    rows = [
        {"stream": 1, "data": b"out 1\nno newline", "at": t[0]},
        {"stream": 2, "data": b"err 1\n", "at": t[1]},
        {"stream": 1, "data": b" yet\nout 2\npartial", "at": t[2]},
        {"stream": 2, "data": b"err 2 unfinished", "at": t[3]},
    ]
    plain = TextLog(False)
    assert plain.feed(rows) + plain.flush() == (
        b"out 1\nerr 1\nno newline yet\nout 2\npartial\nerr 2 unfinished"
    )
    stamped = TextLog(True)
    lines = (stamped.feed(rows) + stamped.flush()).decode().split("\n")
    assert lines[2] == "2026-01-01T00:00:00.000000Z no newline yet"  # when it began
    assert lines[3] == "2026-01-01T00:00:02.000000Z out 2"
    merged = TextLog(True, {7: "a", 8: "b"})
    two = [{**r, "task": 7 if i % 2 == 0 else 8} for i, r in enumerate(rows)]
    text = (merged.feed(two) + merged.flush(newline=True)).decode().splitlines()
    stamp = [f"2026-01-01T00:00:0{s}.000000Z" for s in range(4)]
    assert text == [
        f"[a] {stamp[0]} out 1",
        f"[b] {stamp[1]} err 1",
        f"[a] {stamp[0]} no newline yet",
        f"[a] {stamp[2]} out 2",
        f"[a] {stamp[2]} partial",
        f"[b] {stamp[3]} err 2 unfinished",
    ], text


@given(
    st.lists(
        st.tuples(
            st.sampled_from([(1, 1), (1, 2), (2, 1)]),
            st.binary(max_size=40).map(lambda b: b.replace(b"x", b"\n")),
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_the_text_log_is_what_cutting_every_line_by_hand_gives(
    pieces: list[tuple[tuple[int, int], bytes]], timestamps: bool
) -> None:
    """The bytes-at-once TextLog (app/logs/text.py) against a line-at-a-time model."""
    from datetime import UTC, datetime, timedelta

    from app.logs.text import TextLog

    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"task": task, "stream": stream, "data": data, "at": start + timedelta(seconds=i)}
        for i, ((task, stream), data) in enumerate(pieces)
    ]
    names = {1: "one", 2: "two"}
    log = TextLog(timestamps, names)
    got = b"".join(log.feed(rows[i : i + 3]) for i in range(0, len(rows), 3))
    got += log.flush(newline=True)

    want, partial, began = b"", {}, {}
    for r in rows:
        key = (r["task"], r["stream"])
        if not r["data"]:
            continue  # an empty chunk says nothing
        for j, piece in enumerate(r["data"].split(b"\n")):
            if j > 0:  # a line ended; one with no byte before its end began now
                when = began[key] if key in partial else r["at"]
                stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ ").encode() if timestamps else b""
                want += f"[{names[key[0]]}] ".encode() + stamp + partial.pop(key, b"") + b"\n"
            if key not in partial:  # a line begins when its first byte comes
                partial[key], began[key] = b"", r["at"]
            partial[key] += piece
            if not partial[key]:
                del partial[key]  # nothing of the next line yet
    for key in sorted((k for k in partial if partial[k]), key=lambda k: began[k]):
        stamp = began[key].strftime("%Y-%m-%dT%H:%M:%S.%fZ ").encode() if timestamps else b""
        want += f"[{names[key[0]]}] ".encode() + stamp + partial[key] + b"\n"
    assert got == want


def test_a_very_long_line_is_written_as_it_comes_not_held() -> None:
    """A line of 1 GiB without a newline was held whole per reader (a hostile review): past
    LONG_LINE it is written as it comes, and its end still ends it."""
    from datetime import UTC, datetime

    from app.logs.text import LONG_LINE, TextLog

    now = datetime(2026, 1, 1, tzinfo=UTC)
    log = TextLog(False, {1: "t"})
    out = b""
    for _ in range(12):  # 3 MiB
        out += log.feed([{"task": 1, "stream": 1, "data": b"x" * (256 * 1024), "at": now}])
        assert all(len(held) <= LONG_LINE for held in log.partial.values())
    out += log.feed([{"task": 1, "stream": 1, "data": b"y\nnext\n", "at": now}])
    out += log.flush(newline=True)
    assert out == b"[t] " + b"x" * (3 * 2**20) + b"y\n[t] next\n"
