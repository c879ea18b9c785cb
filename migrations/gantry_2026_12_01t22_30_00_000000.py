"""A log chunk keeps when its task wrote it, as the runner saw (protocol v1's optional
``LogChunk.at``): lines can show their time, and stdout and stderr keep their order.

Raw SQL, run by app/migrating.py.
"""

from app.migrating import raw_sql

ID = "2026-12-01T22:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "log chunks keep when they were printed"

_FORWARDS = ["ALTER TABLE log_chunk ADD COLUMN printed_at TIMESTAMPTZ NULL DEFAULT NULL"]

_BACKWARDS = ["ALTER TABLE log_chunk DROP COLUMN IF EXISTS printed_at"]


forwards = raw_sql(ID, DESCRIPTION, _FORWARDS, _BACKWARDS)
