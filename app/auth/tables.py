"""People and their API tokens."""

from __future__ import annotations

from piccolo.columns import (
    Array,
    BigSerial,
    ForeignKey,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

__all__ = ("ApiToken", "User")


class User(Table, tablename="gantry_user"):
    """A person who signs in to the dashboard or calls the API."""

    name = Varchar(length=64, primary_key=True)
    display_name = Varchar(length=200, default="")
    roles = Array(Varchar(length=32), default=list)
    password_hash = Text(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())


class ApiToken(Table, tablename="api_token"):
    """A personal API token; only its SHA-256 is stored, the token is shown once."""

    id = BigSerial(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, null=False)
    name = Varchar(length=100)
    token_hash = Varchar(length=64, unique=True)
    scopes = Array(Varchar(length=32), default=list)
    expires_at = Timestamptz(null=True, default=None)
    last_used_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
