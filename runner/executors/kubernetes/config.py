"""Settings of the Kubernetes executor, read from ``GANTRY_K8S_*`` environment variables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ("GANGS", "KubeSettings", "KubeSettingsError")

GANGS = ("none", "coscheduling", "kai")
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeSettingsError(ValueError):
    """A setting is malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class KubeSettings:
    namespace: str
    backend: str
    storage_class: str | None = None  # of the per-workflow data volume; None: the default
    data_size: str = "10Gi"
    data_access_mode: str = "ReadWriteMany"
    gang: str = "none"  # none | coscheduling (scheduler-plugins) | kai (NVIDIA KAI)
    scheduler_name: str | None = None
    kai_queue: str = "default-queue"  # the KAI queue gang-scheduled groups join
    platform_label: str = "gantry.io/platform"  # node label naming a node's platform
    platforms: dict[str, dict[str, Any]] = field(default_factory=dict)  # nodeSelector, tolerations
    cleanup_after: float = 600.0  # seconds a finished pod is kept for debugging
    image_pull_grace: float = 120.0  # seconds ErrImagePull/ImagePullBackOff is tolerated
    config_error_grace: float = 600.0  # CreateContainerConfigError, as OSMO waits
    unknown_grace: float = 1800.0  # ContainerStatusUnknown
    request_timeout: float = 30.0
    service_account: str | None = None  # of task pods

    @classmethod
    def from_env(cls, env: dict[str, str], backend: str) -> KubeSettings:
        namespace = env.get("GANTRY_K8S_NAMESPACE")
        if not namespace:
            try:
                namespace = _SA_NAMESPACE.read_text().strip()
            except OSError:
                namespace = "default"
        gang = env.get("GANTRY_K8S_GANG", "none")
        if gang not in GANGS:
            raise KubeSettingsError(
                f"GANTRY_K8S_GANG must be one of {', '.join(GANGS)}, not {gang!r}"
            )
        platforms: dict[str, dict[str, Any]] = {}
        if env.get("GANTRY_K8S_PLATFORMS"):
            try:
                platforms = json.loads(env["GANTRY_K8S_PLATFORMS"])
            except ValueError as exc:
                raise KubeSettingsError(f"GANTRY_K8S_PLATFORMS is not JSON: {exc}") from None
            _check_platforms(platforms)

        def number(name: str, default: float) -> float:
            try:
                return float(env.get(name) or default)
            except ValueError:
                raise KubeSettingsError(f"{name} must be a number of seconds") from None

        return cls(
            namespace=namespace,
            backend=backend,
            storage_class=env.get("GANTRY_K8S_STORAGE_CLASS") or None,
            data_size=env.get("GANTRY_K8S_DATA_SIZE") or "10Gi",
            data_access_mode=env.get("GANTRY_K8S_DATA_ACCESS_MODE") or "ReadWriteMany",
            gang=gang,
            scheduler_name=env.get("GANTRY_K8S_SCHEDULER") or None,
            kai_queue=env.get("GANTRY_K8S_KAI_QUEUE") or "default-queue",
            platform_label=env.get("GANTRY_K8S_PLATFORM_LABEL") or "gantry.io/platform",
            platforms=platforms,
            cleanup_after=number("GANTRY_K8S_CLEANUP_AFTER", 600.0),
            image_pull_grace=number("GANTRY_K8S_IMAGE_PULL_GRACE", 120.0),
            service_account=env.get("GANTRY_K8S_TASK_SERVICE_ACCOUNT") or None,
        )


_PLATFORM_FIELDS = {"nodeSelector": dict, "tolerations": list}


def _check_platforms(platforms: Any) -> None:
    """Refuse what the executor would not use, rather than ignore it."""
    shape = '{"nodeSelector": {...}, "tolerations": [...]}'
    if not isinstance(platforms, dict):
        raise KubeSettingsError(f"GANTRY_K8S_PLATFORMS must map platform names to {shape}")
    for name, platform in platforms.items():
        if not isinstance(platform, dict):
            raise KubeSettingsError(f"GANTRY_K8S_PLATFORMS[{name!r}] must be {shape}")
        for key, value in platform.items():
            kind = _PLATFORM_FIELDS.get(key)
            if kind is None:
                raise KubeSettingsError(
                    f"GANTRY_K8S_PLATFORMS[{name!r}] has {key!r}; "
                    "only nodeSelector and tolerations are supported"
                )
            if not isinstance(value, kind):
                raise KubeSettingsError(
                    f"GANTRY_K8S_PLATFORMS[{name!r}].{key} must be a JSON "
                    f"{'object' if kind is dict else 'list'}"
                )
