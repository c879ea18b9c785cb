"""Hand-written migrations (``migrations/``) as lists of SQL: the Piccolo machinery for them,
written once instead of in every migration file.

Piccolo's raw queries read ``{}`` as a parameter: SQL here has no literal braces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

__all__ = ("raw_sql",)


class _Any(Table, tablename="migration"):
    """Only a handle for running raw SQL on the migration engine."""


def raw_sql(
    migration_id: str,
    description: str,
    forwards: Sequence[str],
    backwards: Sequence[str],
    arguments: Mapping[int, Sequence[object]] | None = None,
) -> Callable[[], Awaitable[MigrationManager]]:
    """A migration's ``forwards``: run ``forwards`` in order (statement ``i`` with
    ``arguments[i]``, if any), and ``backwards`` to undo it."""

    async def run_forwards() -> None:
        for i, sql in enumerate(forwards):
            await _Any.raw(sql, *(arguments or {}).get(i, ()))

    async def run_backwards() -> None:
        for sql in backwards:
            await _Any.raw(sql)

    async def manager() -> MigrationManager:
        m = MigrationManager(migration_id=migration_id, app_name="gantry", description=description)
        m.add_raw(run_forwards)
        m.add_raw_backwards(run_backwards)
        return m

    return manager
