"""Roles with OSMO-shaped policies; users gain a kind and can be disabled; pools' role lists
become policies.

What a pool's role list meant is kept: a pool listing roles was open to those roles (and
admins), so each listed role is given the workflow actions and ``pool:List`` on it; a pool
listing none was open to every user, so the built-in ``user`` role is given the same on it.

Written by hand, in the style of gantry_2026_11_26t23_50_00_000000.py.
"""

from app.migrating import raw_sql

ID = "2026-12-01T18:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "roles and policies"

# Each migrated grant: the workflow actions and pool:List on the pools (p) in question.

_FORWARDS = [
    "CREATE TABLE role (name VARCHAR(64) PRIMARY KEY, description TEXT NOT NULL DEFAULT '',"
    " policies JSONB NOT NULL DEFAULT '[]'::jsonb, builtin BOOLEAN NOT NULL DEFAULT false,"
    " created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
    " updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    # Piccolo's raw SQL reads braces as placeholders: JSON goes in as arguments (_BUILTIN).
    "INSERT INTO role (name, description, policies, builtin) VALUES"
    " ('admin', 'Everything, on every pool.', {}::jsonb, true),"
    " ('user', 'Submit, read and cancel their own workflows on the default pool.',"
    " {}::jsonb, true)",
    # Every role a pool or a user names exists, so that nothing refers to a missing one.
    "INSERT INTO role (name, description) SELECT DISTINCT r, 'Created from a role list.'"
    " FROM (SELECT unnest(roles) FROM pool UNION SELECT unnest(roles) FROM gantry_user) AS x(r)"
    " WHERE r ~ '^[A-Za-z0-9][A-Za-z0-9_-]*$' AND length(r) <= 32 ON CONFLICT (name) DO NOTHING",
    """UPDATE role SET policies = role.policies || jsonb_build_array(
        (SELECT jsonb_build_object('effect', 'Allow', 'actions', jsonb_build_array('workflow:*',
            'pool:List'), 'resources', jsonb_agg('pool/' || p.name ORDER BY p.name), 'scope', 'own') FROM pool p WHERE role.name = ANY(p.roles)))
    WHERE role.name <> 'admin' AND EXISTS (SELECT 1 FROM pool p WHERE role.name = ANY(p.roles))""",
    """UPDATE role SET policies = role.policies || jsonb_build_array(
        (SELECT jsonb_build_object('effect', 'Allow', 'actions', jsonb_build_array('workflow:*',
            'pool:List'), 'resources', jsonb_agg('pool/' || p.name ORDER BY p.name), 'scope', 'own') FROM pool p WHERE cardinality(p.roles) = 0 AND p.name <> 'default'))
    WHERE role.name = 'user'
      AND EXISTS (SELECT 1 FROM pool p WHERE cardinality(p.roles) = 0 AND p.name <> 'default')""",
    "ALTER TABLE pool DROP COLUMN roles",
    "ALTER TABLE gantry_user ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'person'",
    "ALTER TABLE gantry_user ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false",
]

_BACKWARDS = [
    "ALTER TABLE gantry_user DROP COLUMN IF EXISTS disabled",
    "ALTER TABLE gantry_user DROP COLUMN IF EXISTS kind",
    # Role lists do not say everything policies can; going back leaves every pool open.
    "ALTER TABLE pool ADD COLUMN roles VARCHAR(32)[] NOT NULL DEFAULT ARRAY[]::varchar(32)[]",
    "DROP TABLE IF EXISTS role",
]


_BUILTIN = {
    1: [
        '[{"effect": "Allow", "actions": ["*"], "resources": ["*"], "scope": "any"}]',
        '[{"effect": "Allow", "actions": ["workflow:*"], "resources": ["pool/default"],'
        ' "scope": "own"}, {"effect": "Allow", "actions": ["pool:List"],'
        ' "resources": ["pool/default"], "scope": "own"}]',
    ]
}


forwards = raw_sql(ID, DESCRIPTION, _FORWARDS, _BACKWARDS, _BUILTIN)
