"""A pool's configuration as administrators set it (``PUT``/``PATCH /api/v1/pools/{name}``)
and as submission and the scheduler read it, stored as one JSON document (``pool.config``).

Every field has a default, and what ``GET`` gives can be sent back unchanged: its read-only
fields (``name``, ``backends``, ``queued_groups``) are accepted and ignored. Only what Gantry
enforces is accepted; the fields of the semantics issue that are not enforced yet (quotas,
exit actions, retries, mounts, privileged and host-network tasks) are refused by name.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec

from app.bounds import NO_NUL, Description, Name
from app.errors import Invalid
from app.spec.errors import SpecIssue
from app.spec.quantities import MAX_DURATION

__all__ = (
    "DEFAULT_START_TIMEOUT",
    "NOT_YET",
    "PlatformConfig",
    "PoolConfig",
    "PoolConfigIn",
    "PoolPatch",
    "ResourceDefaults",
    "check_config",
    "read_config",
)

# OSMO's `max_pod_restart_limit` default: an attempt may take 30 minutes from placed to running.
DEFAULT_START_TIMEOUT = 30 * 60

Seconds = Annotated[int, msgspec.Meta(ge=1, le=MAX_DURATION)]
Count = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Cpu = Annotated[float, msgspec.Meta(ge=0, le=100_000)]
Bytes = Annotated[int, msgspec.Meta(ge=0, le=2**60)]
Gpus = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
Text = Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)]

# Fields the semantics issue adds that nothing enforces yet: refused rather than ignored.
NOT_YET = {
    "quota": "GPU quotas",
    "default_exit_actions": "exit actions",
    "max_retry_per_task": "retries of failed tasks",
    "node_selector": "node selectors of the pool (the runner's GANTRY_K8S_PLATFORMS sets them)",
    "tolerations": "tolerations of the pool (the runner's GANTRY_K8S_PLATFORMS sets them)",
    "privileged_allowed": "privileged tasks",
    "host_network_allowed": "host-network tasks",
    "allowed_mounts": "volume mounts",
    "default_mounts": "volume mounts",
}


class PlatformConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A kind of node in the pool; nodes report theirs (the `gantry.io/platform` label)."""

    description: Text = ""
    # Not enforced yet (see NOT_YET): refused when given, never stored.
    node_selector: Any = msgspec.UNSET
    tolerations: Any = msgspec.UNSET
    privileged_allowed: Any = msgspec.UNSET
    host_network_allowed: Any = msgspec.UNSET
    allowed_mounts: Any = msgspec.UNSET
    default_mounts: Any = msgspec.UNSET


class ResourceDefaults(msgspec.Struct, forbid_unknown_fields=True):
    """What a task gets when its spec names no resources (cores, bytes, GPUs)."""

    cpu: Cpu | None = None
    memory: Bytes | None = None
    gpu: Gpus | None = None
    storage: Bytes | None = None


class PoolConfig(msgspec.Struct, forbid_unknown_fields=True):
    """What a pool's administrators decide."""

    description: Description = ""
    platforms: Annotated[dict[Name, PlatformConfig], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=dict
    )
    # The platform of tasks that name none, and of nodes that report none.
    default_platform: Name | None = None
    default_resources: ResourceDefaults = msgspec.field(default_factory=ResourceDefaults)
    # Seconds; a spec's own timeout may not pass the maximum. None: the service's default.
    default_exec_timeout: Seconds | None = None
    max_exec_timeout: Seconds | None = None
    default_queue_timeout: Seconds | None = None
    max_queue_timeout: Seconds | None = None
    # Placed on a node (INITIALIZING: pulling the image, starting) for longer than this
    # without running: the attempt ends FAILED_START_TIMEOUT (exit code 3005).
    start_timeout: Seconds = DEFAULT_START_TIMEOUT
    # At most this many tasks per workflow here (None: GANTRY_MAX_TASKS_PER_WORKFLOW).
    max_tasks_per_workflow: Count | None = None
    # No new dispatch; what runs goes on.
    maintenance: bool = False


class PoolConfigIn(PoolConfig, forbid_unknown_fields=True):
    """A pool's configuration as ``PUT`` takes it: what ``GET`` gives is accepted unchanged
    (its read-only fields are ignored), and the fields not enforced yet are refused by name."""

    name: Any = None  # read-only: the path names the pool
    backends: Any = None  # read-only
    queued_groups: Any = None  # read-only
    quota: Any = msgspec.UNSET
    default_exit_actions: Any = msgspec.UNSET
    max_retry_per_task: Any = msgspec.UNSET

    def config(self) -> PoolConfig:
        refuse_not_yet(self)
        fields = {f: getattr(self, f) for f in PoolConfig.__struct_fields__}
        return PoolConfig(**fields)


class PoolPatch(msgspec.Struct, forbid_unknown_fields=True):
    """``PATCH``: only the top-level fields it names change (null sets a field to its default
    where the field may be null). Every field of PoolConfig, as UNSET when not sent
    (tests/unit/test_pool_config.py holds that none is missing)."""

    description: Description | msgspec.UnsetType = msgspec.UNSET
    platforms: (
        Annotated[dict[Name, PlatformConfig], msgspec.Meta(max_length=100)] | msgspec.UnsetType
    ) = msgspec.UNSET
    default_platform: Name | msgspec.UnsetType | None = msgspec.UNSET
    default_resources: ResourceDefaults | msgspec.UnsetType = msgspec.UNSET
    default_exec_timeout: Seconds | msgspec.UnsetType | None = msgspec.UNSET
    max_exec_timeout: Seconds | msgspec.UnsetType | None = msgspec.UNSET
    default_queue_timeout: Seconds | msgspec.UnsetType | None = msgspec.UNSET
    max_queue_timeout: Seconds | msgspec.UnsetType | None = msgspec.UNSET
    start_timeout: Seconds | msgspec.UnsetType = msgspec.UNSET
    max_tasks_per_workflow: Count | msgspec.UnsetType | None = msgspec.UNSET
    maintenance: bool | msgspec.UnsetType = msgspec.UNSET
    name: Any = None  # read-only, ignored
    backends: Any = None
    queued_groups: Any = None
    quota: Any = msgspec.UNSET
    default_exit_actions: Any = msgspec.UNSET
    max_retry_per_task: Any = msgspec.UNSET

    def applied_to(self, config: PoolConfig) -> PoolConfig:
        refuse_not_yet(self)
        changes = {
            f: getattr(self, f)
            for f in PoolConfig.__struct_fields__
            if getattr(self, f) is not msgspec.UNSET
        }
        return msgspec.structs.replace(config, **changes)


def refuse_not_yet(body: PoolConfigIn | PoolPatch) -> None:
    """Refuse, by name, the fields the semantics issue adds that nothing enforces yet."""
    given = [
        (field, field)
        for field in NOT_YET
        if field in body.__struct_fields__ and getattr(body, field) is not msgspec.UNSET
    ]
    platforms = body.platforms if isinstance(body.platforms, dict) else {}
    given += [
        (f"platforms.{name}.{field}", field)
        for name, platform in platforms.items()
        for field in NOT_YET
        if field in PlatformConfig.__struct_fields__
        and getattr(platform, field) is not msgspec.UNSET
    ]
    issues = [
        SpecIssue(path, None, f"{NOT_YET[field]}: not supported yet; leave `{field}` out")
        for path, field in given
    ]
    if issues:
        raise Invalid(issues[0].message, issues)


def check_config(config: PoolConfig, max_tasks: int) -> None:
    """422 for a configuration that contradicts itself or the service's own limits."""
    issues = []
    if config.default_platform is not None and config.default_platform not in config.platforms:
        issues.append(
            SpecIssue(
                "default_platform",
                None,
                f"default_platform '{config.default_platform}' is not one of the pool's "
                "platforms; add it to `platforms` first",
            )
        )
    for kind in ("exec", "queue"):
        default = getattr(config, f"default_{kind}_timeout")
        most = getattr(config, f"max_{kind}_timeout")
        if default is not None and most is not None and default > most:
            issues.append(
                SpecIssue(
                    f"default_{kind}_timeout",
                    None,
                    f"default_{kind}_timeout ({default} s) is longer than max_{kind}_timeout "
                    f"({most} s)",
                )
            )
    if config.max_tasks_per_workflow is not None and config.max_tasks_per_workflow > max_tasks:
        issues.append(
            SpecIssue(
                "max_tasks_per_workflow",
                None,
                f"max_tasks_per_workflow {config.max_tasks_per_workflow} is more than the "
                f"service allows ({max_tasks}, GANTRY_MAX_TASKS_PER_WORKFLOW)",
            )
        )
    if issues:
        raise Invalid(issues[0].message, issues)


_decode = msgspec.json.Decoder(PoolConfig)
log = logging.getLogger(__name__)


def read_config(stored: str | bytes | None) -> PoolConfig:
    """A pool's stored configuration (written by this module, or migrated from the old
    columns). One this version cannot read (written by a newer one) is logged and read as
    the defaults, rather than failing every request that touches the pool."""
    try:
        return _decode.decode(stored or b"{}")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error("a pool's configuration cannot be read (%s); using the defaults", exc)
        return PoolConfig()
