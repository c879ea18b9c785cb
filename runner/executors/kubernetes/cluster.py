"""The Kubernetes API through kubernetes-asyncio: objects as plain dicts, calls with timeouts.

Every call has a timeout; an ``ApiException`` becomes a ``KubeError`` naming the kind, the name
and the server's message, and says whether it is permanent (the server refused the object: a
4xx other than 408/409/429) or worth retrying (5xx, timeouts, dropped connections).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ("Cluster", "KubeError", "Watched")

_CUSTOM = {
    "scheduling.x-k8s.io/v1alpha1": ("scheduling.x-k8s.io", "v1alpha1", "podgroups"),
    "scheduling.run.ai/v2alpha2": ("scheduling.run.ai", "v2alpha2", "podgroups"),
}


class KubeError(Exception):
    """A call the API server refused or that did not get through."""

    def __init__(self, kind: str, name: str, status: int | None, message: str) -> None:
        self.kind = kind
        self.name = name
        self.status = status
        self.message = message
        super().__init__(f"{kind} {name}: {status or 'no answer'}: {message}")

    @property
    def permanent(self) -> bool:
        return (
            self.status is not None
            and 400 <= self.status < 500
            and self.status not in (408, 409, 429)
        )

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status in (404, 410)


def _error(kind: str, name: str, exc: Exception) -> KubeError:
    if isinstance(exc, ApiException):
        message = exc.reason or ""
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message") or message
        except (ValueError, AttributeError):
            pass
        return KubeError(kind, name, exc.status, message)
    return KubeError(kind, name, None, f"{type(exc).__name__}: {exc}")


Watched = tuple[str, dict[str, Any]]  # (ADDED | MODIFIED | DELETED, object)


async def _check(kind: str, name: str, response: Any) -> None:
    """kubernetes-asyncio checks no status when content is not preloaded: do it here."""
    if 200 <= response.status <= 299:
        return
    text = await response.text()
    try:
        message = json.loads(text).get("message") or text
    except ValueError:
        message = text
    raise KubeError(kind, name, response.status, message.strip() or f"HTTP {response.status}")


class Cluster:
    """The calls the executor makes, in one namespace (nodes are cluster-wide)."""

    def __init__(self, api: client.ApiClient, namespace: str, timeout: float = 30.0) -> None:
        self.api = api
        self.namespace = namespace
        self.timeout = timeout
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    @classmethod
    async def connect(cls, namespace: str, timeout: float = 30.0) -> Cluster:
        """In-cluster configuration when running in a pod, else the kubeconfig (KUBECONFIG)."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            api = client.ApiClient()
        else:
            configuration = client.Configuration()
            # kubernetes-asyncio reads KUBECONFIG when it is imported; read it now instead.
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
            api = client.ApiClient(configuration)
        return cls(api, namespace, timeout)

    async def close(self) -> None:
        await self.api.close()

    async def _call(self, kind: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                response = await fn(
                    *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
                )
                try:
                    await _check(kind, name, response)
                    return await response.json()
                finally:
                    response.release()
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _error(kind, name, exc) from None

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind, name, ns = obj["kind"], obj["metadata"]["name"], self.namespace
        if obj["apiVersion"] in _CUSTOM:
            group, version, plural = _CUSTOM[obj["apiVersion"]]
            return await self._call(
                kind,
                name,
                self.custom.create_namespaced_custom_object,
                group,
                version,
                ns,
                plural,
                obj,
            )
        fn = {
            "Pod": self.core.create_namespaced_pod,
            "Secret": self.core.create_namespaced_secret,
            "Service": self.core.create_namespaced_service,
            "PersistentVolumeClaim": self.core.create_namespaced_persistent_volume_claim,
        }[kind]
        return await self._call(kind, name, fn, ns, obj)

    async def patch_secret_data(self, name: str, data: dict[str, str]) -> None:
        await self._call(
            "Secret", name, self.core.patch_namespaced_secret, name, self.namespace, {"data": data}
        )

    async def delete(
        self, kind: str, name: str, grace: int | None = None, api_version: str = "v1"
    ) -> None:
        ns = self.namespace
        try:
            if api_version in _CUSTOM:
                group, version, plural = _CUSTOM[api_version]
                await self._call(
                    kind,
                    name,
                    self.custom.delete_namespaced_custom_object,
                    group,
                    version,
                    ns,
                    plural,
                    name,
                )
                return
            fn = {
                "Pod": self.core.delete_namespaced_pod,
                "Secret": self.core.delete_namespaced_secret,
                "Service": self.core.delete_namespaced_service,
                "PersistentVolumeClaim": self.core.delete_namespaced_persistent_volume_claim,
            }[kind]
            kwargs = {} if grace is None else {"grace_period_seconds": grace}
            await self._call(kind, name, fn, name, ns, **kwargs)
        except KubeError as exc:
            if not exc.gone:
                raise

    async def list_pods(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        body = await self._call(
            "Pod", "*", self.core.list_namespaced_pod, self.namespace, label_selector=selector
        )
        return body.get("items", []), body["metadata"].get("resourceVersion", "")

    async def list_nodes(self) -> tuple[list[dict[str, Any]], str]:
        body = await self._call("Node", "*", self.core.list_node)
        return body.get("items", []), body["metadata"].get("resourceVersion", "")

    async def watch_pods(
        self, selector: str, resource_version: str, seconds: int
    ) -> AsyncIterator[Watched]:
        """Pod events after ``resource_version`` for ``seconds``; ``KubeError`` 410 when too old."""
        async for event in self._watch(
            "Pod", self.core.list_namespaced_pod, self.namespace,
            label_selector=selector, resource_version=resource_version, timeout_seconds=seconds,
        ):  # fmt: skip
            yield event

    async def watch_nodes(self, resource_version: str, seconds: int) -> AsyncIterator[Watched]:
        async for event in self._watch(
            "Node", self.core.list_node, resource_version=resource_version, timeout_seconds=seconds
        ):
            yield event

    async def _watch(self, kind: str, fn: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Watched]:
        """Watch events as plain objects.

        The generated call with ``watch=True`` gives the newline-delimited events; they are
        parsed here rather than through ``kubernetes_asyncio.watch.Watch``, which builds and
        validates a model per event: a field the models do not know would end the watch.
        """
        try:
            response = await fn(
                *args, watch=True, _preload_content=False,
                _request_timeout=kwargs["timeout_seconds"] + 30, **kwargs,
            )  # fmt: skip
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _error(kind, "watch", exc) from None
        try:
            await _check(kind, "watch", response)
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise KubeError(
                        kind, "watch", obj.get("code"), obj.get("message", "watch error")
                    )
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    yield event["type"], obj
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise _error(kind, "watch", exc) from None
        finally:
            response.release()

    async def pod_log(
        self, name: str, follow: bool, timestamps: bool = False
    ) -> AsyncIterator[bytes]:
        """The task container's log (stdout and stderr as the kubelet merged them, in the
        order they were written); with ``timestamps`` each line begins with its time."""
        try:
            response: Any = await self.core.read_namespaced_pod_log(
                name, self.namespace, container="task", follow=follow, timestamps=timestamps,
                _preload_content=False,
                _request_timeout=None if follow else self.timeout,
            )  # fmt: skip
            try:
                await _check("Pod", f"{name}/log", response)
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                response.release()
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _error("Pod", f"{name}/log", exc) from None
