"""Web sessions kept on the server, and failed sign-ins for throttling (issue 7, web).

Written by hand, like the index migration: two small tables and their indexes.
"""

from app.migrating import raw_sql

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


forwards = raw_sql(ID, DESCRIPTION, _CREATE_SQL, _DROP_SQL)
