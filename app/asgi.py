"""create_app(): the one place that wires controllers, middleware, templates and the lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Litestar, MediaType, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.middleware import DefineMiddleware
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.flash import FlashConfig, FlashPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from app import templating
from app.auth.middleware import PUBLIC_PATHS, BearerExemptCSRFMiddleware, GantryAuthMiddleware
from app.auth.service import AuthService
from app.auth.views import AuthViews
from app.db import Database, Hub
from app.errors import DomainError, Invalid
from app.live.watch import WatchRegistry
from app.logs.service import LogService
from app.logs.views import LogViews
from app.logs.windows import Windows
from app.ops.api import healthz, metrics, readyz
from app.pools.api import BackendController, PoolController, TokenController
from app.pools.service import PoolService
from app.pools.views import PoolViews
from app.runner_api.api import RunnerController
from app.runner_api.service import RunnerService
from app.settings import Settings, get_settings
from app.spec.template import TemplateRenderer
from app.workflows.api import WorkflowController
from app.workflows.scheduler import Scheduler, Sweeper
from app.workflows.service import WorkflowService
from app.workflows.views import WorkflowViews

__all__ = ("create_app",)

log = logging.getLogger("gantry")
HERE = Path(__file__).parent


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    if not settings.database_url:
        raise RuntimeError(
            "GANTRY_DATABASE_URL is not set: `gantry serve` needs a PostgreSQL database "
            "(only `gantry dev` starts an embedded one)"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = Database(settings.database_url or "", settings.db_pool_size)
        await db.start()
        hub = Hub(settings.database_url or "")
        await hub.start()
        renderer = TemplateRenderer(
            settings.template_timeout,
            settings.template_memory,
            max_tasks=settings.max_tasks_per_workflow,
        )
        pools = PoolService(db, settings.lease_ttl)
        workflows = WorkflowService(
            db, pools, renderer, settings.default_exec_timeout, settings.default_queue_timeout
        )
        auth = AuthService(db)
        await auth.ensure_bootstrap(settings)
        loops = [
            Scheduler(db, hub, settings, settings.scheduler_interval),
            Sweeper(db, hub, settings, settings.sweeper_interval),
        ]
        state = app.state
        state.update(
            settings=settings,
            db=db,
            hub=hub,
            auth=auth,
            pools=pools,
            workflows=workflows,
            logs=LogService(db, hub, pools),
            log_windows=Windows(db, hub),
            runners=RunnerService(db, hub, settings),
            watches=WatchRegistry(hub, workflows.snapshot),
            loops=loops,
        )
        for loop in loops:
            loop.start()
        # What start-up built lives as long as the process: keep it out of the collector's
        # full passes, which otherwise stall the event loop ~100 ms whenever a request
        # allocates a lot (a 10,000-task plan; bench/hostile.py measures it).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            for loop in loops:
                await loop.stop()
            await state.watches.close()
            await hub.close()
            await db.close()
            renderer.close()

    session_config = CookieBackendConfig(
        secret=settings.session_secret,
        key="gantry_session",
        httponly=True,
        samesite="lax",
        secure=bool(settings.certfile),
        max_age=7 * 24 * 3600,
    )
    csrf_config = CSRFConfig(
        secret=settings.csrf_secret,
        cookie_name="gantry_csrf",
        cookie_secure=bool(settings.certfile),
        header_name="x-csrf-token",
        exclude=["^/healthz$", "^/readyz$"],
    )
    template_config = TemplateConfig(
        engine=JinjaTemplateEngine.from_environment(templating.environment(HERE / "templates"))
    )
    return Litestar(
        route_handlers=[
            WorkflowController,
            PoolController,
            BackendController,
            TokenController,
            RunnerController,
            AuthViews,
            LogViews,
            WorkflowViews,
            PoolViews,
            healthz,
            readyz,
            metrics,
            create_static_files_router(
                path="/static", directories=[HERE / "static"], name="static"
            ),
        ],
        middleware=[
            session_config.middleware,
            DefineMiddleware(GantryAuthMiddleware, exclude=PUBLIC_PATHS),
            DefineMiddleware(BearerExemptCSRFMiddleware, config=csrf_config),
        ],
        lifespan=[lifespan],
        state=State({"settings": settings}),
        template_config=template_config,
        plugins=[FlashPlugin(FlashConfig(template_config=template_config))],
        openapi_config=OpenAPIConfig(
            title="Gantry",
            version="1",
            description="Submit and watch OSMO-format workflows; runners connect over HTTP/2.",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        exception_handlers={
            DomainError: _domain_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        debug=False,
    )


def _is_api(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/schema", "/metrics"))


def _problem(status: int, title: str, detail: str, **extra: Any) -> Response[Any]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/problem+json",
    )


def _page(request: Request[Any, Any, Any], status: int, title: str, detail: str) -> Response[Any]:
    return Template(
        template_name="errors/error.html",
        context={"status": status, "title": title, "detail": detail},
        status_code=status,
        media_type=MediaType.HTML,
    )


def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    if _is_api(request):
        extra: dict[str, Any] = {}
        if isinstance(exc, Invalid):
            extra["errors"] = [i.as_dict() for i in exc.issues]
        return _problem(exc.status_code, exc.title, exc.detail, **extra)
    return _page(request, exc.status_code, exc.title, exc.detail)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, NotAuthorizedException):
        wants_html = "text/html" in request.headers.get("accept", "")
        if not _is_api(request) and request.method == "GET" and wants_html:
            return Redirect(path=f"/login?next={quote(request.url.path)}")
        title, detail = "Unauthorized", exc.detail
    elif isinstance(exc, PermissionDeniedException):
        title, detail = "Forbidden", exc.detail
    elif isinstance(exc, ValidationException):
        title = "Malformed request"
        detail = exc.detail
        errors = [
            {"path": str(e.get("key") or e.get("source") or ""), "line": None,
             "message": str(e.get("message"))}
            for e in (exc.extra or []) if isinstance(e, dict)
        ]  # fmt: skip
        if _is_api(request):
            return _problem(status, title, detail, errors=errors)
        return _page(request, status, title, detail)
    else:
        title, detail = exc.__class__.__name__.replace("Exception", "") or "Error", exc.detail
    if _is_api(request):
        return _problem(status, title, detail)
    return _page(request, status, title, detail)


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    detail = "Something went wrong on the server; it has been logged."
    if _is_api(request):
        return _problem(500, "Internal server error", detail)
    return _page(request, 500, "Internal server error", detail)
