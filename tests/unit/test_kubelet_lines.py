"""The kubelet's timestamped log read as the task's bytes and their times (no I/O)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from runner.executors import timeline
from runner.executors.kubernetes.executor import KubeletLines, _records

LOG = (
    b"2026-12-01T10:00:00.000000001Z first line\n"
    b"2026-12-01T10:00:01.5Z second\n"
    b"2026-12-01T10:00:02+00:00 \n"
    b"2026-12-01T11:00:03.123456789+01:00 last, no newline"
)
T0 = int(datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()) * 10**9  # in ns


def _joined(parts: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """Consecutive parts of one time joined: how they are cut is the chunks' business."""
    out: list[tuple[bytes, int]] = []
    for text, ns in parts:
        if out and out[-1][1] == ns and not out[-1][0].endswith(b"\n"):
            out[-1] = (out[-1][0] + text, ns)
        else:
            out.append((text, ns))
    return out


def test_each_line_loses_its_time_prefix_and_keeps_its_time() -> None:
    parts = _joined(KubeletLines().feed(LOG))
    assert parts == [
        (b"first line\n", T0 + 1),
        (b"second\n", T0 + 1_500_000_000),
        (b"\n", T0 + 2_000_000_000),
        (b"last, no newline", T0 + 3_123_456_789),
    ]


@given(st.lists(st.integers(min_value=1, max_value=len(LOG) - 1), max_size=8, unique=True))
def test_chunks_cut_anywhere_give_the_same_bytes_and_times(cuts: list[int]) -> None:
    lines = KubeletLines()
    bounds = [0, *sorted(cuts), len(LOG)]
    parts = [p for a, b in itertools.pairwise(bounds) for p in lines.feed(LOG[a:b])]
    assert _joined(parts) == _joined(KubeletLines().feed(LOG))


def test_a_log_without_times_is_kept_whole() -> None:
    parts = KubeletLines().feed(b"plain text\nno-space-here\n" + b"x" * 100 + b"\n")
    assert (
        b"".join(text for text, _ in parts) == b"plain text\nno-space-here\n" + b"x" * 100 + b"\n"
    )


def test_lines_close_in_time_make_one_timeline_record() -> None:
    ends = [(10, T0), (20, T0 + 1_000_000), (30, T0 + timeline.WINDOW_NS + 5), (40, T0 + 10**9)]
    assert _records(ends) == (
        timeline.record("stdout", 20, T0)
        + timeline.record("stdout", 30, T0 + timeline.WINDOW_NS + 5)
        + timeline.record("stdout", 40, T0 + 10**9)
    )
