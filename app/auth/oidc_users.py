"""Gantry users of the identity provider: matched by issuer and subject, provisioned at first
sign-in, and their provider-managed roles brought in line with their groups at every sign-in.

A provider account is never matched by name: one whose name belongs to another account (a
local one, or another provider subject) is refused, so nobody takes over ``admin`` by
calling themselves admin at the provider.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg

from app.access.topics import AUTH_TOPIC, user_topic
from app.bounds import USER_NAME as USER_NAME_PATTERN
from app.db import Database, notify
from app.settings import Settings

__all__ = ("ProviderUsers", "SignInRefused")

log = logging.getLogger("gantry.oidc")

USER_NAME = re.compile(USER_NAME_PATTERN)
MAX_GROUPS = 1000
_BY_SUBJECT = (
    "SELECT name, roles, kind, disabled FROM gantry_user"
    " WHERE oidc_issuer = $1 AND oidc_subject = $2"
)
_BY_SUBJECT_FOR_UPDATE = _BY_SUBJECT + " FOR UPDATE"  # a sign-in may change the roles


class SignInRefused(Exception):
    """A provider account that may not sign in here; the message is for the person."""


def groups_of(claims: dict[str, Any], claim: str) -> set[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return set()
    return {g for g in value[:MAX_GROUPS] if isinstance(g, str)}


class ProviderUsers:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.role_map: dict[str, set[str]] = {}
        for group, role in settings.oidc_role_map:
            self.role_map.setdefault(group, set()).add(role)
        # The roles the provider decides: a sign-in sets exactly those of them its groups map to.
        self.managed = {role for roles in self.role_map.values() for role in roles}

    def mapped_roles(self, groups: set[str]) -> set[str]:
        return {role for g in groups for role in self.role_map.get(g, ())}

    async def sign_in(self, issuer: str, claims: dict[str, Any], *, sync_roles: bool) -> str:
        """The Gantry name of the provider account ``(issuer, claims["sub"])``, created if new.

        ``sync_roles``: a sign-in replaces the user's provider-managed roles with those its
        groups map to (other roles are left as they are); a Bearer access token only
        provisions a new user and changes nothing of a known one.
        """
        subject = str(claims["sub"])
        mapped = self.mapped_roles(groups_of(claims, self.settings.oidc_groups_claim))
        for _attempt in range(2):
            try:
                return await self._sign_in(issuer, subject, claims, mapped, sync_roles)
            except asyncpg.UniqueViolationError:
                continue  # the same account's first sign-in ran at once elsewhere: look again
        raise SignInRefused("this account could not be signed in; try again")

    async def _sign_in(
        self, issuer: str, subject: str, claims: dict[str, Any], mapped: set[str], sync: bool
    ) -> str:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(_BY_SUBJECT_FOR_UPDATE if sync else _BY_SUBJECT, issuer,
                                      subject)  # fmt: skip
            mapped = await _existing(conn, mapped)
            if row is None:
                return await self._provision(conn, issuer, subject, claims, mapped)
            if row["disabled"]:
                raise SignInRefused(f"the account '{row['name']}' is disabled in Gantry")
            if row["kind"] != "person":
                raise SignInRefused(f"'{row['name']}' is a service account; it cannot sign in")
            held = set(row["roles"] or ())
            wanted = (held - self.managed) | mapped
            if sync and wanted != held:
                await conn.execute(
                    "UPDATE gantry_user SET roles = $2 WHERE name = $1", row["name"], sorted(wanted)
                )
                # Every replica forgets the old roles; the user's open streams check again.
                await notify(conn, AUTH_TOPIC, user_topic(row["name"]))
            return str(row["name"])

    async def _provision(
        self, conn: Any, issuer: str, subject: str, claims: dict[str, Any], mapped: set[str]
    ) -> str:
        claim = self.settings.oidc_username_claim
        name = claims.get(claim)
        if not isinstance(name, str) or not name:
            raise SignInRefused(
                f"the identity provider did not give a user name (claim '{claim}'); "
                "ask an administrator"
            )
        if not USER_NAME.match(name):
            raise SignInRefused(
                f"the user name '{name[:80]}' from the identity provider is not one Gantry can "
                "use (letters, digits, '.', '_', '@', '-'; at most 64)"
            )
        display = claims.get("name")
        display = display[:200] if isinstance(display, str) and display.strip() else name
        created = await conn.fetchval(
            """
            INSERT INTO gantry_user (name, display_name, kind, roles, password_hash, disabled,
                                     oidc_issuer, oidc_subject, created_at)
            VALUES ($1, $2, 'person', $3, NULL, false, $4, $5, now())
            ON CONFLICT (name) DO NOTHING RETURNING name
            """,
            name,
            display,
            sorted({"user"} | mapped),
            issuer,
            subject,
        )
        if created is None:
            log.warning("refused provider account %s of %s: the name %r is taken", subject,
                        issuer, name)  # fmt: skip
            raise SignInRefused(
                f"the name '{name}' belongs to another Gantry account, so this sign-in was "
                "refused; ask an administrator to rename one of the accounts"
            )
        log.info("provisioned %r from provider account %s of %s", name, subject, issuer)
        return name


async def _existing(conn: Any, roles: set[str]) -> set[str]:
    """Only roles that exist are given (a mapped role nobody created grants nothing)."""
    if not roles:
        return set()
    rows = await conn.fetch("SELECT name FROM role WHERE name = ANY($1::text[])", sorted(roles))
    known = {r["name"] for r in rows}
    for missing in sorted(roles - known):
        log.warning("GANTRY_OIDC_ROLE_MAP names role %r, which does not exist", missing)
    return known
