"""Backfill log_chunk.newlines for chunks stored before the column existed.

PostgreSQL has no replace() for bytea; the 'escape' encoding keeps line feeds as they are, so
counting them in the encoded text counts them in the bytes.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-27T00:35:19:000000"
VERSION = "1.38.0"
DESCRIPTION = "backfill log_chunk.newlines"


class _Any(Table, tablename="migration"):
    """Only a handle for running raw SQL on the migration engine."""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="gantry", description=DESCRIPTION)

    async def backfill() -> None:
        await _Any.raw(
            "UPDATE log_chunk SET newlines = length(encode(data, 'escape')) "
            "- length(replace(encode(data, 'escape'), E'\\n', '')) WHERE newlines = 0"
        )

    async def nothing() -> None:
        """Dropping the column (the previous migration, backwards) drops the counts."""

    manager.add_raw(backfill)
    manager.add_raw_backwards(nothing)
    return manager
