"""Run one runner until SIGTERM: ``python -m runner`` or ``gantry runner``.

Environment: GANTRY_SERVER_URL, GANTRY_BACKEND, GANTRY_RUNNER_TOKEN (or GANTRY_RUNNER_TOKEN_FILE,
a file holding it, so that it stays out of the environment), GANTRY_EXECUTOR (`local`),
GANTRY_RUNNER_SLOTS (default 16), GANTRY_RUNNER_DATA_DIR (default `.gantry/runner-<backend>`),
GANTRY_SANDBOX (`auto`, `bwrap` or `none`), GANTRY_SANDBOX_BWRAP and GANTRY_SANDBOX_PASTA (their
paths; default: found on PATH; an empty pasta path switches outbound network off),
GANTRY_SANDBOX_UID and GANTRY_SANDBOX_GID (whom a root runner runs tasks as; default 65534),
GANTRY_DATA_DIR (the control plane's data directory on this host, masked from tasks),
GANTRY_RUNNER_PLATFORM, GANTRY_TLS_CA (a CA bundle for https), GANTRY_CLUSTER_ID; for `local`:
GANTRY_MAX_ATTEMPT_DISK_BYTES (default 10 GiB, 0 = no limit), GANTRY_ATTEMPT_DISK_CHECK_INTERVAL
(seconds, default 10) and GANTRY_RETENTION_DAYS (default 30, 0 = keep every attempt directory)
(runner/executors/disk.py), GANTRY_TASK_MAX_PROCESSES (an attempt's processes, default 1024;
runner/executors/cgroups.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from runner.client import RunnerClient
from runner.executors.base import Executor
from runner.executors.cgroups import DEFAULT_MAX_PROCESSES
from runner.executors.disk import (
    DEFAULT_DISK_LIMIT,
    DEFAULT_FILE_LIMIT,
    DiskLimit,
    keep_removing_old_attempts,
)
from runner.executors.local import LocalExecutor
from runner.loop import Runner

__all__ = ("main", "run")

log = logging.getLogger("runner")


class ConfigError(Exception):
    pass


def _require(env: dict[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _number(
    env: dict[str, str],
    name: str,
    default: float,
    kind: type[float] | type[int],
    minimum: float = 0,
) -> Any:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def build(env: dict[str, str]) -> tuple[RunnerClient, Executor, str, str]:
    server = _require(env, "GANTRY_SERVER_URL")
    backend = _require(env, "GANTRY_BACKEND")
    token = _secret(env, "GANTRY_RUNNER_TOKEN")
    kind = env.get("GANTRY_EXECUTOR", "local")
    try:
        slots = int(env.get("GANTRY_RUNNER_SLOTS") or 16)
    except ValueError:
        raise ConfigError("GANTRY_RUNNER_SLOTS must be an integer") from None
    if kind == "local":
        data = Path(env.get("GANTRY_RUNNER_DATA_DIR") or f".gantry/runner-{backend}")
        sandbox = env.get("GANTRY_SANDBOX", "auto")
        if sandbox not in ("auto", "bwrap", "none"):
            raise ConfigError("GANTRY_SANDBOX must be auto, bwrap or none")
        try:
            uid = int(env.get("GANTRY_SANDBOX_UID") or 65534)
            gid = int(env.get("GANTRY_SANDBOX_GID") or 65534)
        except ValueError:
            raise ConfigError(
                "GANTRY_SANDBOX_UID and GANTRY_SANDBOX_GID must be integers"
            ) from None
        if uid <= 0 or gid <= 0:
            raise ConfigError("GANTRY_SANDBOX_UID and GANTRY_SANDBOX_GID must not be 0 (root)")
        control_data = env.get("GANTRY_DATA_DIR")
        try:
            local = LocalExecutor(
                data,
                slots,
                sandbox=sandbox,
                platform=env.get("GANTRY_RUNNER_PLATFORM") or None,
                bwrap=env.get("GANTRY_SANDBOX_BWRAP"),
                pasta=env.get("GANTRY_SANDBOX_PASTA"),
                sandbox_uid=uid,
                sandbox_gid=gid,
                mask=(Path(control_data),) if control_data else (),
                max_processes=_number(
                    env, "GANTRY_TASK_MAX_PROCESSES", DEFAULT_MAX_PROCESSES, int, minimum=1
                ),
            )
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from None
        local.disk = DiskLimit(
            _number(env, "GANTRY_MAX_ATTEMPT_DISK_BYTES", DEFAULT_DISK_LIMIT, int),
            # Each check walks every running attempt's directory: not more than once a second.
            _number(env, "GANTRY_ATTEMPT_DISK_CHECK_INTERVAL", 10.0, float, minimum=1),
            _number(env, "GANTRY_MAX_ATTEMPT_FILES", DEFAULT_FILE_LIMIT, int),
        )
        _log_isolation(local)
        executor: Executor = local
    elif kind == "kubernetes":
        from runner.executors.kubernetes.config import KubeSettings, KubeSettingsError
        from runner.executors.kubernetes.executor import KubernetesExecutor

        try:
            kube = KubeSettings.from_env(env, backend)
        except KubeSettingsError as exc:
            raise ConfigError(str(exc)) from None
        data = Path(env.get("GANTRY_RUNNER_DATA_DIR") or f".gantry/runner-{backend}")
        executor = KubernetesExecutor(kube, data, slots)
    else:
        raise ConfigError(f"GANTRY_EXECUTOR must be `local` or `kubernetes`, not {kind!r}")
    verify: str | bool = env.get("GANTRY_TLS_CA") or True
    return (
        RunnerClient(server, token, verify=verify),
        executor,
        backend,
        env.get("GANTRY_CLUSTER_ID", ""),
    )


def _secret(env: dict[str, str], name: str) -> str:
    """``NAME`` or the contents of the file ``NAME_FILE`` (the file keeps it out of ``environ``)."""
    path = env.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE: {path} is empty")
        return value
    return _require(env, name)


def _log_isolation(executor: LocalExecutor) -> None:
    if executor.sandbox == "none":
        log.warning(
            "GANTRY_SANDBOX=none: tasks run unsandboxed as the runner's user and can read "
            "whatever it can (its token, other tasks' files); use it only where every user "
            "is trusted"
        )
    elif executor.bwrap is None:
        log.warning(
            "bubblewrap (bwrap) is not installed: only administrators' tasks run here, "
            "others fail at once; install it with `apt-get install bubblewrap passt`"
        )
    if executor.limits_unenforced is not None:
        log.warning(
            "task resources are not enforced: %s; one task can exhaust this host's memory, "
            "CPU and processes (and a control plane beside it)",
            executor.limits_unenforced,
        )
    log.info("task isolation: %s", executor.isolation)


async def run(env: dict[str, str]) -> None:
    client, executor, backend, cluster_id = build(env)
    runner = Runner(client, executor, backend, cluster_id=cluster_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    retention: asyncio.Task[None] | None = None
    if isinstance(executor, LocalExecutor):
        days = _number(env, "GANTRY_RETENTION_DAYS", 30.0, float)
        retention = asyncio.create_task(keep_removing_old_attempts(executor.root, days))
    try:
        await runner.run(stop)
    finally:
        if retention is not None:
            retention.cancel()
        await executor.close()
        await client.close()


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("GANTRY_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        asyncio.run(run(dict(os.environ)))
    except ConfigError as exc:
        print(f"gantry runner: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
