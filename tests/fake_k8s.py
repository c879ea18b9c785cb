"""A small Kubernetes API server for tests, and a kubelet that really runs containers.

No kube-apiserver can run on these machines, so the Kubernetes executor is tested against
this: the real REST and watch protocol (JSON objects, resourceVersion, label selectors,
``?watch=true`` as newline-delimited events, ``410 Gone`` for a version too old, pod logs with
``follow``) for pods, services, secrets, persistent volume claims, nodes and PodGroups. The
kubelet places pending pods on a fitting node, "pulls" the image (an image named ``*missing*``
never arrives; one with spaces is an invalid name), runs the container's command as a local
process in bubblewrap with the pod's volumes at their mount paths, records its real exit code,
serves its real output as the log, and stops it with SIGTERM, a grace period and SIGKILL when
the pod is deleted. Names containing ``refuse`` are refused with 422 (an invalid object), and
a PVC is refused with 403 (a quota) when ``quota_exceeded`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from runner.executors.base import expand_vars

KINDS = {
    "pods": "Pod",
    "services": "Service",
    "secrets": "Secret",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "podgroups": "PodGroup",
    "nodes": "Node",
}
HISTORY = 5000
log = logging.getLogger("fake-kube")


async def _write_cri_log(output: asyncio.StreamReader, path: Path) -> None:
    """What the container runtime does with a container's output: each line, with the time
    its first byte was read, as a CRI log entry ``TIME stdout F TEXT`` (a last line without a
    newline ends as a partial entry, ``P``)."""
    pending, began = b"", b""
    with path.open("ab") as out:
        while chunk := await output.read(65536):
            if not pending:
                began = _rfc3339_nano(time.time_ns())
            *lines, rest = (pending + chunk).split(b"\n")
            for line in lines:
                out.write(b"%s stdout F %s\n" % (began, line))
                began = _rfc3339_nano(time.time_ns())
            pending = rest
            out.flush()
        if pending:
            out.write(b"%s stdout P %s\n" % (began, pending))


def _rfc3339_nano(ns: int) -> bytes:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) +
            f".{ns % 10**9:09d}Z").encode()  # fmt: skip


def _kubelet_text(entries: bytes, timestamps: bool) -> bytes:
    """CRI log entries as the kubelet serves them: the text of each (a newline after a full
    one), after its time and a space with ``timestamps=true``."""
    out = []
    for entry in entries.split(b"\n")[:-1]:
        when, _stream, tag, text = entry.split(b" ", 3)
        out.append((when + b" " if timestamps else b"") + text + (b"\n" if tag == b"F" else b""))
    return b"".join(out)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
    return web.json_response(body, status=code)


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


class FakeKube:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.rv = 0
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, str | None, str, dict[str, Any]]] = []
        self.oldest = 0  # events with a resourceVersion below this are forgotten (410)
        self.changed = asyncio.Condition()
        self.kubelet = Kubelet(self, workdir / "kubelet")
        self.quota_exceeded = False
        self.requests: list[tuple[str, str]] = []
        self.watch_generation = 0  # bumping it ends every open watch (a dropped connection)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.token = "fake-token"  # every request must carry it, as a bearer token

    # -- the store ------------------------------------------------------------------------

    async def put(
        self, resource: str, ns: str | None, obj: dict[str, Any], kind: str
    ) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[(resource, ns, obj["metadata"]["name"])] = obj
        self.history.append((self.rv, resource, ns, kind, copy.deepcopy(obj)))
        del self.history[:-HISTORY]
        async with self.changed:
            self.changed.notify_all()
        return obj

    async def remove(self, resource: str, ns: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((resource, ns, name), None)
        if obj is not None:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.history.append((self.rv, resource, ns, "DELETED", copy.deepcopy(obj)))
            async with self.changed:
                self.changed.notify_all()
        return obj

    async def expire_history(self) -> None:
        """Forget every event so far and drop open watches: a watch resuming from an old
        version gets 410 Gone, as after an API server restart or etcd compaction."""
        self.oldest = self.rv + 1
        self.history.clear()
        self.watch_generation += 1
        async with self.changed:
            self.changed.notify_all()

    def get(self, resource: str, ns: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((resource, ns, name))

    def items(self, resource: str, ns: str | None = None) -> list[dict[str, Any]]:
        return [
            o for (r, n, _), o in self.objects.items() if r == resource and (ns is None or n == ns)
        ]

    async def add_node(self, name: str, cpu: str = "8", memory: str = "32Gi", gpus: int = 0,
                       labels: dict[str, str] | None = None, ready: bool = True) -> None:  # fmt: skip
        alloc = {"cpu": cpu, "memory": memory, "pods": "110"}
        if gpus:
            alloc["nvidia.com/gpu"] = str(gpus)
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}, "uid": str(uuid.uuid4())},
            "spec": {},
            "status": {"allocatable": alloc, "capacity": alloc,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }  # fmt: skip
        await self.put("nodes", None, node, "ADDED")
        self.kubelet.wake()

    async def cordon(self, name: str) -> None:
        node = copy.deepcopy(self.objects[("nodes", None, name)])
        node["spec"]["unschedulable"] = True
        await self.put("nodes", None, node, "MODIFIED")

    async def lose_node(self, name: str) -> None:
        """The node is gone: its pods are killed and deleted, as the node controller does."""
        await self.remove("nodes", None, name)
        for pod in [p for p in self.items("pods") if p["spec"].get("nodeName") == name]:
            await self.kubelet.kill(pod, 0)
            await self.remove("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])

    # -- HTTP -------------------------------------------------------------------------------

    async def start(self, tls: tuple[Path, Path] | None = None) -> str:
        """Serve on a free port: plain HTTP, or HTTPS with (certificate, key) as a real API
        server does (in-cluster clients insist on it)."""
        app = web.Application(middlewares=[self.authenticate])
        app.router.add_route("*", "/api/v1/nodes", self.collection)
        app.router.add_route("*", "/api/v1/nodes/{name}", self.member)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/{resource}", self.collection)
        app.router.add_route("GET", "/api/v1/namespaces/{ns}/pods/{name}/log", self.log)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/{resource}/{name}", self.member)
        app.router.add_route(
            "*", "/apis/{group}/{version}/namespaces/{ns}/{resource}", self.collection
        )
        app.router.add_route(
            "*", "/apis/{group}/{version}/namespaces/{ns}/{resource}/{name}", self.member
        )
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.requests.append((request.method, request.path))
            return _status(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    async def stop(self) -> None:
        await self.kubelet.stop()
        self.watch_generation += 1  # end open watches
        async with self.changed:
            self.changed.notify_all()
        if self.runner is not None:
            await self.runner.cleanup()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "gantry"}}],
        }))  # fmt: skip
        return path

    async def collection(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info.get("resource", "nodes")
        ns = request.match_info.get("ns")
        self.requests.append((request.method, request.path))
        if resource not in KINDS:
            return _status(
                404, "NotFound", f"the server could not find the requested resource ({resource})"
            )
        if request.method == "POST":
            return await self.create(resource, ns, await request.json())
        if request.method != "GET":
            return _status(405, "MethodNotAllowed", "method not allowed")
        selector = request.query.get("labelSelector")
        if request.query.get("watch", "").lower() in ("true", "1"):
            return await self.watch(request, resource, ns, selector)
        items = [o for o in self.items(resource, ns) if _matches(o, selector)]
        return web.json_response({
            "apiVersion": "v1", "kind": f"{KINDS[resource]}List",
            "metadata": {"resourceVersion": str(self.rv)}, "items": items,
        })  # fmt: skip

    async def create(self, resource: str, ns: str | None, obj: dict[str, Any]) -> web.Response:
        name = obj.get("metadata", {}).get("name", "")
        if not name or (resource, ns, name) in self.objects:
            if name:
                return _status(409, "AlreadyExists", f'{resource} "{name}" already exists')
            return _status(
                422, "Invalid", f"{KINDS[resource]} is invalid: metadata.name: Required value"
            )
        if "refuse" in name:
            return _status(
                422, "Invalid", f'{KINDS[resource]} "{name}" is invalid: refused by the test'
            )
        if resource == "persistentvolumeclaims" and self.quota_exceeded:
            return _status(
                403,
                "Forbidden",
                f'persistentvolumeclaims "{name}" is forbidden: exceeded quota: storage',
            )
        if resource == "pods":
            problem = _validate_pod(obj)
            if problem:
                return _status(422, "Invalid", f'Pod "{name}" is invalid: {problem}')
            obj.setdefault("status", {})["phase"] = "Pending"
            obj["status"]["conditions"] = [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
            ]
        obj["metadata"]["uid"] = str(uuid.uuid4())
        obj["metadata"]["creationTimestamp"] = now_iso()
        obj["metadata"]["namespace"] = ns
        await self.put(resource, ns, obj, "ADDED")
        if resource == "pods":
            self.kubelet.wake()
        return web.json_response(obj, status=201)

    async def member(self, request: web.Request) -> web.Response:
        resource = request.match_info.get("resource", "nodes")
        ns = request.match_info.get("ns")
        name = request.match_info["name"]
        self.requests.append((request.method, request.path))
        obj = self.get(resource, ns, name)
        if obj is None:
            return _status(404, "NotFound", f'{resource} "{name}" not found')
        if request.method == "GET":
            return web.json_response(obj)
        if request.method == "PATCH":
            patch = await request.json()
            updated = copy.deepcopy(obj)
            for key, value in patch.items():
                if isinstance(value, dict):
                    updated.setdefault(key, {}).update(value)
                else:
                    updated[key] = value
            await self.put(resource, ns, updated, "MODIFIED")
            return web.json_response(updated)
        if request.method == "DELETE":
            if resource == "pods":
                grace = int(request.query.get("gracePeriodSeconds", "30"))
                self.kubelet.spawn(self.kubelet.delete(obj, grace))
                return web.json_response(obj)
            await self.remove(resource, ns, name)
            return web.json_response(obj)
        return _status(405, "MethodNotAllowed", "method not allowed")

    async def watch(
        self, request: web.Request, resource: str, ns: str | None, selector: str | None
    ) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 300)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if since and since < self.oldest - 1:
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                      "reason": "Expired", "message": f"too old resource version: {since} ({self.oldest})"}  # fmt: skip
            await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            return response
        deadline = time.monotonic() + timeout
        sent = since or self.rv  # the last version this watch has looked at
        generation = self.watch_generation
        while time.monotonic() < deadline and generation == self.watch_generation:
            snapshot = list(self.history)
            for rv, r, n, kind, obj in snapshot:
                if (
                    rv <= sent
                    or r != resource
                    or (ns is not None and n != ns)
                    or not _matches(obj, selector)
                ):
                    continue
                await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            if snapshot:
                sent = max(sent, snapshot[-1][0])
            if self.history and self.history[-1][0] > sent:
                continue  # more arrived while writing
            async with self.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.changed.wait(), max(0.01, min(5.0, deadline - time.monotonic()))
                    )
        return response

    async def log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.get("pods", ns, name)
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        path = self.kubelet.log_path(pod)
        if not path.exists():
            reason = (
                (pod.get("status", {}).get("containerStatuses") or [{}])[0]
                .get("state", {})
                .get("waiting")
                or {}
            ).get("reason", "ContainerCreating")
            return _status(
                400, "BadRequest", f'container "task" in pod "{name}" is waiting to start: {reason}'
            )
        follow = request.query.get("follow", "").lower() in ("true", "1")
        timestamps = request.query.get("timestamps", "").lower() in ("true", "1")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        offset = 0
        while True:
            finished = (current := self.get("pods", ns, name)) is None or self.kubelet.finished(
                current
            )
            entries = path.read_bytes()[offset:]
            whole = entries[: entries.rfind(b"\n") + 1]  # entries the runtime finished writing
            if whole:
                await response.write(_kubelet_text(whole, timestamps))
                offset += len(whole)
            if not follow or finished:
                return response
            await asyncio.sleep(0.05)


def _validate_pod(obj: dict[str, Any]) -> str | None:
    containers = obj.get("spec", {}).get("containers") or []
    if not containers:
        return "spec.containers: Required value"
    for i, c in enumerate(containers):
        if not c.get("image"):
            return f"spec.containers[{i}].image: Required value"
    names = {v["name"] for v in obj["spec"].get("volumes") or []}
    for i, c in enumerate(containers):
        for m in c.get("volumeMounts") or []:
            if m["name"] not in names:
                return f'spec.containers[{i}].volumeMounts.name: Not found: "{m["name"]}"'
    return None


class Kubelet:
    """Places pods on nodes and runs their containers as processes."""

    def __init__(self, api: FakeKube, root: Path) -> None:
        self.api = api
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.deleting: set[str] = set()
        self.placing: dict[str, str] = {}  # pod uid -> the node it is being placed on
        self._wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self._task = asyncio.create_task(self._loop())
        self.bwrap = shutil.which("bwrap")
        self.pull_delay = 0.1

    def wake(self) -> None:
        self._wake.set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fake kubelet: %r", task.exception(), exc_info=task.exception())

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def log_path(self, pod: dict[str, Any]) -> Path:
        return self.root / "logs" / f"{pod['metadata']['uid']}.log"

    def finished(self, pod: dict[str, Any]) -> bool:
        return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for pod in self.api.items("pods"):
                uid = pod["metadata"]["uid"]
                if (
                    not pod["spec"].get("nodeName")
                    and uid not in self.deleting
                    and uid not in self.placing
                ):
                    node = self._place(pod)
                    if node is not None:
                        self.placing[uid] = node
                        self.spawn(self._run(copy.deepcopy(pod), node))

    def _place(self, pod: dict[str, Any]) -> str | None:
        selector = pod["spec"].get("nodeSelector") or {}
        want_cpu, want_mem, want_gpu = _requests(pod)
        for node in sorted(self.api.items("nodes"), key=lambda n: n["metadata"]["name"]):
            labels = node["metadata"].get("labels") or {}
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
            )
            if not ready or node["spec"].get("unschedulable"):
                continue
            name = node["metadata"]["name"]
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            used = [_requests(p) for p in self.api.items("pods")
                    if (p["spec"].get("nodeName") or self.placing.get(p["metadata"]["uid"])) == name
                    and not self.finished(p)]  # fmt: skip
            alloc = node["status"]["allocatable"]
            from runner.executors.kubernetes.executor import parse_bytes, parse_cpu

            if (want_cpu + sum(u[0] for u in used) <= parse_cpu(alloc["cpu"])
                    and want_mem + sum(u[1] for u in used) <= parse_bytes(alloc["memory"])
                    and want_gpu + sum(u[2] for u in used) <= int(alloc.get("nvidia.com/gpu", 0))):  # fmt: skip
                return str(node["metadata"]["name"])
        return None

    async def _update(self, pod: dict[str, Any], **status: Any) -> dict[str, Any] | None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        current = self.api.get("pods", ns, name)
        if current is None or current["metadata"]["uid"] != pod["metadata"]["uid"]:
            return None
        updated = copy.deepcopy(current)
        for key, value in status.items():
            if key == "nodeName":
                updated["spec"]["nodeName"] = value
            else:
                updated["status"][key] = value
        return await self.api.put("pods", ns, updated, "MODIFIED")

    async def _run(self, pod: dict[str, Any], node: str) -> None:
        uid = pod["metadata"]["uid"]
        scheduled = [{"type": "PodScheduled", "status": "True"}]
        pod = await self._update(pod, nodeName=node, conditions=scheduled) or pod
        container = pod["spec"]["containers"][0]
        image = container["image"]
        waiting = lambda reason, message="": [  # noqa: E731
            {"name": "task", "ready": False, "restartCount": 0, "image": image, "imageID": "",
             "state": {"waiting": {"reason": reason, "message": message}}}]  # fmt: skip
        if " " in image:
            await self._update(
                pod, containerStatuses=waiting("InvalidImageName", f'invalid image name "{image}"')
            )
            return
        if "missing" in image:
            reasons = ["ErrImagePull", "ImagePullBackOff"]
            i = 0
            while (
                self.api.get("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
                and uid not in self.deleting
            ):
                message = f'failed to pull image "{image}": not found'
                await self._update(pod, containerStatuses=waiting(reasons[i % 2], message))
                i += 1
                await asyncio.sleep(0.5)
            return
        await self._update(pod, containerStatuses=waiting("ContainerCreating"))
        await asyncio.sleep(self.pull_delay)
        if uid in self.deleting:
            return
        argv, env, binds = self._command(pod)
        log_path = self.log_path(pod)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = now_iso()
        try:
            log_path.write_bytes(b"")
            proc = await asyncio.create_subprocess_exec(
                *self._sandbox(binds), *argv, env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            log_path.write_text("")
            await self._update(pod, phase="Failed", containerStatuses=[
                {"name": "task", "ready": False, "restartCount": 0, "image": image, "imageID": "",
                 "state": {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(exc)}}}])  # fmt: skip
            return
        self.procs[uid] = proc
        assert proc.stdout is not None
        logging_done = asyncio.ensure_future(_write_cri_log(proc.stdout, log_path))
        await self._update(pod, phase="Running", containerStatuses=[
            {"name": "task", "ready": True, "restartCount": 0, "image": image, "imageID": "",
             "state": {"running": {"startedAt": started}}}])  # fmt: skip
        code = await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(logging_done, 5)  # a daemon it left may hold the pipe
        self.procs.pop(uid, None)
        if code < 0:
            code = 128 - code
        reason = "Completed" if code == 0 else "Error"
        await self._update(pod, phase="Succeeded" if code == 0 else "Failed", containerStatuses=[
            {"name": "task", "ready": False, "restartCount": 0, "image": image, "imageID": "",
             "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": started,
                                      "finishedAt": now_iso()}}}])  # fmt: skip

    def _command(
        self, pod: dict[str, Any]
    ) -> tuple[list[str], dict[str, str], list[tuple[str, str, bool]]]:
        container = pod["spec"]["containers"][0]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp",
               "HOSTNAME": pod["spec"].get("hostname", pod["metadata"]["name"])}  # fmt: skip
        for item in container.get("env") or []:
            env[item["name"]] = expand_vars(item.get("value", ""), env)
        argv = [
            expand_vars(s, env)
            for s in (container.get("command") or []) + (container.get("args") or [])
        ]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        binds = []
        for m in container.get("volumeMounts") or []:
            volume = volumes[m["name"]]
            if "persistentVolumeClaim" in volume:
                base = self.root / "volumes" / volume["persistentVolumeClaim"]["claimName"]
                source = base / m.get("subPath", "")
                source.mkdir(parents=True, exist_ok=True)
            elif "secret" in volume:
                secret = (
                    self.api.get(
                        "secrets", pod["metadata"]["namespace"], volume["secret"]["secretName"]
                    )
                    or {}
                )
                directory = self.root / "secrets" / pod["metadata"]["uid"]
                directory.mkdir(parents=True, exist_ok=True)
                import base64

                for key, value in (secret.get("data") or {}).items():
                    (directory / key).write_bytes(base64.b64decode(value))
                source = directory / m["subPath"] if m.get("subPath") else directory
            else:
                continue
            binds.append((str(source), m["mountPath"], bool(m.get("readOnly"))))
        return argv, env, binds

    def _sandbox(self, binds: list[tuple[str, str, bool]]) -> list[str]:
        if self.bwrap is None:
            raise RuntimeError("the fake kubelet needs bwrap to mount volumes at their paths")
        args = [self.bwrap, "--unshare-pid"]
        for path in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc"):
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for source, target, read_only in binds:
            args += ["--ro-bind" if read_only else "--bind", source, target]
        return [*args, "--chdir", "/", "--"]

    async def kill(self, pod: dict[str, Any], grace: int) -> None:
        proc = self.procs.get(pod["metadata"]["uid"])
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        try:
            await asyncio.wait_for(proc.wait(), grace or 1)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def delete(self, pod: dict[str, Any], grace: int) -> None:
        """Graceful deletion: marked, the container stopped, then the object removed."""
        uid = pod["metadata"]["uid"]
        self.deleting.add(uid)
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        current = self.api.get("pods", ns, name)
        if current is not None:
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = now_iso()
            marked["metadata"]["deletionGracePeriodSeconds"] = grace
            await self.api.put("pods", ns, marked, "MODIFIED")
        await self.kill(pod, grace)
        await asyncio.sleep(0.05)  # let the last status update land, as a kubelet would
        await self.api.remove("pods", ns, name)
        self.wake()


def _requests(pod: dict[str, Any]) -> tuple[float, int, int]:
    from runner.executors.kubernetes.executor import parse_bytes, parse_cpu

    r = pod["spec"]["containers"][0].get("resources", {}).get("requests", {})
    return (
        parse_cpu(r.get("cpu", "0")),
        parse_bytes(r.get("memory", "0")),
        int(r.get("nvidia.com/gpu", 0)),
    )


@contextlib.asynccontextmanager
async def fake_kube(workdir: Path, tls: tuple[Path, Path] | None = None) -> AsyncIterator[FakeKube]:
    api = FakeKube(workdir)
    await api.start(tls)
    try:
        yield api
    finally:
        await api.stop()
