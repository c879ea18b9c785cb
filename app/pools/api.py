"""JSON controllers for pools, backends and personal API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post

from app.access.policy import pool_resource
from app.audit.middleware import note_of
from app.auth.middleware import principal_of, require
from app.auth.service import AuthService
from app.auth.tokens import TokenCreated, TokenIn, issue
from app.bounds import Description, Name, id_path, text_query
from app.errors import NotFound
from app.paging import cursor_query, limit_query, page_of
from app.pools.service import PoolService
from app.problems import problems

__all__ = ("BackendController", "PoolController", "TokenController")


class PoolIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""
    platforms: Annotated[list[Name], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )


class BackendIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    pool: Name


class BackendPage(msgspec.Struct):
    items: list[BackendOut]
    next_cursor: str | None


class BackendCreated(msgspec.Struct):
    name: str
    pool: str
    token: str


class BackendOut(msgspec.Struct):
    name: str
    pool: str
    connected: bool
    last_heartbeat: datetime | None
    capacity: dict[str, Any]


def _pools(request: Request[Any, Any, Any]) -> PoolService:
    return request.app.state.pools


class PoolController(Controller):
    path = "/api/v1/pools"
    tags = ["pools"]

    @get("/", summary="Pools you may use", responses=problems())
    async def list_pools(
        self,
        request: Request[Any, Any, Any],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> dict[str, Any]:
        return page_of(await _pools(request).summaries(principal_of(request)), limit, cursor)

    @post(
        "/",
        status_code=201,
        summary="Create a pool (pool:Admin on it)",
        responses=problems(403, 409, 422),
    )
    async def create_pool(self, request: Request[Any, Any, Any], data: PoolIn) -> dict[str, Any]:
        note_of(request).target = data.name
        require(principal_of(request), "pool:Admin", pool_resource(data.name))
        return await _pools(request).create_pool(
            data.name, data.description, platforms=data.platforms
        )


class BackendController(Controller):
    path = "/api/v1/backends"
    tags = ["backends"]

    @get(
        "/",
        summary="Backends of the pools you may use, and whether a runner is connected",
        responses=problems(),
    )
    async def list_backends(
        self,
        request: Request[Any, Any, Any],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> BackendPage:
        pools = await _pools(request).accessible(principal_of(request), "pool:List")
        listed = page_of(await _pools(request).backends(pools), limit, cursor)
        items = [msgspec.convert(r, BackendOut, strict=False) for r in listed["items"]]
        return BackendPage(items, listed["next_cursor"])

    @post(
        "/",
        status_code=201,
        summary="Create a backend; its token is shown once (backend:Admin on its pool)",
        responses=problems(403, 404, 409, 422),
    )
    async def create_backend(
        self, request: Request[Any, Any, Any], data: BackendIn
    ) -> BackendCreated:
        note_of(request).target = data.name
        require(principal_of(request), "backend:Admin", pool_resource(data.pool))
        token = await _pools(request).create_backend(data.name, data.pool)
        return BackendCreated(name=data.name, pool=data.pool, token=token)

    @post(
        "/{name:str}/token",
        status_code=201,
        summary="Rotate a backend's runner token (backend:Admin on its pool)",
        description="The new token is shown once; the previous one keeps working for "
        "GANTRY_TOKEN_ROTATION_GRACE seconds (default 3600), so the runner can be redeployed "
        "without downtime. A token older than the previous one stops at once.",
        responses=problems(403, 404),
    )
    async def rotate_token(
        self, request: Request[Any, Any, Any], name: str = text_query(64)
    ) -> BackendCreated:
        pools = _pools(request)
        pool = await pools.pool_of_backend(name)
        principal = principal_of(request)
        if pool is None or not principal.can("pool:List", pool_resource(pool)):
            raise NotFound(f"backend '{name}' does not exist")
        require(principal, "backend:Admin", pool_resource(pool))
        grace = request.app.state.settings.token_rotation_grace
        pool, token = await pools.rotate_backend_token(name, grace)
        return BackendCreated(name=name, pool=pool, token=token)


class TokenController(Controller):
    path = "/api/v1/tokens"
    tags = ["tokens"]

    @get(
        "/",
        summary="Your personal API tokens (never the tokens themselves)",
        responses=problems(),
    )
    async def list_tokens(
        self,
        request: Request[Any, Any, Any],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> dict[str, Any]:
        auth: AuthService = request.app.state.auth
        return page_of(await auth.list_tokens(principal_of(request).name), limit, cursor, "id")

    @post(
        "/",
        status_code=201,
        summary="Create a personal API token; it is shown once",
        responses=problems(422),
    )
    async def create_token(self, request: Request[Any, Any, Any], data: TokenIn) -> TokenCreated:
        principal = principal_of(request)
        lifetime = request.app.state.settings.token_max_lifetime
        created = await issue(request.app.state.auth, lifetime, principal.name, data.name,
                              data.expires_at, data.roles, caller=principal)  # fmt: skip
        note_of(request).target = str(created.id)
        return created

    @delete(
        "/{token_id:int}",
        status_code=204,
        summary="Revoke one of your tokens",
        responses=problems(404),
    )
    async def revoke(self, request: Request[Any, Any, Any], token_id: int = id_path()) -> None:
        auth: AuthService = request.app.state.auth
        if not await auth.revoke_token(principal_of(request).name, token_id):
            raise NotFound(f"you have no token {token_id}")
