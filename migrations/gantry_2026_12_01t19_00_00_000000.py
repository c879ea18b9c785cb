"""The audit log: one row per state-changing request, kept (retention never deletes them).

Each filter of ``GET /api/v1/audit`` has an index ending in ``id``, so a filtered page is
read newest first from its index; ``at`` has its own for time ranges.

Raw SQL, run by app/migrating.py.
"""

from app.migrating import raw_sql

ID = "2026-12-01T19:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit log"

# No braces below: Piccolo's raw SQL reads them as placeholders.
_FORWARDS = [
    "CREATE TABLE audit_event (id BIGSERIAL PRIMARY KEY,"
    " at TIMESTAMPTZ NOT NULL DEFAULT now(),"
    " principal VARCHAR(200) NOT NULL DEFAULT '', via VARCHAR(32) NOT NULL DEFAULT '',"
    " action VARCHAR(64) NOT NULL DEFAULT '', target VARCHAR(200) NOT NULL DEFAULT '',"
    " source VARCHAR(64) NOT NULL DEFAULT '', outcome VARCHAR(16) NOT NULL DEFAULT '',"
    " status INTEGER, request VARCHAR(200) NOT NULL DEFAULT '')",
    "CREATE INDEX audit_event_principal ON audit_event (principal, id)",
    "CREATE INDEX audit_event_action ON audit_event (action, id)",
    "CREATE INDEX audit_event_target ON audit_event (target, id)",
    "CREATE INDEX audit_event_outcome ON audit_event (outcome, id)",
    "CREATE INDEX audit_event_at ON audit_event (at)",
]

_BACKWARDS = ["DROP TABLE IF EXISTS audit_event"]


forwards = raw_sql(ID, DESCRIPTION, _FORWARDS, _BACKWARDS)
