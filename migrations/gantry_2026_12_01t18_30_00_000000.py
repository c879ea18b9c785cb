"""Backend token rotation: the previous token of a backend keeps working until a deadline.

Written by hand, in the style of gantry_2026_11_26t23_50_00_000000.py.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-01T18:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "backend token rotation"

_FORWARDS = [
    "ALTER TABLE backend ADD COLUMN previous_token_hash VARCHAR(64) NULL DEFAULT NULL",
    "ALTER TABLE backend ADD COLUMN previous_valid_until TIMESTAMPTZ NULL DEFAULT NULL",
    "CREATE UNIQUE INDEX backend_previous_token ON backend (previous_token_hash)"
    " WHERE previous_token_hash IS NOT NULL",
]

_BACKWARDS = [
    "DROP INDEX IF EXISTS backend_previous_token",
    "ALTER TABLE backend DROP COLUMN IF EXISTS previous_valid_until",
    "ALTER TABLE backend DROP COLUMN IF EXISTS previous_token_hash",
]


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
