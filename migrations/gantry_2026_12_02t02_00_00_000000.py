"""A pool's configuration becomes one JSON document (app/pools/config.py): its platforms a map
from name to configuration (they were a list of names), its defaults (resources, timeouts)
fields of the same document.

Raw SQL, run by app/migrating.py (no braces in the SQL:
Piccolo's raw queries read `{}` as a parameter).
"""

from app.migrating import raw_sql

ID = "2026-12-02T02:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "a pool's configuration in one document; platforms as a map"

_FORWARDS = [
    "ALTER TABLE pool ADD COLUMN config JSONB NOT NULL DEFAULT jsonb_build_object()",
    """
    UPDATE pool SET config = jsonb_strip_nulls(jsonb_build_object(
        'platforms', (SELECT coalesce(jsonb_object_agg(p, jsonb_build_object()), jsonb_build_object())
                      FROM unnest(platforms) AS p),
        'default_resources', coalesce(defaults -> 'resources', jsonb_build_object()) - 'platform',
        'default_exec_timeout', defaults -> 'exec_timeout',
        'default_queue_timeout', defaults -> 'queue_timeout'
    ))
    """,
    "ALTER TABLE pool DROP COLUMN platforms",
    "ALTER TABLE pool DROP COLUMN defaults",
]

_BACKWARDS = [
    "ALTER TABLE pool ADD COLUMN platforms VARCHAR(64)[] NOT NULL DEFAULT ARRAY[]::varchar(64)[]",
    "ALTER TABLE pool ADD COLUMN defaults JSONB NOT NULL DEFAULT jsonb_build_object()",
    """
    UPDATE pool SET
        platforms = ARRAY(SELECT jsonb_object_keys(coalesce(config -> 'platforms', jsonb_build_object()))),
        defaults = jsonb_strip_nulls(jsonb_build_object(
            'resources', config -> 'default_resources',
            'exec_timeout', config -> 'default_exec_timeout',
            'queue_timeout', config -> 'default_queue_timeout'
        ))
    """,
    "ALTER TABLE pool DROP COLUMN config",
]


forwards = raw_sql(ID, DESCRIPTION, _FORWARDS, _BACKWARDS)
