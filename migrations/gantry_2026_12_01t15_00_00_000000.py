"""Per-user limits and retention: the submission-rate window, the index that counts a user's
alive workflows, and when a finished workflow's logs were removed.

Written by hand, in the style of gantry_2026_11_26t23_50_00_000000.py.
"""

from app.migrating import raw_sql

ID = "2026-12-01T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "limits and retention"

_FORWARDS = [
    # One row per user: the current one-minute window and how many submissions it holds.
    "CREATE TABLE submission_rate (user_name VARCHAR(64) PRIMARY KEY,"
    " window_start TIMESTAMPTZ NOT NULL, submissions INTEGER NOT NULL)",
    # A user's queued workflows, counted at every submission (app/limits.py).
    "CREATE INDEX workflow_owner_alive ON workflow (owner) WHERE status IN ('PENDING', 'RUNNING')",
    # Set by the retention loop once the workflow's log chunks are gone; the rows stay.
    "ALTER TABLE workflow ADD COLUMN logs_removed_at TIMESTAMPTZ NULL DEFAULT NULL",
    "CREATE INDEX workflow_retention ON workflow (ended_at)"
    " WHERE ended_at IS NOT NULL AND logs_removed_at IS NULL",
]

_BACKWARDS = [
    "DROP INDEX IF EXISTS workflow_retention",
    "ALTER TABLE workflow DROP COLUMN IF EXISTS logs_removed_at",
    "DROP INDEX IF EXISTS workflow_owner_alive",
    "DROP TABLE IF EXISTS submission_rate",
]


forwards = raw_sql(ID, DESCRIPTION, _FORWARDS, _BACKWARDS)
