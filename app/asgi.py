"""create_app(): the one place that wires controllers, middleware, templates and the lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import traceback
from collections.abc import AsyncIterator
from html import escape
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
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
from litestar.logging.config import LoggingConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.flash import FlashConfig, FlashPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from app import templating
from app.access.api import MeController, RoleController, UserController
from app.access.service import AccessListener, RoleCache, RoleService, UserService
from app.access.views import AccessViews
from app.audit.api import AuditController
from app.audit.middleware import AuditMiddleware
from app.audit.service import AuditService
from app.audit.views import AuditViews
from app.auth.api import auth_config, password_token, server_version
from app.auth.middleware import PUBLIC_PATHS, BearerExemptCSRFMiddleware, GantryAuthMiddleware
from app.auth.oidc import OidcProvider
from app.auth.oidc_bearer import ProviderTokens
from app.auth.oidc_users import ProviderUsers
from app.auth.oidc_views import OidcViews
from app.auth.service import AuthService
from app.auth.sessions import COOKIE, STORE_NAME, PostgresSessionStore, WebSessionConfig
from app.auth.views import AuthViews
from app.bounds import NO_NUL
from app.db import Database, Hub
from app.deps import clashes, dependencies
from app.errors import DomainError, Invalid
from app.limits import (
    LimitExceeded,
    StreamSlotMiddleware,
    StreamSlots,
    SubmissionLimits,
    limit_exceeded,
)
from app.live.watch import WatchRegistry
from app.logs.service import LogService
from app.logs.views import LogViews
from app.logs.windows import Windows
from app.ops.api import healthz, metrics, readyz
from app.pools.api import BackendController, PoolController, TokenController
from app.pools.service import PoolService
from app.pools.views import PoolViews
from app.problems import describe_request_bodies
from app.runner_api.api import RunnerController
from app.runner_api.service import RunnerService
from app.settings import Settings, get_settings
from app.spec.template import TemplateRenderer
from app.web import csrf_token_of, favicon, security_headers, signed_in
from app.workflows.api import WorkflowController
from app.workflows.scheduler import Retention, Scheduler, Sweeper
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
        db = Database(
            settings.database_url or "",
            settings.db_pool_size,
            statement_timeout=settings.statement_timeout,
        )
        await db.start()
        # The scheduler, the sweeper and the runner API work on a pool of their own.
        reserve = Database(
            settings.database_url or "",
            settings.db_reserve_pool_size,
            statement_timeout=settings.background_statement_timeout,
            bind_tables=False,
            name="reserve",
        )
        await reserve.start()
        hub = Hub(settings.database_url or "")
        await hub.start()
        renderer = TemplateRenderer(
            settings.template_timeout,
            settings.template_memory,
            max_tasks=settings.max_tasks_per_workflow,
        )
        pools = PoolService(db, settings.lease_ttl, settings.max_tasks_per_workflow)
        workflows = WorkflowService(
            db, pools, renderer, settings.default_exec_timeout, settings.default_queue_timeout
        )
        workflows.limits = SubmissionLimits(db, settings)
        role_cache = RoleCache(db)
        auth = AuthService(db, role_cache)
        auth.max_tokens = settings.max_tokens_per_user
        await auth.ensure_bootstrap(settings)
        # Single sign-on, where an issuer is configured (app/auth/oidc*.py).
        oidc = OidcProvider(settings) if settings.oidc_issuer else None
        provider_users = ProviderUsers(db, settings)
        provider_tokens = ProviderTokens(oidc, provider_users, auth) if oidc else None
        if oidc is not None:
            try:
                await oidc.metadata()  # early warning only: sign-in retries discovery
            except Exception as exc:  # the provider may come up later
                log.warning("the identity provider at %s is not reachable yet: %s",
                            settings.oidc_issuer, exc)  # fmt: skip
        # Every replica forgets cached roles and tokens when one of them changes (app/access).
        runner_auth = AuthService(reserve)
        caches = [c for c in (role_cache, auth, runner_auth, provider_tokens) if c is not None]
        access_listener = AccessListener(hub, *caches)
        access_listener.start()
        loops = [
            Scheduler(reserve, hub, settings, settings.scheduler_interval),
            Sweeper(reserve, hub, settings, settings.sweeper_interval),
            Retention(reserve, hub, settings, settings.retention_interval),
        ]
        state = app.state
        state.update(
            settings=settings,
            db=db,
            reserve=reserve,
            hub=hub,
            auth=auth,
            users=UserService(db, auth),
            role_service=RoleService(db),
            audit=AuditService(db),
            runner_auth=runner_auth,
            oidc=oidc,
            provider_users=provider_users,
            provider_tokens=provider_tokens,
            pools=pools,
            workflows=workflows,
            logs=LogService(db, hub, pools),
            log_windows=Windows(db, hub),
            searches=StreamSlots(
                settings.max_searches_per_user,
                "log searches running",
                "GANTRY_MAX_SEARCHES_PER_USER",
                "wait for one to finish",
                "concurrent log searches",
            ),
            runners=RunnerService(reserve, hub, settings),
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
        # Full passes only after 100 (not 10) collections of the middle generation, some
        # 700,000 allocations: a 10,000-task plan (100,000 containers, alive for the request)
        # otherwise set off several passes of 30-50 ms each, every one a stall of the loop
        # however little of it finds garbage (measured by bench/hostile.py, docs/security).
        gc.set_threshold(700, 10, 100)
        try:
            yield
        finally:
            for loop in loops:
                await loop.stop()
            await access_listener.stop()
            await state.watches.close()
            await hub.close()
            await db.close()
            await reserve.close()
            renderer.close()
            if oidc is not None:
                await oidc.close()

    app_state = State({"settings": settings})
    # Sessions live in PostgreSQL (app/auth/sessions.py): signing out ends one on every replica.
    session_store = PostgresSessionStore(app_state)
    session_config = WebSessionConfig(
        key=COOKIE,
        store=STORE_NAME,
        httponly=True,
        samesite="lax",
        secure=bool(settings.certfile),
        max_age=settings.session_max_age,
        exclude=["^/static/", "^/favicon.ico$", "^/healthz$", "^/readyz$"],
    )
    csrf_config = CSRFConfig(
        secret=settings.csrf_secret,
        cookie_name="gantry_csrf",
        cookie_secure=bool(settings.certfile),
        header_name="x-csrf-token",
        # A password for a token needs no CSRF token: it carries its own credentials and
        # acts on no session (the CLI has none to send).
        exclude=["^/healthz$", "^/readyz$", "^/api/v1/auth/token$"],
    )
    template_config = TemplateConfig(
        engine=JinjaTemplateEngine.from_environment(templating.environment(HERE / "templates"))
    )
    app = Litestar(
        route_handlers=[
            WorkflowController,
            PoolController,
            BackendController,
            TokenController,
            MeController,
            UserController,
            RoleController,
            AccessViews,
            AuditController,
            RunnerController,
            AuthViews,
            OidcViews,
            auth_config,
            server_version,
            password_token,
            LogViews,
            WorkflowViews,
            PoolViews,
            AuditViews,
            healthz,
            readyz,
            metrics,
            favicon,
            create_static_files_router(
                path="/static", directories=[HERE / "static"], name="static"
            ),
        ],
        middleware=[
            session_config.middleware,
            # Outside authentication and CSRF, so that their refusals are recorded too; it
            # reads the principal authentication leaves in the scope (app/audit/middleware.py).
            AuditMiddleware(),
            DefineMiddleware(
                GantryAuthMiddleware,
                exclude=[*PUBLIC_PATHS, *("^" + re.escape(p) for p in settings.auth_public_paths)],
            ),
            DefineMiddleware(BearerExemptCSRFMiddleware, config=csrf_config),
            StreamSlotMiddleware(StreamSlots(settings.max_streams_per_user)),
        ],
        dependencies=dependencies(),
        lifespan=[lifespan],
        # Litestar's default config takes over the root logger (its own format, level INFO),
        # so GANTRY_LOG_LEVEL did nothing and `gantry dev` printed the server's banner.
        logging_config=LoggingConfig(configure_root_logger=False),
        on_startup=[describe_request_bodies],
        state=app_state,
        stores={STORE_NAME: session_store},
        before_send=[security_headers],
        template_config=template_config,
        plugins=[FlashPlugin(FlashConfig(template_config=template_config))],
        openapi_config=OpenAPIConfig(
            title="Gantry",
            version="1",
            description="Submit and watch OSMO-format workflows; runners connect over HTTP/2.",
            path="/schema",
            render_plugins=[
                # Swagger UI 5.18.2 from npm's swagger-ui-dist, vendored like htmx: the page
                # must work without reaching a CDN (air-gapped clusters, and our CSP).
                SwaggerRenderPlugin(
                    js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
                    css_url="/static/vendor/swagger-ui/swagger-ui.css",
                    standalone_preset_js_url=(
                        "/static/vendor/swagger-ui/swagger-ui-standalone-preset.js"
                    ),
                    favicon="<link rel='icon' type='image/svg+xml' href='/static/favicon.svg'>",
                )
            ],
        ),
        before_request=_refuse_nul_in_url,
        exception_handlers={
            DomainError: _domain_error,
            LimitExceeded: limit_exceeded,
            asyncpg.QueryCanceledError: _statement_timeout,
            HTTPException: _http_error,
            RecursionError: _too_deep,
            Exception: _unexpected_error,
        },
        debug=False,
    )
    if found := clashes(app):
        raise RuntimeError(f"body fields named like a dependency: {', '.join(found)}")
    return app


def _refuse_nul_in_url(request: Request[Any, Any, Any]) -> None:
    """Refuse a NUL character anywhere in the path or the query, naming the parameter.

    PostgreSQL cannot store NUL in text and the filesystem cannot name a file with one, so no
    handler can use such a value; checking here covers every route, including ones whose
    parameters carry no pattern of their own (each route's own bounds are in app/bounds.py).
    """
    problems = [
        (name, "path")
        for name, value in request.path_params.items()
        if isinstance(value, str) and "\x00" in value
    ]
    if not problems and "\x00" in request.url.path:
        problems.append(("path", "path"))
    problems += [
        (name, "query")
        for name, value in request.query_params.multi_items()
        if "\x00" in name or "\x00" in value
    ]
    if problems:
        raise ValidationException(
            detail="; ".join(f"{name} must not contain NUL characters" for name, _ in problems),
            extra=[
                {"key": name, "source": source, "message": "must not contain NUL characters"}
                for name, source in problems
            ],
        )


def _is_api(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/schema", "/metrics"))


def _problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[Any]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def _page(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """An error page with the navigation, rendered here so that a failure cannot cascade.

    It may be answering for the router (an unknown path, a wrong method), before any
    middleware ran: no session, no CSRF token, no user; the template copes with that.
    """
    token = csrf_token_of(request)
    context = {
        "request": request,
        "status": status,
        "title": title,
        "detail": detail,
        "user": signed_in(request),
        "csrf_token": token,
        "csrf_input": f'<input type="hidden" name="_csrf_token" value="{escape(token)}">',
        "error_page": True,
    }
    try:
        engine = request.app.template_engine
        assert engine is not None
        body = engine.get_template("errors/error.html").render(**context)
    except Exception:
        log.exception("the error page for %s %s failed", request.method, request.url.path)
        body = f"<!doctype html><title>{status}</title><h1>{status} {title}</h1>"
    return Response(body, status_code=status, media_type=MediaType.HTML, headers=headers)


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
        errors = [
            {"path": str(e.get("key") or e.get("source") or ""), "line": None,
             "message": _readable(str(e.get("message")))}
            for e in (exc.extra or []) if isinstance(e, dict)
        ]  # fmt: skip
        # Name the fields in the detail too: "Validation failed for POST /x" says nothing.
        detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors) or exc.detail
        if _is_api(request):
            return _problem(status, title, detail, errors=errors)
        return _page(request, status, title, detail)
    else:
        title, detail = _title(status), exc.detail
        if status == 404 and detail in ("", "Not Found"):
            detail = f"There is nothing at {request.url.path}."
        elif status == 405:
            detail = f"{request.url.path} does not take {request.method} requests."
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"} or None
    if _is_api(request):
        return _problem(status, title, detail, headers=headers)
    return _page(request, status, title, detail, headers=headers)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _readable(message: str) -> str:
    """msgspec's message for the NUL-free pattern (app/bounds.py), and Litestar's for a
    missing body (a KeyError's text, "'data'"), in words."""
    if f"matching regex {NO_NUL!r}" in message:
        return "must not contain NUL characters"
    if message == "'data'":
        return "this request needs a body (JSON: see /schema)"
    return message


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """A body nested deeper than the decoder recurses (msgspec raises RecursionError for the
    ``Any``-typed `set` values): the client's mistake, answered 400 without a traceback."""
    log.warning("refused a too deeply nested request on %s %s", request.method, request.url.path)
    detail = "the request is nested too deeply to read; flatten it"
    if _is_api(request):
        return _problem(400, "Malformed request", detail, errors=[
            {"path": "", "line": None, "message": detail}])  # fmt: skip
    return _page(request, 400, "Malformed request", detail)


def _statement_timeout(
    request: Request[Any, Any, Any], exc: asyncpg.QueryCanceledError
) -> Response[Any]:
    # A statement ran past GANTRY_STATEMENT_TIMEOUT (or waited that long for a lock): the
    # server is busy, not broken; the client may try again.
    log.warning("statement timed out on %s %s: %s", request.method, request.url.path, exc)
    title = "The database is busy"
    detail = "The request took too long in the database and was stopped; try again shortly."
    response = (
        _problem(503, title, detail) if _is_api(request) else _page(request, 503, title, detail)
    )
    response.headers["retry-after"] = "5"
    return response


def _parsing_error(exc: BaseException) -> ValueError | None:
    """A ValueError raised while Litestar turned the request into the handler's arguments.

    msgspec raises a plain ValueError, not a ValidationError, for a time past the year 9999
    given as a number of seconds (``submitted_after=253402300800``, ``"expires_at":
    253402300800``), so Litestar passed it on as a 500 (a hostile review). Only errors raised
    from within that parsing count: anywhere else a ValueError is a bug and stays a 500."""
    if isinstance(exc, BaseExceptionGroup):
        found = [_parsing_error(e) for e in exc.exceptions]
        return next((e for e in found if e is not None), None)
    if not isinstance(exc, ValueError):
        return None
    frames = [f.f_code.co_filename for f, _ in traceback.walk_tb(exc.__traceback__)]
    return exc if any(f.endswith(_PARSING_MODULES) for f in frames) else None


_PARSING_MODULES = (
    os.path.join("litestar", "_signature", "model.py"),
    os.path.join("litestar", "serialization", "msgspec_hooks.py"),
)


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if (parsing := _parsing_error(exc)) is not None:
        return _http_error(
            request,
            ValidationException(
                detail=str(parsing),
                extra=[{"key": "", "source": "request", "message": f"out of range: {parsing}"}],
            ),
        )
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    detail = "Something went wrong on the server; it has been logged."
    if _is_api(request):
        return _problem(500, "Internal server error", detail)
    return _page(request, 500, "Internal server error", detail)
