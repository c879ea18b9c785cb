"""The hub's hints about identities (app/db.py): who must forget what, and which streams check
their caller again (app/auth/streams.py). No imports: the auth package and this one both use it."""

from __future__ import annotations

__all__ = ("AUTH_TOPIC", "ROLES_TOPIC", "user_topic")

AUTH_TOPIC = "auth"  # roles, users or tokens changed: every replica forgets what it cached
ROLES_TOPIC = "auth:roles"  # a role changed: every open stream checks its caller again


def user_topic(name: str) -> str:
    """One user's credentials or roles changed: that user's open streams check again."""
    return f"auth:user:{name}"
