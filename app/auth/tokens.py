"""Personal and service-account tokens as the API takes and gives them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec

from app.auth.service import AuthService, Principal
from app.bounds import RoleName, TokenName
from app.errors import Invalid
from app.paging import page_of
from app.spec.errors import SpecIssue

__all__ = (
    "TokenCreated",
    "TokenIn",
    "TokenOut",
    "TokenPage",
    "issue",
    "token_expiry",
    "token_page",
    "token_roles_for",
)


class TokenIn(msgspec.Struct, forbid_unknown_fields=True):
    name: TokenName
    # Honoured to the second; at most GANTRY_TOKEN_MAX_LIFETIME ahead (none: that far).
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    # A subset of the owner's roles that the token carries (none: all of them).
    # At least one: an empty list read as "all of them" surprised a reviewer asking for none.
    roles: Annotated[list[RoleName], msgspec.Meta(min_length=1, max_length=64)] | None = None


class TokenCreated(msgspec.Struct):
    id: int
    name: str
    token: str
    expires_at: datetime


class TokenOut(msgspec.Struct):
    """A token as lists show it: never its value."""

    id: int
    name: str
    roles: list[str]  # the roles it carries; empty: every role of its owner
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class TokenPage(msgspec.Struct):
    items: list[TokenOut]
    next_cursor: str | None


def token_page(tokens: list[dict[str, Any]], limit: int, cursor: str | None) -> TokenPage:
    """A page of ``AuthService.list_tokens``, newest first, by id."""
    return msgspec.convert(page_of(tokens, limit, cursor, "id"), TokenPage)


def token_expiry(
    asked: datetime | None, max_lifetime: float, not_after: datetime | None = None
) -> datetime:
    """When a new token expires: as asked (to the second), or at the longest allowed life;
    never after ``not_after`` (the expiry of the token that asks for it)."""
    now = datetime.now(UTC)
    latest = now + timedelta(seconds=max_lifetime)
    if not_after is not None and asked is not None and asked > not_after:
        raise Invalid(
            "a token may not outlive the token that creates it (that one expires at "
            f"{not_after.isoformat()})",
            [SpecIssue("expires_at", None, f"give a time before {not_after.isoformat()}")],
        )
    if not_after is not None:
        latest = min(latest, not_after)
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


def token_roles_for(principal: Principal, asked: list[str] | None) -> list[str] | None:
    """The roles a new token of ``principal`` carries. A caller using a token that carries a
    subset of roles may hand on only that subset (asking for none gives that subset, not
    every role of the owner): else a narrow token could mint a wide one (a review found)."""
    if principal.via != "token" or not principal.limited:
        return asked
    held = principal.roles
    if not asked:
        return sorted(held)
    extra = sorted(set(asked) - held) if "admin" not in held else []
    if extra:
        raise Invalid(
            f"the token you are using carries only {', '.join(sorted(held))}; a token it "
            f"creates cannot carry {', '.join(extra)}",
            [SpecIssue("roles", None, "ask for roles the token you use carries")],
        )
    return asked


async def issue(
    auth: AuthService,
    max_lifetime: float,
    owner: str,
    name: str,
    expires_at: datetime | None,
    roles: list[str] | None,
    caller: Principal | None = None,
) -> TokenCreated:
    """A new token of ``owner``, shown once. ``caller``: the principal asking for a token of
    its own, whose token (if it uses one) bounds the new one's roles and life; None for an
    administrator making one for someone else (the API's users/{name}/tokens)."""
    not_after = caller.expires_at if caller is not None and caller.via == "token" else None
    expiry = token_expiry(expires_at, max_lifetime, not_after)
    carried = token_roles_for(caller, roles) if caller is not None else roles
    token_id, token = await auth.issue_token(owner, name, expiry, carried)
    return TokenCreated(token_id, name, token, expiry)
