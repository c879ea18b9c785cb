"""A log chunk keeps when its task wrote it, as the runner saw (protocol v1's optional
``LogChunk.at``): lines can show their time, and stdout and stderr keep their order.

Written by hand, in the style of gantry_2026_12_01t18_00_00_000000.py.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-01T22:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "log chunks keep when they were printed"

_FORWARDS = ["ALTER TABLE log_chunk ADD COLUMN printed_at TIMESTAMPTZ NULL DEFAULT NULL"]

_BACKWARDS = ["ALTER TABLE log_chunk DROP COLUMN IF EXISTS printed_at"]


class _Any(Table, tablename="migration"):
    """Only a handle for running raw SQL on the migration engine."""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="gantry", description=DESCRIPTION)

    async def create() -> None:
        for sql in _FORWARDS:
            await _Any.raw(sql)

    async def drop() -> None:
        for sql in _BACKWARDS:
            await _Any.raw(sql)

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
