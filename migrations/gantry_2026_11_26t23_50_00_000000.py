"""Indexes the generated schema migration cannot express, and the launch sequence.

Written by hand: composite, unique-across-columns and partial indexes that the hot queries
(keyset listing, dispatch, capacity accounting, log reads) rely on.
"""

from app.migrating import raw_sql

ID = "2026-11-26T23:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "indexes and launch sequence"

_EXTRA_SQL = [
    "CREATE SEQUENCE IF NOT EXISTS launch_seq",
    "CREATE INDEX workflow_keyset ON workflow (submitted_at DESC, id DESC)",
    "CREATE INDEX workflow_status ON workflow (status, submitted_at DESC)",
    "CREATE INDEX workflow_pool ON workflow (pool, submitted_at DESC)",
    "CREATE INDEX workflow_owner ON workflow (owner, submitted_at DESC)",
    "CREATE UNIQUE INDEX task_group_position ON task_group (workflow, position)",
    "CREATE INDEX task_group_ready ON task_group (id) WHERE status = 'PROCESSING'",
    "CREATE INDEX task_group_running ON task_group (started_at) WHERE status = 'RUNNING'",
    "CREATE INDEX task_by_group ON task (task_group, name, retry)",
    "CREATE UNIQUE INDEX task_attempt ON task (workflow, name, retry)",
    "CREATE INDEX task_on_backend ON task (backend)"
    " WHERE runner_ended_at IS NULL AND launch_seq IS NOT NULL",
    "CREATE INDEX task_event_task ON task_event (task, id)",
    "CREATE UNIQUE INDEX log_chunk_offset ON log_chunk (task, stream, start)",
    "CREATE INDEX log_chunk_arrival ON log_chunk (task, id)",
    "CREATE INDEX runner_session_backend ON runner_session (backend, epoch)",
    'CREATE INDEX api_token_user ON api_token ("user")',
]

_INDEXES = [sql.split(" ON ")[0].split()[-1] for sql in _EXTRA_SQL[1:]]
_DROP_SQL = ["DROP SEQUENCE IF EXISTS launch_seq"] + [
    f"DROP INDEX IF EXISTS {name}" for name in _INDEXES
]

forwards = raw_sql(ID, DESCRIPTION, _EXTRA_SQL, _DROP_SQL)
