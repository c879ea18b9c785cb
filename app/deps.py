"""What a handler may ask for by name: the caller, its audit note, and the services.

A handler declares ``workflows: WorkflowService`` or ``principal: Principal`` in its signature
and Litestar hands them in (``Provide``), so the signature says what the handler uses and
no handler reaches into ``request.app.state``.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec
from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide

from app.audit.middleware import Note, note_of
from app.auth.middleware import principal_of
from app.auth.service import Principal

__all__ = ("SERVICES", "clashes", "dependencies")

# Built once in app/asgi.py's lifespan and kept in the app's state under these names.
SERVICES = (
    "settings",
    "db",
    "hub",
    "auth",
    "users",
    # Not "roles": Litestar reads a body field's validation error as a failed dependency
    # (a 500) when a dependency has the field's name, and users and tokens have `roles`.
    "role_service",
    "audit",
    "oidc",
    "provider_users",
    "pools",
    "workflows",
    "logs",
    "log_windows",
    "searches",
    "runners",
    "watches",
    "loops",
)


def _from_state(name: str) -> Provide:
    def provide(state: State) -> Any:
        return state[name]

    return Provide(provide, sync_to_thread=False)


def _principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)  # 401 where authentication left no one


def _note(request: Request[Any, Any, Any]) -> Note:
    return note_of(request)  # what the audit log records of this request (its target)


def clashes(app: Litestar) -> list[str]:
    """Body fields that share a dependency's name (see "role_service" above): each would
    turn a client's mistake in that field into a 500."""
    names = set(app.dependencies)
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            data = handler.parsed_fn_signature.parameters.get("data")
            for struct in _structs(data.annotation if data else None):
                for field in set(struct.__struct_fields__) & names:
                    found.append(f"{handler} {struct.__name__}.{field}")
    return found


def _structs(annotation: Any) -> list[type[msgspec.Struct]]:
    """The Struct types in an annotation such as ``TokenIn`` or ``CancelRequest | None``."""
    found = []
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
            found.append(candidate)
    return found


def dependencies() -> dict[str, Provide]:
    """The app's dependencies: every service by its name, ``principal`` and ``note``."""
    provided = {name: _from_state(name) for name in SERVICES}
    provided["principal"] = Provide(_principal, sync_to_thread=False)
    provided["note"] = Provide(_note, sync_to_thread=False)
    return provided
