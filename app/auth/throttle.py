"""Sign-in throttling per account and per client address, counted in PostgreSQL.

Every replica counts in the same table, so a guesser gains nothing by spreading attempts.
An attempt is recorded *before* the password is checked (inside one short transaction that
holds an advisory lock on the account and the address), so concurrent attempts cannot all
pass the check at once; a correct password then removes its own row again.

A correct password also clears the account's earlier failures (its owner has shown they
know it) but not the address's: otherwise one valid account of an attacker's would reset the
per-address count between guesses at other accounts. The account column is cleared rather
than the row deleted, so the address keeps counting.

While an account is throttled even the right password is refused (429): that is what stops
guessing, and it means a guesser can delay the owner's *password* sign-in by up to the
window; API tokens and existing sessions keep working.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.auth.service import Principal, SignInBusy

__all__ = ("Busy", "Refused", "SignInThrottle", "throttled_password_check")

_CLEANUP_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Refused:
    """Too many failed sign-ins: for ``which`` ("account" or "address"), try after ``retry_after`` s."""

    which: str
    retry_after: int


class SignInThrottle:
    def __init__(self, db: Any, account_limit: int, address_limit: int, window: float) -> None:
        self.db = db
        self.account_limit = account_limit
        self.address_limit = address_limit
        self.window = float(window)

    async def begin(self, account: str, address: str) -> int | Refused:
        """Record an attempt (as a failure until ``succeeded``) or refuse it; returns its id."""
        account = account.strip().lower()[:200]
        address = address[:64]
        async with self.db.transaction() as conn:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('gantry-sign-in:' || $1, 0))",
                "account:" + account,
            )
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('gantry-sign-in:' || $1, 0))",
                "address:" + address,
            )
            for which, column, key, limit in (
                ("account", "account", account, self.account_limit),
                ("address", "address", address, self.address_limit),
            ):
                if limit <= 0:
                    continue  # 0 turns this count off
                # The limit-th newest attempt in the window: when it ages out, one more is allowed.
                oldest = await conn.fetchval(
                    f"""
                    SELECT extract(epoch FROM at + make_interval(secs => $2) - now())
                    FROM sign_in_attempt
                    WHERE {column} = $1 AND at > now() - make_interval(secs => $2)
                    ORDER BY at DESC OFFSET $3 LIMIT 1
                    """,  # noqa: S608 - column is one of two literals above
                    key,
                    self.window,
                    max(limit - 1, 0),
                )
                if oldest is not None:
                    return Refused(which, max(1, math.ceil(float(oldest))))
            await conn.execute(
                """
                DELETE FROM sign_in_attempt WHERE id IN (
                    SELECT id FROM sign_in_attempt
                    WHERE at <= now() - make_interval(secs => $1) LIMIT $2
                )
                """,
                self.window,
                _CLEANUP_BATCH,
            )
            attempt_id: int = await conn.fetchval(
                "INSERT INTO sign_in_attempt (account, address) VALUES ($1, $2) RETURNING id",
                account,
                address,
            )
        return attempt_id

    async def abandon(self, attempt_id: int) -> None:
        """The password was never checked (the server was busy): the attempt does not count."""
        async with self.db.connection() as conn:
            await conn.execute("DELETE FROM sign_in_attempt WHERE id = $1", attempt_id)

    async def succeeded(self, attempt_id: int, account: str) -> None:
        """The password was right: this attempt does not count, nor do the account's failures."""
        account = account.strip().lower()[:200]
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM sign_in_attempt WHERE id = $1", attempt_id)
            await conn.execute(
                "UPDATE sign_in_attempt SET account = NULL WHERE account = $1", account
            )


@dataclass(frozen=True, slots=True)
class Busy:
    """Too many password checks at once: nothing was checked, and the attempt did not count."""


async def throttled_password_check(
    request: Any, username: str, password: str
) -> Principal | Refused | Busy | None:
    """The password check of every sign-in with a password (the form, and ``POST
    /api/v1/auth/token`` for the CLI): counted per account and per address before it runs, so
    neither is a side door for guessing. The principal, or why not (None: wrong password or
    unknown user, which look the same)."""
    settings = request.app.state.settings
    throttle = SignInThrottle(
        request.app.state.db,
        settings.sign_in_account_limit,
        settings.sign_in_address_limit,
        settings.sign_in_window,
    )
    address = request.client.host if request.client else "unknown"
    attempt = await throttle.begin(username, address)
    if isinstance(attempt, Refused):
        return attempt
    try:
        principal = await request.app.state.auth.check_password(username, password)
    except SignInBusy:
        await throttle.abandon(attempt)  # busy is not a wrong password: it must not count
        return Busy()
    if principal is not None:
        await throttle.succeeded(attempt, username)
    return principal
