"""JSON controllers for pools, backends and personal API tokens."""

from __future__ import annotations

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from app.access.policy import pool_resource
from app.audit.middleware import Note
from app.auth.middleware import require
from app.auth.service import AuthService, Principal
from app.auth.tokens import TokenCreated, TokenIn, TokenPage, issue, token_page
from app.bounds import id_path, text_query
from app.errors import NotFound
from app.paging import cursor_query, limit_query, page_of
from app.pools.schemas import (
    BackendCreated,
    BackendIn,
    BackendOut,
    BackendPage,
    PoolIn,
    PoolOut,
    PoolPage,
)
from app.pools.service import PoolService
from app.problems import problems
from app.settings import Settings

__all__ = ("BackendController", "PoolController", "TokenController")


class PoolController(Controller):
    path = "/api/v1/pools"
    tags = ["pools"]

    @get("/", summary="Pools you may use", responses=problems())
    async def list_pools(
        self,
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> PoolPage:
        listed = page_of(await pools.summaries(principal), limit, cursor)
        return msgspec.convert(listed, PoolPage)

    @post(
        "/",
        status_code=201,
        summary="Create a pool (pool:Admin on it)",
        responses=problems(403, 409, 422),
    )
    async def create_pool(
        self,
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        note: NamedDependency[Note],
        data: JSONBody[PoolIn],
    ) -> PoolOut:
        note.target = data.name
        require(principal, "pool:Admin", pool_resource(data.name))
        await pools.create_pool(data.name, data.description, platforms=data.platforms)
        return PoolOut(data.name, data.description, data.platforms, backends=[], queued_groups=0)


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
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> BackendPage:
        names = await pools.accessible(principal, "pool:List")
        listed = page_of(await pools.backends(names), limit, cursor)
        items = [msgspec.convert(r, BackendOut, strict=False) for r in listed["items"]]
        return BackendPage(items, listed["next_cursor"])

    @post(
        "/",
        status_code=201,
        summary="Create a backend; its token is shown once (backend:Admin on its pool)",
        responses=problems(403, 404, 409, 422),
    )
    async def create_backend(
        self,
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        note: NamedDependency[Note],
        data: JSONBody[BackendIn],
    ) -> BackendCreated:
        note.target = data.name
        require(principal, "backend:Admin", pool_resource(data.pool))
        token = await pools.create_backend(data.name, data.pool)
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
        self,
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
        name: str = text_query(64),
    ) -> BackendCreated:
        pool = await pools.pool_of_backend(name)
        if pool is None or not principal.can("pool:List", pool_resource(pool)):
            raise NotFound(f"backend '{name}' does not exist")
        require(principal, "backend:Admin", pool_resource(pool))
        pool, token = await pools.rotate_backend_token(name, settings.token_rotation_grace)
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
        auth: NamedDependency[AuthService],
        principal: NamedDependency[Principal],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> TokenPage:
        return token_page(await auth.list_tokens(principal.name), limit, cursor)

    @post(
        "/",
        status_code=201,
        summary="Create a personal API token; it is shown once",
        responses=problems(422),
    )
    async def create_token(
        self,
        auth: NamedDependency[AuthService],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
        note: NamedDependency[Note],
        data: JSONBody[TokenIn],
    ) -> TokenCreated:
        created = await issue(auth, settings.token_max_lifetime, principal.name, data.name,
                              data.expires_at, data.roles, caller=principal)  # fmt: skip
        note.target = str(created.id)
        return created

    @delete(
        "/{token_id:int}",
        status_code=204,
        summary="Revoke one of your tokens",
        responses=problems(404),
    )
    async def revoke(
        self,
        auth: NamedDependency[AuthService],
        principal: NamedDependency[Principal],
        token_id: int = id_path(),
    ) -> None:
        if not await auth.revoke_token(principal.name, token_id):
            raise NotFound(f"you have no token {token_id}")
