"""Typed settings for the control plane, read once from ``GANTRY_*`` environment variables."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = ("Settings", "SettingsError", "get_settings")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


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
    template_timeout: float = 2.0
    template_memory: int = 256 * 1024 * 1024
    max_tasks_per_workflow: int = 10_000  # inclusive; more is refused at submission and dry run
    db_pool_size: int = 20
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def session_secret(self) -> bytes:
        """A 32-byte key for the session cookie, derived from the secret key."""
        return hashlib.sha256(b"gantry-session:" + self.secret_key.encode()).digest()

    @property
    def csrf_secret(self) -> str:
        return hashlib.sha256(b"gantry-csrf:" + self.secret_key.encode()).hexdigest()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("GANTRY_DATA_DIR") or ".gantry")
        secret = env.get("GANTRY_SECRET_KEY") or _stored_secret(data_dir)
        return cls(
            database_url=env.get("GANTRY_DATABASE_URL") or None,
            data_dir=data_dir,
            secret_key=secret,
            host=env.get("GANTRY_HOST") or "127.0.0.1",
            port=_int(env, "GANTRY_PORT", 8080),
            bootstrap_admin_token=env.get("GANTRY_BOOTSTRAP_ADMIN_TOKEN") or None,
            bootstrap_admin_password=env.get("GANTRY_BOOTSTRAP_ADMIN_PASSWORD") or None,
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
            max_tasks_per_workflow=_int(env, "GANTRY_MAX_TASKS_PER_WORKFLOW", 10_000),
        )


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
