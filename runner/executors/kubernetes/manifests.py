"""Kubernetes objects for task attempts. Pure: launches and settings in, dicts out.

Per attempt a Pod, owner-free so it survives a runner restart, labelled with its workflow,
group, task, attempt, retry, epoch and backend. Per group a Secret holding the spec's files
(mounted at their paths), a headless Service (``{{host:<task>}}`` is
``<task>.<service>.<namespace>.svc.cluster.local``) and, with a gang scheduler, a PodGroup. Per
workflow a PVC: ``{{output}}`` is the attempt's directory on it and ``{{input:N}}`` the
upstream attempt's, read-only, until the object-storage data plane exists.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from runner.executors.kubernetes.config import KubeSettings
from runner.protocol import Attempt

__all__ = (
    "LABEL",
    "MANAGED",
    "attempt_of",
    "data_claim",
    "data_claim_name",
    "files_secret",
    "group_key",
    "group_service",
    "pod",
    "pod_group",
    "pod_name",
    "selector",
    "service_name",
)

LABEL = "gantry.io"
MANAGED = {"app.kubernetes.io/managed-by": "gantry"}
OUTPUT_DIR = "/gantry/output"
INPUT_ROOT = "/gantry/input"
_DNS = re.compile(r"[^a-z0-9-]+")


def _dns_label(text: str, limit: int = 63) -> str:
    """A DNS-1123 label from ``text`` (lower case, digits, '-'; starts and ends alphanumeric)."""
    out = _DNS.sub("-", text.lower()).strip("-")[:limit].strip("-")
    return out or "x"


def _label_value(text: str) -> str:
    """A label value: at most 63 of letters, digits, '-', '_', '.'; alphanumeric at both ends."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63].strip("-_.")
    return out


def _digest(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:10]  # noqa: S324 - a name, not security


def group_key(a: Attempt) -> str:
    """One id per (workflow, group), naming the group's objects and selecting its pods."""
    return _digest(a.workflow_id, a.group)


def pod_name(a: Attempt) -> str:
    return f"{_dns_label(a.task, 40)}-{a.id}"


def service_name(a: Attempt) -> str:
    return _group_name(group_key(a))


def _group_name(key: str) -> str:
    return f"gt-{key}"


def _files_secret_name(a: Attempt) -> str:
    return f"{service_name(a)}-files"


# The PodGroup API of each gang scheduler.
PODGROUP_API = {"coscheduling": "scheduling.x-k8s.io/v1alpha1", "kai": "scheduling.run.ai/v2alpha2"}


def group_objects(key: str, settings: KubeSettings) -> list[tuple[str, str, str]]:
    """(kind, name, apiVersion) of what a group's pods share, deleted after its last pod."""
    name = _group_name(key)
    objects = [("Service", name, "v1"), ("Secret", f"{name}-files", "v1")]
    if settings.gang in PODGROUP_API:
        objects.append(("PodGroup", name, PODGROUP_API[settings.gang]))
    return objects


def data_claim_name(workflow_id: str) -> str:
    return f"gt-data-{_digest(workflow_id)}"


def selector(settings: KubeSettings) -> str:
    """The label selector of every object this backend manages."""
    return f"app.kubernetes.io/managed-by=gantry,{LABEL}/backend={_label_value(settings.backend)}"


def _labels(a: Attempt, settings: KubeSettings) -> dict[str, str]:
    return {
        **MANAGED,
        f"{LABEL}/backend": _label_value(settings.backend),
        f"{LABEL}/workflow": _label_value(a.workflow_id),
        f"{LABEL}/group": group_key(a),
    }


def _host(task: str, a: Attempt, settings: KubeSettings) -> str:
    return f"{_dns_label(task)}.{service_name(a)}.{settings.namespace}.svc.cluster.local"


def _hosts(text: str, a: Attempt, settings: KubeSettings) -> str:
    for name in a.hosts:
        text = text.replace(f"{{{{host:{name}}}}}", _host(name, a, settings))
    return text


def _quantity_cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def pod(a: Attempt, epoch: int, settings: KubeSettings) -> dict[str, Any]:
    """The pod of one attempt. ``$(VAR)`` in command and args is left to Kubernetes."""
    env = [{"name": k, "value": _hosts(v, a, settings)} for k, v in a.environment.items()]
    env += [
        {"name": "GANTRY_WORKFLOW_ID", "value": a.workflow_id},
        {"name": "GANTRY_GROUP", "value": a.group},
        {"name": "GANTRY_TASK", "value": a.task},
        {"name": "GANTRY_RETRY", "value": str(a.retry)},
        {"name": "GANTRY_ATTEMPT", "value": str(a.id)},
        {"name": "GANTRY_OUTPUT", "value": OUTPUT_DIR},
    ]
    requests: dict[str, str] = {}
    if a.cpu:
        requests["cpu"] = _quantity_cpu(a.cpu)
    if a.memory:
        requests["memory"] = str(a.memory)
    if a.storage:
        requests["ephemeral-storage"] = str(a.storage)
    limits = dict(requests)
    if a.gpu:
        limits["nvidia.com/gpu"] = str(a.gpu)
        requests["nvidia.com/gpu"] = str(a.gpu)
    limits.pop("cpu", None)  # CPU limits throttle; requests place, as OSMO's templates do
    claim = data_claim_name(a.workflow_id)
    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": OUTPUT_DIR, "subPath": f"attempts/{a.id}/output"}
    ]
    mounts += [
        {
            "name": "data",
            "mountPath": f"{INPUT_ROOT}/{i.index}",
            "subPath": f"attempts/{i.attempt}/output",
            "readOnly": True,
        }
        for i in a.inputs
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": claim}}
    ]
    if a.files:
        volumes.append({"name": "files", "secret": {"secretName": _files_secret_name(a)}})
        mounts += [
            {"name": "files", "mountPath": f.path, "subPath": f"{a.id}-{i}", "readOnly": True}
            for i, f in enumerate(a.files)
        ]
    labels = {
        **_labels(a, settings),
        f"{LABEL}/task": _label_value(a.task),
        f"{LABEL}/attempt": str(a.id),
        f"{LABEL}/retry": str(a.retry),
        f"{LABEL}/epoch": str(epoch),
    }
    annotations = {f"{LABEL}/workflow-id": a.workflow_id, f"{LABEL}/task-name": a.task}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": _dns_label(a.task),
        "subdomain": service_name(a),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "task",
                "image": a.image,
                "command": [_hosts(s, a, settings) for s in a.command],
                "args": [_hosts(s, a, settings) for s in a.args],
                "env": env,
                "resources": {"requests": requests, "limits": limits},
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
        spec["automountServiceAccountToken"] = True
    platform = settings.platforms.get(a.platform or "", {}) if a.platform else {}
    if a.platform and not platform:
        spec["nodeSelector"] = {settings.platform_label: a.platform}
    if platform.get("nodeSelector"):
        spec["nodeSelector"] = dict(platform["nodeSelector"])
    if platform.get("tolerations"):
        spec["tolerations"] = list(platform["tolerations"])
    if settings.scheduler_name:
        spec["schedulerName"] = settings.scheduler_name
    if settings.gang == "coscheduling" and a.group_size > 1:
        labels["scheduling.x-k8s.io/pod-group"] = service_name(a)
    elif settings.gang == "kai":
        annotations["pod-group-name"] = service_name(a)
        annotations["kai.scheduler/skip-podgrouper"] = "true"
        labels["kai.scheduler/queue"] = settings.kai_queue
        spec.setdefault("schedulerName", "kai-scheduler")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(a),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def files_secret(attempts: list[Attempt], settings: KubeSettings) -> dict[str, Any] | None:
    """The Secret with the files of a group's attempts (None when they have none)."""
    data = {}
    for a in attempts:
        for i, f in enumerate(a.files):
            raw = f.contents if f.base64 else base64.b64encode(f.contents.encode()).decode()
            data[f"{a.id}-{i}"] = raw
    if not data:
        return None
    first = attempts[0]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": _files_secret_name(first),
            "namespace": settings.namespace,
            "labels": _labels(first, settings),
        },
        "type": "Opaque",
        "data": data,
    }


def group_service(a: Attempt, settings: KubeSettings) -> dict[str, Any]:
    """The headless Service that gives a group's pods DNS names."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(a),
            "namespace": settings.namespace,
            "labels": _labels(a, settings),
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {f"{LABEL}/group": group_key(a), **MANAGED},
        },
    }


def pod_group(a: Attempt, settings: KubeSettings) -> dict[str, Any] | None:
    """The gang-scheduling object of a group, for the configured scheduler."""
    meta = {
        "name": service_name(a),
        "namespace": settings.namespace,
        "labels": _labels(a, settings),
    }
    if settings.gang == "coscheduling" and a.group_size > 1:
        return {
            "apiVersion": PODGROUP_API["coscheduling"],
            "kind": "PodGroup",
            "metadata": meta,
            "spec": {"minMember": a.group_size},
        }
    if settings.gang == "kai":
        return {
            "apiVersion": PODGROUP_API["kai"],
            "kind": "PodGroup",
            "metadata": meta,
            "spec": {"minMember": a.group_size, "queue": settings.kai_queue},
        }
    return None


def data_claim(workflow_id: str, settings: KubeSettings) -> dict[str, Any]:
    """The workflow's shared data volume (outputs and inputs of its tasks)."""
    spec: dict[str, Any] = {
        "accessModes": [settings.data_access_mode],
        "resources": {"requests": {"storage": settings.data_size}},
    }
    if settings.storage_class:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": data_claim_name(workflow_id),
            "namespace": settings.namespace,
            "labels": {
                **MANAGED,
                f"{LABEL}/backend": _label_value(settings.backend),
                f"{LABEL}/workflow": _label_value(workflow_id),
            },
        },
        "spec": spec,
    }


def attempt_of(pod_obj: dict[str, Any]) -> int | None:
    """The attempt id a pod runs, from its label."""
    value = (pod_obj.get("metadata", {}).get("labels") or {}).get(f"{LABEL}/attempt")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
