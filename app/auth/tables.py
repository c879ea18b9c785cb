"""People and their API tokens."""

from __future__ import annotations

from piccolo.columns import (
    Array,
    BigSerial,
    Boolean,
    Bytea,
    ForeignKey,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

__all__ = ("ApiToken", "SignInAttempt", "User", "WebSession")


class User(Table, tablename="gantry_user"):
    """A person who signs in to the dashboard or calls the API.

    ``oidc_issuer`` and ``oidc_subject`` name the provider account of a user who signs in
    through OpenID Connect (unique together: migration gantry_2026_12_01t19_10_00_000000);
    both are empty for local accounts.
    """

    name = Varchar(length=64, primary_key=True)
    display_name = Varchar(length=200, default="")
    roles = Array(Varchar(length=32), default=list)
    password_hash = Text(null=True, default=None)
    kind = Varchar(length=16, default="person")  # "person" or "service" (tokens only)
    disabled = Boolean(default=False)  # refused everywhere; its sessions are ended
    oidc_issuer = Varchar(length=500, null=True, default=None)
    oidc_subject = Varchar(length=255, null=True, default=None)
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


class WebSession(Table, tablename="web_session"):
    """A signed-in browser session, kept on the server so that signing out ends it everywhere.

    ``id`` is the SHA-256 of the cookie's value (a database leak gives no usable cookie);
    ``user`` lets every session of one person be ended at once. Created by the hand-written
    migration gantry_2026_12_01t15_00_00_000000.
    """

    id = Varchar(length=64, primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, null=True)
    data = Bytea()
    expires_at = Timestamptz()
    created_at = Timestamptz(default=TimestamptzNow())


class SignInAttempt(Table, tablename="sign_in_attempt"):
    """A sign-in that failed (or is being checked), counted per account and per address.

    ``account`` is cleared, not the row deleted, when the account signs in successfully, so
    the address keeps its count.
    """

    id = BigSerial(primary_key=True)
    account = Varchar(length=200, null=True, default=None)
    address = Varchar(length=64)
    at = Timestamptz(default=TimestamptzNow())
