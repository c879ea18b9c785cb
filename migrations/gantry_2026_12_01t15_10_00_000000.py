"""Web sessions kept on the server, and failed sign-ins for throttling (issue 7, web).

Written by hand, like the index migration: two small tables and their indexes.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-01T15:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "web sessions and sign-in throttling"

_CREATE_SQL = [
    """
    CREATE TABLE web_session (
        id VARCHAR(64) PRIMARY KEY,
        "user" VARCHAR(64) NULL REFERENCES gantry_user (name) ON DELETE CASCADE,
        data BYTEA NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    'CREATE INDEX web_session_user ON web_session ("user")',
    "CREATE INDEX web_session_expires ON web_session (expires_at)",
    """
    CREATE TABLE sign_in_attempt (
        id BIGSERIAL PRIMARY KEY,
        account VARCHAR(200) NULL,
        address VARCHAR(64) NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX sign_in_attempt_account ON sign_in_attempt (account, at)",
    "CREATE INDEX sign_in_attempt_address ON sign_in_attempt (address, at)",
    "CREATE INDEX sign_in_attempt_at ON sign_in_attempt (at)",
]

_DROP_SQL = ["DROP TABLE IF EXISTS sign_in_attempt", "DROP TABLE IF EXISTS web_session"]


class _Any(Table, tablename="migration"):
    """Only a handle for running raw SQL on the migration engine."""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="gantry", description=DESCRIPTION)

    async def create() -> None:
        for sql in _CREATE_SQL:
            await _Any.raw(sql)

    async def drop() -> None:
        for sql in _DROP_SQL:
            await _Any.raw(sql)

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
