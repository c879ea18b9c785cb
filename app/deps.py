"""What a handler may ask for by name: the caller, its audit note, and the services.

A handler declares ``workflows: WorkflowService`` or ``principal: Principal`` in its signature
and Litestar hands them in (``Provide``), so the signature says what the handler uses and
no handler reaches into ``request.app.state``.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide

from app.audit.middleware import Note, note_of
from app.auth.middleware import principal_of
from app.auth.service import Principal
from app.problems import request_bodies

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
    return [
        f"{handler} {struct.__name__}.{field}"
        for handler, struct in request_bodies(app)
        for field in sorted(set(struct.__struct_fields__) & names)
    ]


def dependencies() -> dict[str, Provide]:
    """The app's dependencies: every service by its name, ``principal`` and ``note``."""
    provided = {name: _from_state(name) for name in SERVICES}
    provided["principal"] = Provide(_principal, sync_to_thread=False)
    provided["note"] = Provide(_note, sync_to_thread=False)
    return provided
