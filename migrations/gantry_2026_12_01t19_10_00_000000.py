"""People who sign in through an OpenID Connect provider are known by the provider's issuer
and subject, never by their name alone (app/auth/oidc_users.py).

Both columns are empty for local accounts; together they are unique (PostgreSQL lets rows
with empty values repeat), so one provider account is one Gantry user.

Written by hand, in the style of gantry_2026_12_01t18_00_00_000000.py.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-01T19:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "users from an OpenID Connect provider"

_FORWARDS = [
    "ALTER TABLE gantry_user ADD COLUMN oidc_issuer VARCHAR(500) NULL DEFAULT NULL",
    "ALTER TABLE gantry_user ADD COLUMN oidc_subject VARCHAR(255) NULL DEFAULT NULL",
    "CREATE UNIQUE INDEX gantry_user_oidc ON gantry_user (oidc_issuer, oidc_subject)",
]

_BACKWARDS = [
    "DROP INDEX IF EXISTS gantry_user_oidc",
    "ALTER TABLE gantry_user DROP COLUMN IF EXISTS oidc_subject",
    "ALTER TABLE gantry_user DROP COLUMN IF EXISTS oidc_issuer",
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
