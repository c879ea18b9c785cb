"""stdout and stderr keep the order a task printed them in (issue 9, "the first hour" 1).

A task doing `echo out $i; echo err $i >&2` used to log `err 1, out 1, err 2, …`: the runner
read the two streams one after the other and the control plane sorted chunks by stream. Now
the supervisor records each read in a timeline and the runner ships both streams in that
order, each chunk with the time it was written."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from tests.support import Stack, submit, task_of, wait_for

ALTERNATING = """\
workflow:
  name: order
  tasks:
  - name: talk
    image: ubuntu
    command: [sh, -c, "for i in $(seq 1 {n}); do echo out $i; sleep {gap}; echo err $i >&2; sleep {gap}; done"]
"""


def _expected(n: int) -> str:
    return "".join(f"out {i}\nerr {i}\n" for i in range(1, n + 1))


async def test_lines_a_few_milliseconds_apart_keep_their_order(stack: Stack) -> None:
    async with stack.client() as client:
        started = time.time()
        wid = await submit(client, ALTERNATING.format(n=30, gap=0.005))
        wf = await wait_for(client, wid)
        assert wf["status"] == "COMPLETED", wf
        log = (await client.get(f"/api/v1/workflows/{wid}/tasks/talk/logs")).text
        assert log == _expected(30)
        stamped = (
            await client.get(f"/api/v1/workflows/{wid}/tasks/talk/logs?timestamps=true")
        ).text.splitlines()
        assert [line.split(" ", 1)[1] for line in stamped] == _expected(30).splitlines()
        written = [line.split(" ", 1)[0] for line in stamped]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", w) for w in written)
        assert written == sorted(written) and written[0] < written[-1]
        # The page's merged view numbers lines in the same order.
        page = (await client.get(f"/workflows/{wid}/logs")).text
        positions = [page.index(f">{kind} {i}<") for i in range(1, 31) for kind in ("out", "err")]
        assert positions == sorted(positions)
        attempt = task_of(wf, "talk")["id"]
    conn = await asyncpg.connect(stack.database_url)
    try:
        times = await conn.fetch(
            "SELECT extract(epoch FROM printed_at) AS at FROM log_chunk WHERE task = $1 ORDER BY id",
            attempt,
        )
    finally:
        await conn.close()
    # Every chunk says when it was written, in order, within the run.
    at = [float(r["at"]) for r in times]
    assert at == sorted(at) and started - 1 < at[0] <= at[-1] < time.time() + 1


async def test_a_restarted_runner_ships_the_rest_in_order_once(stack: Stack) -> None:
    async with stack.client() as client:
        wid = await submit(client, ALTERNATING.format(n=40, gap=0.02))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            log = (await client.get(f"/api/v1/workflows/{wid}/tasks/talk/logs")).text
            if "err 5\n" in log:
                break
            await asyncio.sleep(0.1)
        stack.kill_runner(signal.SIGKILL)
        await stack.start_runner()
        wf = await wait_for(client, wid, timeout=60)
        assert wf["status"] == "COMPLETED", wf
        log = (await client.get(f"/api/v1/workflows/{wid}/tasks/talk/logs")).text
        assert log == _expected(40)  # nothing doubled, nothing lost, in order


async def test_pieces_follow_the_timeline_and_stop_where_a_stream_is_full(tmp_path: Path) -> None:
    from runner.executors.local import LocalExecutor

    executor = LocalExecutor(tmp_path, sandbox="none")
    d = executor._dir(7)
    d.mkdir(parents=True)
    (d / "stdout").write_bytes(b"o" * 300 + b"O" * 10)
    (d / "stderr").write_bytes(b"e" * 5)
    ms = 1_000_000
    # stdout 0..100, stderr 0..5, stdout 100..300 (a read 20 ms later), stdout 300..310
    (d / "timeline").write_bytes(
        b"o 100 %d\ne 5 %d\no 300 %d\no 310 %d\no 999" % (0, ms, 21 * ms, 22 * ms)
    )  # the last record is half written: not read yet
    pieces = await executor.read_logs(7, {"stdout": 0, "stderr": 0}, 150, 512)
    assert [(p.stream, p.offset, len(p.data)) for p in pieces] == [
        ("stdout", 0, 100), ("stderr", 0, 5), ("stdout", 100, 50),
    ]  # fmt: skip  # stdout is full at 150 bytes: nothing after it goes ahead
    assert pieces[1].at == 0.001
    # Once acknowledged, the rest, joined where reads were close together (300 and 310).
    pieces = await executor.read_logs(7, {"stdout": 150, "stderr": 5}, 1000, 512)
    assert [(p.stream, p.offset, len(p.data)) for p in pieces] == [("stdout", 150, 160)]
    assert pieces[0].data == b"o" * 150 + b"O" * 10
    assert await executor.read_logs(7, {"stdout": 310, "stderr": 5}, 1000, 512) == []
    # At most max_pieces pieces, and nothing after the cut goes ahead of it.
    fresh = LocalExecutor(tmp_path, sandbox="none")  # its own place in the timeline
    capped = await fresh.read_logs(7, {"stdout": 0, "stderr": 0}, 1000, 1)
    assert [(p.stream, p.offset, len(p.data)) for p in capped] == [("stdout", 0, 100)]


async def test_a_window_of_shipped_records_is_not_read_as_caught_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by attacking it: after a full window, the next read saw only acknowledged
    records, answered nothing, and the runner reported the attempt's end without the rest."""
    import runner.executors.local as local
    import runner.executors.timeline as timeline

    monkeypatch.setattr(timeline, "_READ_WINDOW", 40)  # a window holds about two records
    executor = local.LocalExecutor(tmp_path, sandbox="none")
    d = executor._dir(3)
    d.mkdir(parents=True)
    (d / "stdout").write_bytes(b"abcdef")
    (d / "stderr").write_bytes(b"")
    ms = 1_000_000
    (d / "timeline").write_bytes(b"".join(b"o %d %d\n" % (i, i * 20 * ms) for i in range(1, 7)))
    got = b""
    offsets = {"stdout": 0, "stderr": 0}
    for _ in range(10):
        pieces = await executor.read_logs(3, offsets, 1000, 512)
        if not pieces:
            break
        for piece in pieces:
            got += piece.data
            offsets[piece.stream] = piece.offset + len(piece.data)
    assert got == b"abcdef"


async def test_a_supervisor_killed_before_recording_still_ships_every_byte(tmp_path: Path) -> None:
    from runner.executors.local import LocalExecutor

    executor = LocalExecutor(tmp_path, sandbox="none")
    d = executor._dir(4)
    d.mkdir(parents=True)
    (d / "stdout").write_bytes(b"recorded unrecorded")
    (d / "stderr").write_bytes(b"")
    (d / "timeline").write_bytes(b"o 9 1\n")
    first = await executor.read_logs(4, {"stdout": 0, "stderr": 0}, 1000, 512)
    assert [p.data for p in first] == [b"recorded "]
    assert await executor.read_logs(4, {"stdout": 9, "stderr": 0}, 1000, 512) == []  # still running
    (d / "exit_code").write_text("0")
    rest = await executor.read_logs(4, {"stdout": 9, "stderr": 0}, 1000, 512)
    assert [p.data for p in rest] == [b"unrecorded"]


TINY = """\
workflow:
  name: tiny
  tasks:
  - name: tiny
    image: ubuntu
    command: [sh, -c, "i=0; while [ $i -lt 3000 ]; do printf o; printf e >&2; i=$((i+1)); done"]
"""


async def test_alternating_one_byte_writes_stay_a_bounded_number_of_chunks(stack: Stack) -> None:
    """Found by attacking it: a record, and a chunk, per byte wedged a shared runner (413 on
    every batch) and stored 220 bytes of rows per byte of log."""
    async with stack.client() as client:
        wid = await submit(client, TINY)
        wf = await wait_for(client, wid)
        assert wf["status"] == "COMPLETED", wf
        log = (await client.get(f"/api/v1/workflows/{wid}/tasks/tiny/logs")).text
        # two unfinished lines, each whole
        assert sorted(log.split("\n")) == ["e" * 3000, "o" * 3000], log[:200]
        attempt = task_of(wf, "tiny")["id"]
    conn = await asyncpg.connect(stack.database_url)
    try:
        chunks = await conn.fetchval("SELECT count(*) FROM log_chunk WHERE task = $1", attempt)
    finally:
        await conn.close()
    assert chunks < 1000, chunks  # at most two per 2 ms window, not one per byte
