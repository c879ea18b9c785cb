"""People who sign in through an OpenID Connect provider are known by the provider's issuer
and subject, never by their name alone (app/auth/oidc_users.py).

Both columns are empty for local accounts; together they are unique (PostgreSQL lets rows
with empty values repeat), so one provider account is one Gantry user.

Raw SQL, run by app/migrating.py.
"""

from app.migrating import raw_sql

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


forwards = raw_sql(ID, DESCRIPTION, _FORWARDS, _BACKWARDS)
