"""Pod to task state, the way OSMO's backend listener maps them. Pure.

Pending and not placed → pending (SCHEDULING); placed, image pull or init → initializing;
Running → running; Succeeded → COMPLETED; Failed → FAILED with the container's exit code.
``ErrImagePull``/``ImagePullBackOff`` beyond a grace (``InvalidImageName`` at once) →
FAILED_IMAGE_PULL; OOMKilled and evictions → FAILED_EVICTED; scheduler preemption →
FAILED_PREEMPTED; a start error → FAILED_START_ERROR; a pod that vanished, a disruption or an
admission error → FAILED_BACKEND_ERROR; ``CreateContainerConfigError`` and an unknown container
status beyond their graces → FAILED_BACKEND_ERROR. Each with a message a person can read.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from runner.executors.base import AttemptState
from runner.executors.kubernetes.config import KubeSettings

__all__ = ("pod_state", "task_container")

_PULL_WAITING = {"ErrImagePull", "ImagePullBackOff"}
_START_ERRORS = {"StartError", "ContainerCannotRun", "RunContainerError"}


def _ended(
    status: str, reason: str, node: str | None, exit_code: int | None = None
) -> AttemptState:
    return AttemptState(False, exit_code, status, reason, "ended", node)


def pod_state(
    pod: dict[str, Any] | None,
    now: float,
    first_seen: MutableMapping[str, float],
    settings: KubeSettings,
    gone_reason: str = "the pod disappeared (deleted, or its node was lost)",
) -> AttemptState:
    """The state of the attempt ``pod`` runs; ``first_seen`` remembers when waiting reasons
    first showed, so graces can be measured across calls."""
    if pod is None:
        return _ended("FAILED_BACKEND_ERROR", gone_reason, None)
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    phase = status.get("phase") or "Pending"
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    disruption = conditions.get("DisruptionTarget")
    if disruption and disruption.get("status") == "True":
        if disruption.get("reason") == "PreemptionByScheduler":
            return _ended(
                "FAILED_PREEMPTED", _message("preempted by the scheduler", disruption), node, 3006
            )
        if phase in ("Failed", "Unknown") or pod["metadata"].get("deletionTimestamp"):
            return _ended(
                "FAILED_BACKEND_ERROR", _message("the pod was disrupted", disruption), node, 3001
            )
    if status.get("reason") == "Evicted":
        return _ended(
            "FAILED_EVICTED", f"evicted: {status.get('message') or 'no message'}", node, 3004
        )
    if status.get("reason") == "UnexpectedAdmissionError":
        return _ended(
            "FAILED_BACKEND_ERROR",
            f"the node refused the pod: {status.get('message') or 'unexpected admission error'}",
            node,
            3001,
        )
    state = task_container(pod).get("state") or {}
    terminated = state.get("terminated")
    waiting = state.get("waiting")
    if phase == "Succeeded":
        return AttemptState(False, 0, None, None, "ended", node)
    if terminated is not None and phase in ("Failed", "Running", "Unknown"):
        code = int(terminated.get("exitCode") or 0)
        reason = terminated.get("reason") or ""
        if reason == "OOMKilled":
            return _ended(
                "FAILED_EVICTED",
                "killed for using more memory than its limit (OOMKilled)",
                node,
                code,
            )
        if reason in _START_ERRORS:
            detail = terminated.get("message") or reason
            return _ended(
                "FAILED_START_ERROR", f"the container could not start: {detail}", node, code
            )
        return AttemptState(False, code, None, None, "ended", node)
    if phase == "Failed":
        message = status.get("message") or status.get("reason") or "the pod failed"
        return _ended("FAILED_BACKEND_ERROR", message, node, 3001)
    if waiting is not None:
        reason = waiting.get("reason") or ""
        detail = waiting.get("message") or reason
        if reason == "InvalidImageName":
            return _ended("FAILED_IMAGE_PULL", f"the image name is invalid: {detail}", node)
        if reason in _PULL_WAITING:
            since = first_seen.setdefault("pull", now)
            if now - since >= settings.image_pull_grace:
                return _ended(
                    "FAILED_IMAGE_PULL",
                    f"the image could not be pulled for {settings.image_pull_grace:g} s: {detail}",
                    node,
                )
        elif reason == "CreateContainerConfigError":
            since = first_seen.setdefault("config", now)
            if now - since >= settings.config_error_grace:
                return _ended(
                    "FAILED_BACKEND_ERROR", f"the container could not be configured: {detail}", node
                )
        elif reason == "ContainerStatusUnknown":
            since = first_seen.setdefault("unknown", now)
            if now - since >= settings.unknown_grace:
                return _ended(
                    "FAILED_BACKEND_ERROR", f"the container's state is unknown: {detail}", node
                )
        return AttemptState(True, phase="initializing" if node else "pending", node=node)
    if phase == "Running" and state.get("running") is not None:
        return AttemptState(True, phase="running", node=node)
    if phase == "Unknown":
        since = first_seen.setdefault("unknown", now)
        if now - since >= settings.unknown_grace:
            return _ended(
                "FAILED_BACKEND_ERROR", "the pod's state is unknown (node unreachable)", node
            )
    placed = conditions.get("PodScheduled", {}).get("status") == "True" or bool(node)
    return AttemptState(True, phase="initializing" if placed else "pending", node=node)


def task_container(pod: dict[str, Any]) -> dict[str, Any]:
    """The status of the pod's ``task`` container ({} before the kubelet reports one)."""
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        if c.get("name") == "task":
            return c
    return {}


def _message(what: str, condition: dict[str, Any]) -> str:
    detail = condition.get("message") or condition.get("reason")
    return f"{what}: {detail}" if detail else what
