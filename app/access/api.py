"""JSON controllers for the caller (``/api/v1/me``), users and roles (DESIGN.md §9)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from app.access.policy import Policies, Policy
from app.access.service import RoleService, UserService
from app.audit.middleware import Note
from app.auth.middleware import allowed
from app.auth.service import AuthService, Principal
from app.auth.tokens import TokenCreated, TokenIn, TokenPage, issue, token_page
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
from app.pools.service import PoolService
from app.problems import problems
from app.settings import Settings

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


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["identity"]

    @get(
        "/", summary="Who you are, your roles and the pools you may submit to", responses=problems()
    )
    async def me(
        self,
        users: NamedDependency[UserService],
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
    ) -> Me:
        user = await users.get(principal.name)
        names = await pools.accessible(principal, "workflow:Create")
        return Me(
            name=user["name"],
            display_name=user["display_name"],
            kind=user["kind"],
            roles=sorted(principal.roles),
            pools=names,
            via=principal.via,
        )

    @post(
        "/password",
        status_code=204,
        summary="Change your password; every browser session of yours ends",
        responses=problems(422, 503),
    )
    async def change_password(
        self,
        users: NamedDependency[UserService],
        principal: NamedDependency[Principal],
        data: JSONBody[PasswordChange],
    ) -> None:
        await users.change_password(principal.name, data.current, data.new)


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["users"]
    guards = [allowed("user:Admin")]

    @get("/", summary="Users and service accounts (user:Admin)", responses=problems(403))
    async def list_users(
        self,
        users: NamedDependency[UserService],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> UserPage:
        items, next_cursor = await users.page(limit, cursor)
        return UserPage([msgspec.convert(u, UserOut) for u in items], next_cursor)

    @post(
        "/",
        status_code=201,
        summary="Create a user or a service account (user:Admin)",
        responses=problems(403, 409, 422),
    )
    async def create_user(
        self,
        users: NamedDependency[UserService],
        note: NamedDependency[Note],
        data: JSONBody[UserIn],
    ) -> UserOut:
        note.target = data.name
        user = await users.create(
            data.name,
            display_name=data.display_name,
            kind=data.kind,
            roles=data.roles,
            password=data.password,
        )
        return msgspec.convert(user, UserOut)

    @get("/{name:str}", summary="One user (user:Admin)", responses=problems(403, 404))
    async def get_user(
        self, users: NamedDependency[UserService], name: str = user_path()
    ) -> UserOut:
        return msgspec.convert(await users.get(name), UserOut)

    @patch(
        "/{name:str}",
        summary="Change a user's roles, name, password, or disable it (user:Admin)",
        description="Disabling a user ends its sessions and deletes its tokens at once.",
        responses=problems(403, 404, 409, 422),
    )
    async def patch_user(
        self,
        users: NamedDependency[UserService],
        data: JSONBody[UserPatch],
        name: str = user_path(),
    ) -> UserOut:
        user = await users.update(
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
        users: NamedDependency[UserService],
        auth: NamedDependency[AuthService],
        name: str = user_path(),
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> TokenPage:
        await users.get(name)  # 404 for no such user
        return token_page(await auth.list_tokens(name), limit, cursor)

    @post(
        "/{name:str}/tokens",
        status_code=201,
        summary="Create a token for a user or service account; shown once (user:Admin)",
        description="For pipelines: a service account signs in only with such tokens.",
        responses=problems(403, 404, 422),
    )
    async def create_token(
        self,
        users: NamedDependency[UserService],
        auth: NamedDependency[AuthService],
        settings: NamedDependency[Settings],
        data: JSONBody[TokenIn],
        name: str = user_path(),
    ) -> TokenCreated:
        await users.get(name)  # 404 for no such user
        lifetime = settings.token_max_lifetime
        return await issue(auth, lifetime, name, data.name, data.expires_at, data.roles)

    @delete(
        "/{name:str}/tokens/{token_id:int}",
        status_code=204,
        summary="Revoke one of a user's tokens (user:Admin)",
        responses=problems(403, 404),
    )
    async def revoke_token(
        self, auth: NamedDependency[AuthService], name: str = user_path(), token_id: int = id_path()
    ) -> None:
        if not await auth.revoke_token(name, token_id):
            raise NotFound(f"user '{name}' has no token {token_id}")

    @delete(
        "/{name:str}",
        status_code=204,
        summary="Remove a user who owns no workflow (user:Admin); disable one who does",
        responses=problems(403, 404, 409),
    )
    async def delete_user(
        self, users: NamedDependency[UserService], name: str = user_path()
    ) -> None:
        await users.delete(name)


class RoleController(Controller):
    path = "/api/v1/roles"
    tags = ["roles"]
    guards = [allowed("role:Admin")]

    @get("/", summary="Roles and their policies (role:Admin)", responses=problems(403))
    async def list_roles(
        self,
        role_service: NamedDependency[RoleService],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> RolePage:
        listed = page_of(await role_service.all(), limit, cursor)
        return RolePage(
            [msgspec.convert(r, RoleOut) for r in listed["items"]], listed["next_cursor"]
        )

    @get("/{name:str}", summary="One role (role:Admin)", responses=problems(403, 404))
    async def get_role(
        self, role_service: NamedDependency[RoleService], name: str = role_path()
    ) -> RoleOut:
        return msgspec.convert(await role_service.get(name), RoleOut)

    @put(
        "/{name:str}",
        summary="Create a role or replace its description and policies (role:Admin)",
        description="Deny wins over Allow; `scope` (own or any) narrows the actions on one "
        "existing workflow (workflow:Cancel, workflow:Exec, workflow:PortForward).",
        responses=problems(403, 409, 422),
    )
    async def put_role(
        self,
        role_service: NamedDependency[RoleService],
        data: JSONBody[RoleIn],
        name: str = role_path(),
    ) -> RoleOut:
        role = await role_service.put(name, data.description, data.policies)
        return msgspec.convert(role, RoleOut)

    @delete(
        "/{name:str}",
        status_code=204,
        summary="Delete a role and take it from everyone who held it (role:Admin)",
        responses=problems(403, 404, 409),
    )
    async def delete_role(
        self, role_service: NamedDependency[RoleService], name: str = role_path()
    ) -> None:
        await role_service.delete(name)
