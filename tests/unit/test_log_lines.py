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

    from app.logs.service import _TextLines

    t = [datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(4)]
    rows = [
        {"stream": 1, "data": b"out 1\nno newline", "at": t[0]},
        {"stream": 2, "data": b"err 1\n", "at": t[1]},
        {"stream": 1, "data": b" yet\nout 2\npartial", "at": t[2]},
        {"stream": 2, "data": b"err 2 unfinished", "at": t[3]},
    ]
    plain = _TextLines(False)
    assert plain.feed(rows) + plain.flush() == (
        b"out 1\nerr 1\nno newline yet\nout 2\npartial\nerr 2 unfinished"
    )
    stamped = _TextLines(True)
    lines = (stamped.feed(rows) + stamped.flush()).decode().split("\n")
    assert lines[2] == "2026-01-01T00:00:00.000000Z no newline yet"  # when it began
    assert lines[3] == "2026-01-01T00:00:02.000000Z out 2"
