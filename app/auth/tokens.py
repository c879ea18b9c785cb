"""Personal and service-account tokens as the API takes and gives them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

from app.bounds import RoleName, TokenName
from app.errors import Invalid
from app.spec.errors import SpecIssue

__all__ = ("TokenCreated", "TokenIn", "token_expiry")


class TokenIn(msgspec.Struct, forbid_unknown_fields=True):
    name: TokenName
    # Honoured to the second; at most GANTRY_TOKEN_MAX_LIFETIME ahead (none: that far).
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    # A subset of the owner's roles that the token carries (none: all of them).
    roles: Annotated[list[RoleName], msgspec.Meta(max_length=64)] | None = None


class TokenCreated(msgspec.Struct):
    id: int
    name: str
    token: str
    expires_at: datetime


def token_expiry(asked: datetime | None, max_lifetime: float) -> datetime:
    """When a new token expires: as asked (to the second), or at the longest allowed life."""
    now = datetime.now(UTC)
    latest = now + timedelta(seconds=max_lifetime)
    if asked is None:
        return latest.replace(microsecond=0)
    if asked <= now:
        raise Invalid(
            "expires_at is in the past", [SpecIssue("expires_at", None, "give a future time")]
        )
    if asked > latest + timedelta(seconds=1):
        raise Invalid(
            f"expires_at is beyond the longest token life ({max_lifetime / 86400:g} days, "
            "GANTRY_TOKEN_MAX_LIFETIME)",
            [SpecIssue("expires_at", None, f"give a time before {latest.isoformat()}")],
        )
    return asked.astimezone(UTC).replace(microsecond=0)
