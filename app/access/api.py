"""JSON controllers for the caller (``/api/v1/me``), users and roles (DESIGN.md §9)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put

from app.access.policy import Policies, Policy
from app.access.service import RoleService, UserService
from app.audit.middleware import note_of
from app.auth.middleware import allowed, principal_of
from app.auth.tokens import TokenCreated, TokenIn, issue
from app.bounds import (
    NO_NUL,
    Description,
    RoleName,
    UserName,
    id_path,
    role_path,
    user_path,
)
from app.errors import NotFound
from app.paging import cursor_query, limit_query, page_of
from app.problems import problems

__all__ = ("MeController", "RoleController", "UserController")

DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
# argon2 hashes any length; the bound keeps one request from costing more than a hash.
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=1024, pattern=NO_NUL)]
RoleList = Annotated[list[RoleName], msgspec.Meta(max_length=64)]


class Me(msgspec.Struct):
    name: str
    display_name: str
    kind: str
    roles: list[str]
    pools: list[str]
    via: str


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current: Annotated[str, msgspec.Meta(max_length=1024, pattern=NO_NUL)]
    new: Password


class UserOut(msgspec.Struct):
    name: str
    display_name: str
    kind: str
    roles: list[str]
    disabled: bool
    has_password: bool
    created_at: datetime


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    name: UserName
    display_name: DisplayName | None = None
    kind: Literal["person", "service"] = "person"
    roles: RoleList | None = None
    password: Password | None = None


class UserPatch(msgspec.Struct, forbid_unknown_fields=True):
    roles: RoleList | None = None
    display_name: DisplayName | None = None
    disabled: bool | None = None
    password: Password | None = None


class UserPage(msgspec.Struct):
    items: list[UserOut]
    next_cursor: str | None


class RoleIn(msgspec.Struct, forbid_unknown_fields=True):
    description: Description = ""
    policies: Policies = msgspec.field(default_factory=list)


class RoleOut(msgspec.Struct):
    name: str
    description: str
    policies: list[Policy]
    builtin: bool
    updated_at: datetime


class RolePage(msgspec.Struct):
    items: list[RoleOut]
    next_cursor: str | None


def _users(request: Request[Any, Any, Any]) -> UserService:
    return request.app.state.users


def _roles(request: Request[Any, Any, Any]) -> RoleService:
    return request.app.state.roles


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["identity"]

    @get(
        "/", summary="Who you are, your roles and the pools you may submit to", responses=problems()
    )
    async def me(self, request: Request[Any, Any, Any]) -> Me:
        principal = principal_of(request)
        user = await _users(request).get(principal.name)
        pools = await request.app.state.pools.accessible(principal, "workflow:Create")
        return Me(
            name=user["name"],
            display_name=user["display_name"],
            kind=user["kind"],
            roles=sorted(principal.roles),
            pools=pools,
            via=principal.via,
        )

    @post(
        "/password",
        status_code=204,
        summary="Change your password; every browser session of yours ends",
        responses=problems(422, 503),
    )
    async def change_password(self, request: Request[Any, Any, Any], data: PasswordChange) -> None:
        await _users(request).change_password(principal_of(request).name, data.current, data.new)


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["users"]
    guards = [allowed("user:Admin")]

    @get("/", summary="Users and service accounts (user:Admin)", responses=problems(403))
    async def list_users(
        self,
        request: Request[Any, Any, Any],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> UserPage:
        items, next_cursor = await _users(request).page(limit, cursor)
        return UserPage([msgspec.convert(u, UserOut) for u in items], next_cursor)

    @post(
        "/",
        status_code=201,
        summary="Create a user or a service account (user:Admin)",
        responses=problems(403, 409, 422),
    )
    async def create_user(self, request: Request[Any, Any, Any], data: UserIn) -> UserOut:
        note_of(request).target = data.name
        user = await _users(request).create(
            data.name,
            display_name=data.display_name,
            kind=data.kind,
            roles=data.roles,
            password=data.password,
        )
        return msgspec.convert(user, UserOut)

    @get("/{name:str}", summary="One user (user:Admin)", responses=problems(403, 404))
    async def get_user(self, request: Request[Any, Any, Any], name: str = user_path()) -> UserOut:
        return msgspec.convert(await _users(request).get(name), UserOut)

    @patch(
        "/{name:str}",
        summary="Change a user's roles, name, password, or disable it (user:Admin)",
        description="Disabling a user ends its sessions and deletes its tokens at once.",
        responses=problems(403, 404, 409, 422),
    )
    async def patch_user(
        self, request: Request[Any, Any, Any], data: UserPatch, name: str = user_path()
    ) -> UserOut:
        user = await _users(request).update(
            name,
            roles=data.roles,
            display_name=data.display_name,
            disabled=data.disabled,
            password=data.password,
        )
        return msgspec.convert(user, UserOut)

    @get(
        "/{name:str}/tokens",
        summary="A user's or service account's tokens, never their values (user:Admin)",
        responses=problems(403, 404),
    )
    async def list_tokens(
        self,
        request: Request[Any, Any, Any],
        name: str = user_path(),
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> dict[str, Any]:
        await _users(request).get(name)
        return page_of(await request.app.state.auth.list_tokens(name), limit, cursor, "id")

    @post(
        "/{name:str}/tokens",
        status_code=201,
        summary="Create a token for a user or service account; shown once (user:Admin)",
        description="For pipelines: a service account signs in only with such tokens.",
        responses=problems(403, 404, 422),
    )
    async def create_token(
        self, request: Request[Any, Any, Any], data: TokenIn, name: str = user_path()
    ) -> TokenCreated:
        await _users(request).get(name)
        lifetime = request.app.state.settings.token_max_lifetime
        return await issue(
            request.app.state.auth, lifetime, name, data.name, data.expires_at, data.roles
        )

    @delete(
        "/{name:str}/tokens/{token_id:int}",
        status_code=204,
        summary="Revoke one of a user's tokens (user:Admin)",
        responses=problems(403, 404),
    )
    async def revoke_token(
        self, request: Request[Any, Any, Any], name: str = user_path(), token_id: int = id_path()
    ) -> None:
        if not await request.app.state.auth.revoke_token(name, token_id):
            raise NotFound(f"user '{name}' has no token {token_id}")

    @delete(
        "/{name:str}",
        status_code=204,
        summary="Remove a user who owns no workflow (user:Admin); disable one who does",
        responses=problems(403, 404, 409),
    )
    async def delete_user(self, request: Request[Any, Any, Any], name: str = user_path()) -> None:
        await _users(request).delete(name)


class RoleController(Controller):
    path = "/api/v1/roles"
    tags = ["roles"]
    guards = [allowed("role:Admin")]

    @get("/", summary="Roles and their policies (role:Admin)", responses=problems(403))
    async def list_roles(
        self,
        request: Request[Any, Any, Any],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> RolePage:
        listed = page_of(await _roles(request).all(), limit, cursor)
        return RolePage(
            [msgspec.convert(r, RoleOut) for r in listed["items"]], listed["next_cursor"]
        )

    @get("/{name:str}", summary="One role (role:Admin)", responses=problems(403, 404))
    async def get_role(self, request: Request[Any, Any, Any], name: str = role_path()) -> RoleOut:
        return msgspec.convert(await _roles(request).get(name), RoleOut)

    @put(
        "/{name:str}",
        summary="Create a role or replace its description and policies (role:Admin)",
        description="Deny wins over Allow; `scope` (own or any) narrows the actions on one "
        "existing workflow (workflow:Cancel, workflow:Exec, workflow:PortForward).",
        responses=problems(403, 409, 422),
    )
    async def put_role(
        self, request: Request[Any, Any, Any], data: RoleIn, name: str = role_path()
    ) -> RoleOut:
        role = await _roles(request).put(name, data.description, data.policies)
        return msgspec.convert(role, RoleOut)

    @delete(
        "/{name:str}",
        status_code=204,
        summary="Delete a role and take it from everyone who held it (role:Admin)",
        responses=problems(403, 404, 409),
    )
    async def delete_role(self, request: Request[Any, Any, Any], name: str = role_path()) -> None:
        await _roles(request).delete(name)
