"""Backend token rotation: the previous token of a backend keeps working until a deadline.

Written by hand, in the style of gantry_2026_11_26t23_50_00_000000.py.
"""

from app.migrating import raw_sql

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


forwards = raw_sql(ID, DESCRIPTION, _FORWARDS, _BACKWARDS)
