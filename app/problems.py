"""Problem details (RFC 9457) as the API answers them, and how the OpenAPI schema describes them.

Every error under /api is ``application/problem+json`` (app/asgi.py writes them); handlers list
the statuses they can answer with ``responses=problems(...)`` so the schema says so.
"""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec

__all__ = ("PROBLEM_JSON", "Problem", "ProblemIssue", "problems")

import msgspec

PROBLEM_JSON = "application/problem+json"


class ProblemIssue(msgspec.Struct):
    """One thing wrong with the request: where (a field path such as ``workflow.tasks[0].command``
    or ``$.name``), the 1-based line in a submitted spec when there is one, and what to do."""

    path: str
    line: int | None
    message: str


class Problem(msgspec.Struct):
    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemIssue] | None = None


_WHAT = {
    400: "Malformed request: a body, parameter or field is not what the schema allows",
    401: "Not signed in, or the token is unknown, expired or revoked",
    403: "Signed in, but not allowed to do this",
    404: "No such resource (or you may not see it)",
    409: "Conflict with the current state",
    413: "The request body is too large",
    422: "Understood but refused: each item of `errors` names a field and says why",
    429: "Too many requests; try again after Retry-After seconds",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for the problem statuses a handler can answer (401 always)."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_WHAT[status],
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in sorted({401, *statuses})
    }
