"""Problem details (RFC 9457) as the API answers them, and how the OpenAPI schema describes them.

Every error under /api is ``application/problem+json`` (app/asgi.py writes them); handlers list
the statuses they can answer with ``responses=problems(...)`` so the schema says so.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.datastructures import ResponseSpec

__all__ = (
    "PROBLEM_JSON",
    "Problem",
    "ProblemIssue",
    "describe_request_bodies",
    "problems",
    "request_bodies",
    "text_answer",
)

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
    503: "Busy or not ready (a database statement timed out, too many password checks at once, a failed readiness check); try again after Retry-After",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for the problem statuses a handler can answer.

    400 and 401 always: every route refuses a NUL in its URL (app/asgi.py) and needs a
    credential unless it is public.
    """
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_WHAT[status],
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in sorted({400, 401, *statuses})
    }


def text_answer(description: str, media_type: str = "text/plain") -> dict[int, ResponseSpec]:
    """The OpenAPI 200 of a handler that streams text (a log, server-sent events, NDJSON)."""
    return {
        200: ResponseSpec(
            str, description=description, media_type=media_type, generate_examples=False
        )
    }


def request_bodies(app: Litestar, documented_only: bool = False) -> list[tuple[Any, type[Any]]]:
    """Every handler that takes a JSON body, with the Struct types of its ``data``."""
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if documented_only and not handler.resolve_include_in_schema():
                continue
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None:
                found += [(handler, struct) for struct in _structs(data.annotation)]
    return found


def _structs(annotation: Any) -> list[type[msgspec.Struct]]:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [s for arg in typing.get_args(annotation) for s in _structs(arg)]
    return []


def describe_request_bodies(app: Litestar) -> None:
    """Describe every JSON request body with msgspec's own JSON Schema of its Struct.

    msgspec is what validates the bodies, so its schema is the truthful one: it says which
    fields are refused (``additionalProperties: false`` for ``forbid_unknown_fields``), the
    bounds of map keys and sizes, and the patterns; Litestar's generator drops some of these.
    The served document is patched in place once, at startup.
    """
    bodies = {struct for _, struct in request_bodies(app, documented_only=True)}
    if not bodies:
        return
    _, components = msgspec.json.schema_components(
        sorted(bodies, key=lambda t: t.__name__), ref_template="#/components/schemas/{name}"
    )
    schema = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
