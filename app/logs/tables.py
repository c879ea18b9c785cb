"""Task log chunks, stored by byte offset per stream."""

from __future__ import annotations

from piccolo.columns import (
    BigInt,
    BigSerial,
    Bytea,
    ForeignKey,
    Integer,
    OnDelete,
    SmallInt,
    Timestamptz,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from app.workflows.tables import Task

__all__ = ("LogChunk",)


class LogChunk(Table, tablename="log_chunk"):
    """A piece of one attempt's stdout (stream 1) or stderr (stream 2) starting at ``start``.

    ``id`` orders chunks by arrival, which is how stdout and stderr are interleaved;
    ``newlines`` counts the line ends in ``data``, so line numbers are prefix sums.
    """

    id = BigSerial(primary_key=True)
    task = ForeignKey(references=Task, on_delete=OnDelete.cascade, null=False)
    stream = SmallInt()
    start = BigInt()
    data = Bytea()
    newlines = Integer(default=0)
    received_at = Timestamptz(default=TimestamptzNow())
    # When the task wrote it, as its runner saw (None from runners that do not say).
    printed_at = Timestamptz(null=True, default=None)
