"""JSON controllers for pools, backends and personal API tokens."""

from __future__ import annotations

import msgspec
from litestar import Controller, delete, get, patch, post, put
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
from app.pools.config import PoolConfigIn, PoolPatch
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

    @get("/", summary="Pools you may use, with their configuration", responses=problems())
    async def list_pools(
        self,
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> PoolPage:
        listed = page_of(await pools.summaries(principal), limit, cursor)
        return PoolPage(listed["items"], listed["next_cursor"])

    @post(
        "/",
        status_code=201,
        summary="Create a pool (pool:Admin on it), optionally with its configuration",
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
        await pools.create_pool(data.name, data.description, config=data.config())
        return await _pool(pools, principal, data.name)

    @get("/{name:str}", summary="One pool and its configuration", responses=problems(404))
    async def get_pool(
        self,
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        name: str = text_query(64),
    ) -> PoolOut:
        return await _pool(pools, principal, name)

    @put(
        "/{name:str}",
        summary="Replace a pool's configuration (pool:Admin on it)",
        description="What GET gives can be sent back unchanged: its read-only fields (name, "
        "backends, queued_groups) are ignored. A field left out takes its default.",
        responses=problems(403, 404, 422),
    )
    async def put_pool(
        self,
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        note: NamedDependency[Note],
        data: JSONBody[PoolConfigIn],
        name: str = text_query(64),
    ) -> PoolOut:
        note.target = name
        await _may_administer(pools, principal, name)
        config = data.config()
        await pools.configure(name, lambda _: config)
        return await _pool(pools, principal, name)

    @patch(
        "/{name:str}",
        summary="Change only the named top-level fields of a pool's configuration (pool:Admin)",
        responses=problems(403, 404, 422),
    )
    async def patch_pool(
        self,
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        note: NamedDependency[Note],
        data: JSONBody[PoolPatch],
        name: str = text_query(64),
    ) -> PoolOut:
        note.target = name
        await _may_administer(pools, principal, name)
        await pools.configure(name, data.applied_to)
        return await _pool(pools, principal, name)


async def _pool(pools: PoolService, principal: Principal, name: str) -> PoolOut:
    """The pool as the caller may see it: 404 where it may not list it (or there is none)."""
    found = await pools.summaries(principal, only=name)
    if not found:
        raise NotFound(f"pool '{name}' does not exist")
    return found[0]


async def _may_administer(pools: PoolService, principal: Principal, name: str) -> None:
    """404 for a pool the caller may not list (its existence is not told), 403 without
    pool:Admin on it."""
    await _pool(pools, principal, name)
    require(principal, "pool:Admin", pool_resource(name))


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
