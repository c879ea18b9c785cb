"""Typed settings for the control plane, read once from ``GANTRY_*`` environment variables."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ("Settings", "SettingsError", "get_settings")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _int(env: dict[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def public_paths(raw: str) -> tuple[str, ...]:
    """GANTRY_AUTH_PUBLIC_PATHS: comma-separated path prefixes that need no identity. None may
    lie under /api or cover an /api path (``/``, ``/ap``): the API is never opened this way."""
    out = []
    for prefix in (p.strip() for p in raw.split(",")):
        if not prefix:
            continue
        if not prefix.startswith("/") or any(c in prefix for c in "\x00?#"):
            raise SettingsError(
                f"GANTRY_AUTH_PUBLIC_PATHS: {prefix!r} is not a path prefix (start it with /)"
            )
        if prefix.startswith("/api") or "/api/".startswith(prefix):
            raise SettingsError(
                f"GANTRY_AUTH_PUBLIC_PATHS: {prefix!r} would open paths under /api, which "
                "always need an identity"
            )
        out.append(prefix)
    return tuple(out)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(env: dict[str, str], name: str, default: float) -> float:
    """Seconds, or a number with a unit: ``90s``, ``15m``, ``12h``, ``365d``."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    unit = _UNITS.get(raw[-1].lower()) if raw[-1].isalpha() else 1
    number = raw[:-1] if raw[-1].isalpha() else raw
    try:
        value = float(number) * unit if unit else float("nan")
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 100 * 365 * 86400:  # also refuses nan
        raise SettingsError(
            f"{name} must be a duration between 1s and 100 years such as 3600, 12h or 365d, "
            f"got {raw!r}"
        )
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float | None = None) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    # `not value >= minimum` also refuses nan.
    if minimum is not None and not value >= minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _secret(env: dict[str, str], name: str) -> str | None:
    """``NAME``, or the contents of the file named by ``NAME_FILE`` (which wins when set).

    A file (mode 0600) keeps a secret out of the process's environment, which every child
    inherits and ``/proc/<pid>/environ`` shows; `gantry dev` passes its secrets this way.
    """
    path = env.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise SettingsError(f"{name}_FILE: {path} is empty")
        return value
    return env.get(name) or None


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


_ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def _role_map(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """``GANTRY_OIDC_ROLE_MAP``: ``group=role,...``; a group may be named more than once."""
    pairs = []
    for item in (env.get("GANTRY_OIDC_ROLE_MAP") or "").split(","):
        if not item.strip():
            continue
        group, sep, role = item.partition("=")
        group, role = group.strip(), role.strip()
        if not sep or not group or not _ROLE.match(role):
            raise SettingsError(
                f"GANTRY_OIDC_ROLE_MAP must be group=role,... with role names of letters, "
                f"digits, '-' and '_'; got {item.strip()!r}"
            )
        pairs.append((group, role))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the control plane reads from its environment."""

    database_url: str | None
    data_dir: Path
    secret_key: str
    host: str = "127.0.0.1"
    port: int = 8080
    bootstrap_admin_token: str | None = None
    bootstrap_admin_password: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keep_alive: int = 75
    # Runner protocol timings (seconds).
    heartbeat_interval: float = 5.0
    lease_ttl: float = 30.0
    lease_grace: float = 60.0
    log_flush_interval: float = 0.2
    stream_max_lifetime: float = 300.0
    ping_interval: float = 15.0
    # Scheduling and loops.
    scheduler_interval: float = 1.0
    sweeper_interval: float = 2.0
    cancel_grace: float = 10.0
    default_exec_timeout: int = 60 * 24 * 3600
    default_queue_timeout: int = 60 * 24 * 3600
    # CPU seconds one spec may cost in a spec worker. 3, not 2: a legitimate 10,000-task
    # fan-in (the task limit) took 2.1 s of CPU on these 2-core machines and was refused.
    template_timeout: float = 3.0
    template_memory: int = 256 * 1024 * 1024
    max_tasks_per_workflow: int = 10_000  # inclusive; more is refused at submission and dry run
    db_pool_size: int = 20
    # Per-user limits (docs/security.md); 0 turns one off.
    max_queued_per_user: int = 1000
    max_submissions_per_minute: int = 120
    max_streams_per_user: int = 50
    max_searches_per_user: int = 2  # log searches running at once
    max_log_bytes_per_attempt: int = 1024**3
    # Finished workflows' logs are removed after this many days (0 keeps everything).
    retention_days: float = 30.0
    retention_interval: float = 3600.0
    # Browser sign-in (issue 7): failed sign-ins allowed per account and per client address
    # within the window (seconds) before 429; how long a session lives after its last change.
    sign_in_account_limit: int = 10
    sign_in_address_limit: int = 50
    sign_in_window: float = 900.0
    session_max_age: int = 7 * 24 * 3600
    # Personal tokens (the teams issue): the longest life one may be given, in seconds.
    token_max_lifetime: float = 365 * 86400.0
    # After a backend's token is rotated, the previous one works this long (seconds).
    token_rotation_grace: float = 3600.0
    max_tokens_per_user: int = 200  # 0: no limit
    # Path prefixes a deployment opens to callers without identity (never under /api).
    auth_public_paths: tuple[str, ...] = ()
    # Connections kept apart for the scheduler, the sweeper and the runner API, so requests
    # cannot starve them (app/db.py), and the statement timeouts (seconds) of both pools.
    db_reserve_pool_size: int = 10
    statement_timeout: float = 5.0
    background_statement_timeout: float = 60.0
    # Single sign-on (the teams issue; app/auth/oidc.py). No issuer: no OpenID Connect at all.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None  # the confidential client the browser sign-in uses
    oidc_client_secret: str | None = None
    oidc_cli_client_id: str | None = None  # the public client of the CLI's device flow
    oidc_scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_role_map: tuple[tuple[str, str], ...] = ()  # (group, role): roles the provider manages
    oidc_audience: str | None = (
        None  # the `aud` provider access tokens must carry, if not a client id
    )
    local_login: bool = True  # the password form and POST /login
    public_url: str | None = None  # None: http://HOST:PORT
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = _oidc_problem(self)
        if problem:
            raise SettingsError(problem)

    @property
    def base_url(self) -> str:
        """Where browsers reach the control plane (the OIDC callback is on it)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def oidc_callback(self) -> str:
        return f"{self.base_url}/auth/oidc/callback"

    @property
    def csrf_secret(self) -> str:
        return hashlib.sha256(b"gantry-csrf:" + self.secret_key.encode()).hexdigest()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("GANTRY_DATA_DIR") or ".gantry")
        secret = _secret(env, "GANTRY_SECRET_KEY") or _stored_secret(data_dir)
        return cls(
            database_url=_secret(env, "GANTRY_DATABASE_URL"),
            data_dir=data_dir,
            secret_key=secret,
            host=env.get("GANTRY_HOST") or "127.0.0.1",
            port=_int(env, "GANTRY_PORT", 8080),
            bootstrap_admin_token=_secret(env, "GANTRY_BOOTSTRAP_ADMIN_TOKEN"),
            bootstrap_admin_password=_secret(env, "GANTRY_BOOTSTRAP_ADMIN_PASSWORD"),
            certfile=env.get("GANTRY_TLS_CERTFILE") or None,
            keyfile=env.get("GANTRY_TLS_KEYFILE") or None,
            keep_alive=_int(env, "GANTRY_KEEP_ALIVE", 75),
            heartbeat_interval=_float(env, "GANTRY_HEARTBEAT_INTERVAL", 5.0),
            lease_ttl=_float(env, "GANTRY_LEASE_TTL", 30.0),
            lease_grace=_float(env, "GANTRY_LEASE_GRACE", 60.0),
            stream_max_lifetime=_float(env, "GANTRY_STREAM_MAX_LIFETIME", 300.0),
            ping_interval=_float(env, "GANTRY_PING_INTERVAL", 15.0),
            scheduler_interval=_float(env, "GANTRY_SCHEDULER_INTERVAL", 1.0),
            cancel_grace=_float(env, "GANTRY_CANCEL_GRACE", 10.0),
            db_pool_size=_int(env, "GANTRY_DB_POOL_SIZE", 20),
            max_queued_per_user=_int(env, "GANTRY_MAX_QUEUED_PER_USER", 1000, minimum=0),
            max_submissions_per_minute=_int(
                env, "GANTRY_MAX_SUBMISSIONS_PER_MINUTE", 120, minimum=0
            ),
            max_streams_per_user=_int(env, "GANTRY_MAX_STREAMS_PER_USER", 50, minimum=0),
            max_searches_per_user=_int(env, "GANTRY_MAX_SEARCHES_PER_USER", 2, minimum=0),
            max_log_bytes_per_attempt=_log_cap(env),
            retention_days=_float(env, "GANTRY_RETENTION_DAYS", 30.0, minimum=0),
            retention_interval=_float(env, "GANTRY_RETENTION_INTERVAL", 3600.0, minimum=1),
            sign_in_account_limit=_int(env, "GANTRY_SIGN_IN_ACCOUNT_LIMIT", 10, minimum=0),
            sign_in_address_limit=_int(env, "GANTRY_SIGN_IN_ADDRESS_LIMIT", 50, minimum=0),
            sign_in_window=_float(env, "GANTRY_SIGN_IN_WINDOW", 900.0, minimum=1),
            session_max_age=_int(env, "GANTRY_SESSION_MAX_AGE", 7 * 24 * 3600, minimum=60),
            token_max_lifetime=_duration(env, "GANTRY_TOKEN_MAX_LIFETIME", 365 * 86400.0),
            token_rotation_grace=_float(env, "GANTRY_TOKEN_ROTATION_GRACE", 3600.0, minimum=0),
            max_tokens_per_user=_int(env, "GANTRY_MAX_TOKENS_PER_USER", 200, minimum=0),
            auth_public_paths=public_paths(env.get("GANTRY_AUTH_PUBLIC_PATHS", "")),
            db_reserve_pool_size=_int(env, "GANTRY_DB_RESERVE_POOL_SIZE", 10, minimum=1),
            statement_timeout=_float(env, "GANTRY_STATEMENT_TIMEOUT", 5.0, minimum=0.1),
            background_statement_timeout=_float(
                env, "GANTRY_BACKGROUND_STATEMENT_TIMEOUT", 60.0, minimum=0.1
            ),
            max_tasks_per_workflow=_int(env, "GANTRY_MAX_TASKS_PER_WORKFLOW", 10_000, minimum=1),
            oidc_issuer=(env.get("GANTRY_OIDC_ISSUER") or "").strip().rstrip("/") or None,
            oidc_client_id=env.get("GANTRY_OIDC_CLIENT_ID") or None,
            oidc_client_secret=_secret(env, "GANTRY_OIDC_CLIENT_SECRET"),
            oidc_cli_client_id=env.get("GANTRY_OIDC_CLI_CLIENT_ID") or None,
            oidc_scopes=tuple(
                (env.get("GANTRY_OIDC_SCOPES") or "openid profile email groups").split()
            ),
            oidc_username_claim=env.get("GANTRY_OIDC_USERNAME_CLAIM") or "preferred_username",
            oidc_groups_claim=env.get("GANTRY_OIDC_GROUPS_CLAIM") or "groups",
            oidc_role_map=_role_map(env),
            oidc_audience=env.get("GANTRY_OIDC_AUDIENCE") or None,
            local_login=_bool(env, "GANTRY_LOCAL_LOGIN", True),
            public_url=(env.get("GANTRY_PUBLIC_URL") or "").strip() or None,
        )


def _oidc_problem(s: Settings) -> str | None:
    """Why this OpenID Connect configuration cannot work, or None. A half configuration is
    refused at start-up rather than found out at the first sign-in."""
    oidc_only = {
        "GANTRY_OIDC_CLIENT_ID": s.oidc_client_id,
        "GANTRY_OIDC_CLIENT_SECRET": s.oidc_client_secret,
        "GANTRY_OIDC_CLI_CLIENT_ID": s.oidc_cli_client_id,
        "GANTRY_OIDC_AUDIENCE": s.oidc_audience,
        "GANTRY_OIDC_ROLE_MAP": s.oidc_role_map,
    }
    if not s.oidc_issuer:
        given = [name for name, value in oidc_only.items() if value]
        if given:
            return f"{', '.join(given)} set without GANTRY_OIDC_ISSUER"
        if not s.local_login:
            return (
                "GANTRY_LOCAL_LOGIN=false needs GANTRY_OIDC_ISSUER: nobody could sign in "
                "in the browser"
            )
        return None
    parts = urlsplit(s.oidc_issuer)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        return f"GANTRY_OIDC_ISSUER must be an https URL, got {s.oidc_issuer!r}"
    if parts.query or parts.fragment:
        return "GANTRY_OIDC_ISSUER must not have a query or fragment"
    if not s.oidc_client_id:
        return "GANTRY_OIDC_ISSUER is set but GANTRY_OIDC_CLIENT_ID is not"
    if not s.oidc_client_secret:
        return (
            "GANTRY_OIDC_CLIENT_ID needs GANTRY_OIDC_CLIENT_SECRET (or _FILE): the browser "
            "sign-in uses a confidential client"
        )
    if "openid" not in s.oidc_scopes:
        return "GANTRY_OIDC_SCOPES must include openid"
    if s.public_url and urlsplit(s.public_url).scheme not in ("http", "https"):
        return f"GANTRY_PUBLIC_URL must be an http(s) URL, got {s.public_url!r}"
    return None


def _log_cap(env: dict[str, str]) -> int:
    value = _int(env, "GANTRY_MAX_LOG_BYTES_PER_ATTEMPT", 1024**3, minimum=0)
    # The runner API acknowledges a cut log at a far offset (app/runner_api/service.py).
    if not 0 <= value < 2**40:
        raise SettingsError("GANTRY_MAX_LOG_BYTES_PER_ATTEMPT must be between 0 and 2**40 - 1")
    return value


def _stored_secret(data_dir: Path) -> str:
    """A secret generated once and kept in the data directory, for single-machine use.

    Replicas must share ``GANTRY_SECRET_KEY``; without it each data directory has its own.
    """
    path = data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    import secrets

    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value)
    os.chmod(tmp, 0o600)
    with contextlib.suppress(FileExistsError):
        os.link(tmp, path)  # first writer wins when several processes start together
    tmp.unlink(missing_ok=True)
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return Settings.from_env()
