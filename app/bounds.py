"""Bounds on what clients send: the constrained types every JSON body, query and path parameter uses.

PostgreSQL refuses NUL characters in text (``UntranslatableCharacterError``) and numbers outside
its column types (``int4``, ``int8``); both used to surface as 500s. Every input is bounded here,
at the edge, so a bad one is a 4xx naming the field before it reaches a query. The limits follow
the columns they end in (app/*/tables.py).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar.exceptions import ValidationException
from litestar.params import Parameter

from app.errors import Invalid
from app.spec.errors import SpecIssue

__all__ = (
    "INT4_MAX",
    "INT8_MAX",
    "NO_NUL",
    "ROLE_NAME",
    "USER_NAME",
    "Description",
    "Name",
    "Reason",
    "RoleName",
    "TokenName",
    "UserName",
    "count_query",
    "id_path",
    "int8_query",
    "query_refused",
    "refuse_nul",
    "role_path",
    "text_query",
    "user_path",
)

# A string without NUL characters (msgspec applies the pattern with re.search).
NO_NUL = r"^[^\x00]*$"
INT4_MAX = 2**31 - 1  # PostgreSQL integer
INT8_MAX = 2**63 - 1  # PostgreSQL bigint

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
TokenName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]
Reason = Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)]
# Users (a provider's name may be an e-mail address) and roles (gantry_user.roles is varchar(32)).
USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
ROLE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
UserName = Annotated[str, msgspec.Meta(pattern=USER_NAME, max_length=64)]
RoleName = Annotated[str, msgspec.Meta(pattern=ROLE_NAME, max_length=32)]
Description = Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)]


def text_query(max_length: int = 200, **kw: Any) -> Any:
    """A query or path string: bounded, and without NUL (which PostgreSQL cannot store)."""
    return Parameter(max_length=max_length, pattern=NO_NUL, **kw)


def user_path() -> Any:
    """A user's name in a path."""
    return Parameter(pattern=USER_NAME, max_length=64)


def role_path() -> Any:
    """A role's name in a path."""
    return Parameter(pattern=ROLE_NAME, max_length=32)


def id_path(**kw: Any) -> Any:
    """A bigint id in a path."""
    return Parameter(ge=0, le=INT8_MAX, **kw)


def int8_query(**kw: Any) -> Any:
    """A non-negative bigint in a query (an offset, a chunk id)."""
    return Parameter(ge=0, le=INT8_MAX, **kw)


def count_query(**kw: Any) -> Any:
    """A non-negative integer column (a retry number, a line number)."""
    return Parameter(ge=0, le=INT4_MAX, **kw)


def refuse_nul(limits: dict[str, int], **fields: Any) -> None:
    """Refuse form fields with NUL characters or longer than their limit, naming the field.

    Forms arrive as plain dicts (no Struct to carry Meta constraints), so the views check their
    text fields here; the error page names every field that was wrong.
    """
    issues = []
    for name, value in fields.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else str(value)
        if "\x00" in text:
            issues.append(SpecIssue(name, None, f"{name} must not contain NUL characters"))
        elif name in limits and len(text) > limits[name]:
            issues.append(
                SpecIssue(name, None, f"{name} may be at most {limits[name]} characters long")
            )
    if issues:
        raise Invalid("; ".join(i.message for i in issues), issues, title="Invalid form")


def query_refused(name: str, message: str) -> ValidationException:
    """A 400 for query parameter ``name``, checked by a handler rather than by Litestar (a
    bound Litestar cannot say, or whose message would name the Python parameter)."""
    return ValidationException(
        detail=f"{name}: {message}", extra=[{"key": name, "source": "query", "message": message}]
    )
