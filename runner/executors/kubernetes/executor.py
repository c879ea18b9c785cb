"""The Kubernetes executor: attempts as pods, watched, logged, stopped and cleaned up.

State lives in the cluster (pods labelled with their attempt and carrying their launch in an
annotation) and in a small local directory (launches prepared but not started, and each
attempt's log as fetched from the API). Watches keep a cache of this backend's pods and of the
nodes; they relist when the API server answers 410 Gone and reconnect when dropped. A follower
per attempt copies the container's log to a local file from its first byte, so offsets match
the control plane's after a runner restart and no line is lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from runner.executors import timeline
from runner.executors.base import AttemptState, Executor, Held, LogPiece
from runner.executors.kubernetes import manifests
from runner.executors.kubernetes.cluster import Cluster, KubeError
from runner.executors.kubernetes.config import KubeSettings
from runner.executors.kubernetes.states import pod_state, task_container
from runner.protocol import Capacity, Launch, Node, Stream

__all__ = ("KubernetesExecutor", "parse_bytes", "parse_cpu")

log = logging.getLogger("gantry.runner.kubernetes")
_encoder = msgspec.json.Encoder()
_launch_decoder = msgspec.json.Decoder(Launch)
_LAUNCH_ANNOTATION = f"{manifests.LABEL}/launch"
_WATCH_SECONDS = 240
_CREATE_TRIES = 5

ClusterFactory = Callable[[KubeSettings], Awaitable[Cluster]]


async def _connect(settings: KubeSettings) -> Cluster:
    return await Cluster.connect(settings.namespace, settings.request_timeout)


_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}  # fmt: skip


def parse_bytes(value: str | int | None) -> int:
    """A Kubernetes memory quantity (``16Gi``, ``16384Ki``, ``1e9``) in bytes."""
    if value is None:
        return 0
    text = str(value).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _SUFFIX[suffix])
    return int(float(text))


def parse_cpu(value: str | int | None) -> float:
    """A Kubernetes CPU quantity (``4``, ``3500m``) in cores."""
    if value is None:
        return 0.0
    text = str(value).strip()
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


class KubernetesExecutor(Executor):
    def __init__(
        self,
        settings: KubeSettings,
        data_dir: Path,
        slots: int = 16,
        connect: ClusterFactory = _connect,
    ) -> None:
        self.settings = settings
        self.slots = slots
        self.connect = connect
        data_dir = data_dir.resolve()  # as the local executor's: independent of the cwd
        self.launch_dir = data_dir / "launches"
        self.log_dir = data_dir / "logs"
        self.launch_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cluster: Cluster | None = None
        self.pods: dict[int, dict[str, Any]] = {}  # attempt -> its pod, as last watched
        self.nodes: dict[str, dict[str, Any]] = {}
        self.gone: set[int] = set()  # attempts whose pod was deleted
        self.stopping: set[int] = set()
        self.refused: dict[int, AttemptState] = {}  # attempts whose objects the API refused
        self.first_seen: dict[int, dict[str, float]] = {}
        self.followers: dict[int, asyncio.Task[None]] = {}
        self.follow_done: set[int] = set()
        self._timeline_at: dict[int, int] = {}  # where each log's unshipped records begin
        self.synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        if self.cluster is not None:
            return
        cluster = await self.connect(self.settings)
        try:
            pods, pods_rv = await cluster.list_pods(manifests.selector(self.settings))
            nodes, nodes_rv = await cluster.list_nodes()
        except BaseException:
            # Open only once both lists are in hand: a half-open executor would have no watches.
            await cluster.close()
            raise
        self.cluster = cluster
        self._replace_pods(pods)
        self.nodes = {n["metadata"]["name"]: n for n in nodes}
        self._tasks = [
            asyncio.create_task(self._watch_pods(pods_rv), name="k8s-watch-pods"),
            asyncio.create_task(self._watch_nodes(nodes_rv), name="k8s-watch-nodes"),
        ]
        self.synced.set()

    async def close(self) -> None:
        for task in [*self._tasks, *self.followers.values()]:
            task.cancel()
        for task in [*self._tasks, *self.followers.values()]:
            with contextlib.suppress(BaseException):
                await task
        if self.cluster is not None:
            await self.cluster.close()
            self.cluster = None

    def _replace_pods(self, pods: list[dict[str, Any]]) -> None:
        seen = {}
        for p in pods:
            attempt = manifests.attempt_of(p)
            if attempt is not None:
                seen[attempt] = p
        for attempt in set(self.pods) - set(seen):
            self.gone.add(attempt)  # deleted while we were not watching
        self.pods = seen

    async def _watch_pods(self, resource_version: str) -> None:
        assert self.cluster is not None
        failures = 0
        while True:
            try:
                async for kind, obj in self.cluster.watch_pods(
                    manifests.selector(self.settings), resource_version, _WATCH_SECONDS
                ):
                    failures = 0
                    resource_version = obj["metadata"].get("resourceVersion", resource_version)
                    attempt = manifests.attempt_of(obj)
                    if attempt is None:
                        continue
                    if kind == "DELETED":
                        if self.pods.pop(attempt, None) is not None:
                            self.gone.add(attempt)
                    elif attempt in self.pods or not obj["metadata"].get("deletionTimestamp"):
                        # (A pod already cleaned up and forgotten is not taken up again.)
                        self.pods[attempt] = obj
                        self.gone.discard(attempt)
            except Exception as exc:  # any failure: list again, then watch on
                failures += 1
                if isinstance(exc, KubeError) and exc.status == 410:
                    log.info("pod watch expired (410 Gone); listing again")
                else:
                    log.warning("pod watch failed: %s; reconnecting", exc)
                await asyncio.sleep(min(10.0, 0.2 * 2**failures) * random.random())
                try:
                    pods, resource_version = await self.cluster.list_pods(
                        manifests.selector(self.settings)
                    )
                    self._replace_pods(pods)
                except KubeError as list_exc:
                    log.warning("listing pods failed: %s", list_exc)

    async def _watch_nodes(self, resource_version: str) -> None:
        assert self.cluster is not None
        failures = 0
        while True:
            try:
                async for kind, obj in self.cluster.watch_nodes(resource_version, _WATCH_SECONDS):
                    failures = 0
                    resource_version = obj["metadata"].get("resourceVersion", resource_version)
                    name = obj["metadata"]["name"]
                    if kind == "DELETED":
                        self.nodes.pop(name, None)
                    else:
                        self.nodes[name] = obj
            except Exception as exc:  # any failure: list again, then watch on
                failures += 1
                log.warning("node watch ended: %s; listing again", exc)
                await asyncio.sleep(min(10.0, 0.2 * 2**failures) * random.random())
                try:
                    nodes, resource_version = await self.cluster.list_nodes()
                    self.nodes = {n["metadata"]["name"]: n for n in nodes}
                except KubeError as list_exc:
                    log.warning("listing nodes failed: %s", list_exc)

    # -- capacity -----------------------------------------------------------------------------

    async def capacity(self) -> Capacity:
        """Allocatable resources of each node; cordoned or NotReady nodes count as zero."""
        await self.open()
        nodes = []
        for name, n in sorted(self.nodes.items()):
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (n.get("status") or {}).get("conditions") or []
            )
            usable = ready and not (n.get("spec") or {}).get("unschedulable")
            alloc = (n.get("status") or {}).get("allocatable") or {}
            platform = ((n.get("metadata") or {}).get("labels") or {}).get(
                self.settings.platform_label
            )
            nodes.append(
                Node(
                    name=name,
                    cpu=parse_cpu(alloc.get("cpu")) if usable else 0.0,
                    memory=parse_bytes(alloc.get("memory")) if usable else 0,
                    gpu=int(alloc.get("nvidia.com/gpu", 0)) if usable else 0,
                    platform=platform,
                )
            )
        return Capacity(nodes=nodes, slots=self.slots)

    # -- inventory ------------------------------------------------------------------------------

    async def held(self) -> list[Held]:
        await self.open()
        out: dict[int, Held] = {}
        for attempt, p in self.pods.items():
            launch = self._launch_of(p)
            if launch is not None:
                epoch = int((p["metadata"].get("labels") or {}).get(f"{manifests.LABEL}/epoch", 0))
                out[attempt] = Held(launch, epoch, True)
                self._follow(attempt)  # adopted after a restart: its log is copied again
        for path in self.launch_dir.glob("*.json"):
            attempt = int(path.stem)
            if attempt not in out:
                with contextlib.suppress(ValueError, msgspec.DecodeError):
                    launch = _launch_decoder.decode(path.read_bytes())
                    out[attempt] = Held(launch, launch.epoch, attempt in self.gone)
        return [out[k] for k in sorted(out)]

    def _launch_of(self, p: dict[str, Any]) -> Launch | None:
        attempt = manifests.attempt_of(p)
        path = self.launch_dir / f"{attempt}.json"
        try:
            return _launch_decoder.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            pass
        raw = (p["metadata"].get("annotations") or {}).get(_LAUNCH_ANNOTATION)
        if raw is None:
            return None
        try:
            return _launch_decoder.decode(raw.encode())
        except msgspec.DecodeError:
            return None

    async def prepare(self, launch: Launch) -> None:
        path = self.launch_dir / f"{launch.attempt.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_encoder.encode(launch))
        tmp.replace(path)

    async def set_epoch(self, attempt: int, epoch: int) -> None:
        path = self.launch_dir / f"{attempt}.json"
        with contextlib.suppress(OSError, msgspec.DecodeError):
            launch = _launch_decoder.decode(path.read_bytes())
            await self.prepare(msgspec.structs.replace(launch, epoch=epoch))

    # -- running ---------------------------------------------------------------------------------

    async def start(self, attempt: int) -> AttemptState:
        await self.open()
        if attempt in self.pods:
            self._follow(attempt)
            return await self.state(attempt)
        launch = _launch_decoder.decode((self.launch_dir / f"{attempt}.json").read_bytes())
        try:
            await self._create_objects(launch)
        except KubeError as exc:
            status = "FAILED_START_ERROR" if exc.permanent else "FAILED_BACKEND_ERROR"
            what = "refused" if exc.permanent else "could not be reached for"
            self.refused[attempt] = AttemptState(
                False,
                None,
                status,
                f"the Kubernetes API {what} {exc.kind} {exc.name}: {exc.message}",
            )
            return self.refused[attempt]
        self._follow(attempt)
        return AttemptState(True, phase="pending")

    async def _create_objects(self, launch: Launch) -> None:
        a = launch.attempt
        s = self.settings
        await self._create(manifests.data_claim(a.workflow_id, s))
        await self._create(manifests.group_service(a, s))
        secret = manifests.files_secret([a], s)
        if secret is not None:
            try:
                await self._create(secret, exist_ok=False)
            except KubeError as exc:
                if not exc.conflict:
                    raise
                assert self.cluster is not None
                await self.cluster.patch_secret_data(secret["metadata"]["name"], secret["data"])
        group = manifests.pod_group(a, s)
        if group is not None:
            await self._create(group)
        pod = manifests.pod(a, launch.epoch, s)
        without_files = msgspec.structs.replace(
            launch, attempt=msgspec.structs.replace(a, files=[])
        )
        pod["metadata"]["annotations"][_LAUNCH_ANNOTATION] = _encoder.encode(without_files).decode()
        created = await self._create(pod)
        if created is not None:
            self.pods.setdefault(a.id, created)

    async def _create(self, obj: dict[str, Any], exist_ok: bool = True) -> dict[str, Any] | None:
        """Create ``obj``; retry transient failures with backoff, a bounded number of times."""
        assert self.cluster is not None
        for i in range(_CREATE_TRIES):
            try:
                return await self.cluster.create(obj)
            except KubeError as exc:
                if exc.conflict and exist_ok:
                    return None
                if exc.permanent or exc.conflict or i == _CREATE_TRIES - 1:
                    raise
                await asyncio.sleep(min(5.0, 0.2 * 2**i) * (0.5 + random.random()))
        return None

    async def state(self, attempt: int) -> AttemptState:
        if attempt in self.refused:
            return self.refused[attempt]
        p = self.pods.get(attempt)
        if p is None and attempt not in self.gone:
            return AttemptState(True, phase="pending")  # created; the watch has not seen it yet
        seen = self.first_seen.setdefault(attempt, {})
        gone_reason = (
            "the pod was deleted when the attempt was stopped"
            if attempt in self.stopping
            else "the pod disappeared (deleted, or its node was lost)"
        )
        state = pod_state(p, time.time(), seen, self.settings, gone_reason)
        fetching = attempt in self.followers and attempt not in self.follow_done
        if not state.running and fetching and p is not None and _has_started(p):
            # Ended, but its log is still being fetched: report the end after the last byte.
            return AttemptState(True, phase="running", node=state.node)
        return state

    async def stop(self, attempt: int, grace: float) -> None:
        self.stopping.add(attempt)
        p = self.pods.get(attempt)
        if p is None or self.cluster is None:
            return
        try:
            await self.cluster.delete("Pod", p["metadata"]["name"], grace=int(grace))
        except KubeError as exc:
            log.warning("stopping attempt %d: %s", attempt, exc)

    # -- logs -------------------------------------------------------------------------------------

    def _follow(self, attempt: int) -> None:
        if attempt not in self.followers:
            self.followers[attempt] = asyncio.create_task(
                self._copy_log(attempt), name=f"log-{attempt}"
            )

    async def _copy_log(self, attempt: int) -> None:
        """Copy the container's log into a local file, from its first byte, to its end, and
        when each line was written (the kubelet's timestamps) into its timeline."""
        path = self.log_dir / f"{attempt}.log"
        times = self.log_dir / f"{attempt}.timeline"
        path.write_bytes(b"")  # the API gives the whole log from its start: offsets match
        times.write_bytes(b"")
        self._timeline_at.pop(attempt, None)
        written = 0
        consumed = 0  # bytes of the timestamped log read: a reconnect gets it from its start
        lines = KubeletLines()
        try:
            while True:
                p = self.pods.get(attempt)
                if p is None:
                    if attempt in self.gone or attempt in self.refused:
                        return
                    await asyncio.sleep(0.2)
                    continue
                if not _has_started(p):
                    seen = self.first_seen.setdefault(attempt, {})
                    if not pod_state(p, time.time(), seen, self.settings).running:
                        return  # it ended without ever starting: there is no log
                    await asyncio.sleep(0.2)
                    continue
                ended = _has_ended(p)
                assert self.cluster is not None
                skip = consumed
                try:
                    with path.open("ab") as out, times.open("ab") as timeline_file:
                        async for chunk in self.cluster.pod_log(
                            p["metadata"]["name"], follow=not ended, timestamps=True
                        ):
                            if skip:
                                cut = min(skip, len(chunk))
                                chunk, skip = chunk[cut:], skip - cut
                            if not chunk:
                                continue
                            consumed += len(chunk)
                            records = []
                            for text, ns in lines.feed(chunk):
                                out.write(text)
                                written += len(text)
                                records.append((written, ns))
                            out.flush()  # the bytes before the records that name them
                            timeline_file.write(_records(records))
                            timeline_file.flush()
                except KubeError as exc:
                    if exc.gone:
                        return
                    log.debug("log of attempt %d: %s; retrying", attempt, exc)
                    await asyncio.sleep(0.5)
                    continue
                if ended or _has_ended(self.pods.get(attempt) or {}):
                    if not ended:
                        continue  # it ended while we followed: read the rest once more
                    return
                await asyncio.sleep(0.2)
        finally:
            self.follow_done.add(attempt)

    async def read_logs(
        self, attempt: int, offsets: dict[Stream, int], limit: int, max_pieces: int
    ) -> list[LogPiece]:
        """The log with the times the kubelet gave its lines (the timeline ``_copy_log``
        writes); a log copied by a runner before timelines existed has no times."""
        times = self.log_dir / f"{attempt}.timeline"
        if not times.exists():
            return await super().read_logs(attempt, offsets, limit, max_pieces)
        files: dict[Stream, Path] = {"stdout": self.log_dir / f"{attempt}.log"}
        pieces, self._timeline_at[attempt] = timeline.read(
            times, files, offsets, limit, max_pieces, self._timeline_at.get(attempt, 0)
        )
        return pieces

    async def read_log(self, attempt: int, stream: str, offset: int, limit: int) -> bytes:
        if stream != "stdout":
            return b""  # Kubernetes merges a container's stdout and stderr into one log
        try:
            with open(self.log_dir / f"{attempt}.log", "rb") as f:  # noqa: ASYNC230 - small local read
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    # -- cleaning up ---------------------------------------------------------------------------

    async def forget(self, attempt: int) -> None:
        """The control plane has the attempt's end: clean its objects up after a while."""
        p = self.pods.get(attempt)
        (self.launch_dir / f"{attempt}.json").unlink(missing_ok=True)
        follower = self.followers.pop(attempt, None)
        if follower is not None:
            follower.cancel()
        delay = 0.0 if attempt in self.stopping else self.settings.cleanup_after
        asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self._clean_up(attempt, p))
        )

    async def _clean_up(self, attempt: int, p: dict[str, Any] | None) -> None:
        (self.log_dir / f"{attempt}.log").unlink(missing_ok=True)
        (self.log_dir / f"{attempt}.timeline").unlink(missing_ok=True)
        self._timeline_at.pop(attempt, None)
        p = self.pods.pop(attempt, None) or p  # popped first: its DELETED event is then ignored
        try:
            if p is not None and self.cluster is not None:
                await self._delete_objects(p)
        except KubeError as exc:
            log.warning("cleaning up attempt %d: %s", attempt, exc)
        finally:
            # Nothing more is asked about the attempt: keep a long-lived runner's memory flat.
            self.gone.discard(attempt)
            self.stopping.discard(attempt)
            self.refused.pop(attempt, None)
            self.first_seen.pop(attempt, None)
            self.follow_done.discard(attempt)

    async def _delete_objects(self, p: dict[str, Any]) -> None:
        """Delete the pod, then its group's objects once no pod of the group is left."""
        assert self.cluster is not None
        await self.cluster.delete("Pod", p["metadata"]["name"], grace=0)
        group = (p["metadata"].get("labels") or {}).get(f"{manifests.LABEL}/group")
        others = [
            q for q in self.pods.values()
            if (q["metadata"].get("labels") or {}).get(f"{manifests.LABEL}/group") == group
        ]  # fmt: skip
        if group and not others:
            for kind, name, api_version in manifests.group_objects(group, self.settings):
                await self.cluster.delete(kind, name, api_version=api_version)


def _has_started(p: dict[str, Any]) -> bool:
    state = task_container(p).get("state") or {}
    return "running" in state or "terminated" in state


def _has_ended(p: dict[str, Any]) -> bool:
    phase = (p.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed") or "terminated" in (
        task_container(p).get("state") or {}
    )


class KubeletLines:
    """The kubelet's log with ``timestamps=true`` (each line begins with its RFC 3339 time
    and a space) as what the container wrote, each part with the time of its line.

    The kubelet times the entries the container runtime wrote (a line, or a part of one
    longer than its 16 KiB buffer); a part after the first comes with its own time in the
    middle of the line, which is kept as the line's text, as ``kubectl logs --timestamps``
    shows it. A line that does not begin with a time (a server that ignores ``timestamps``)
    is kept whole, timed when it arrived."""

    __slots__ = ("head", "ns", "starting")

    def __init__(self) -> None:
        self.starting = True  # at the start of a line: its time comes first
        self.head = b""  # the start of a time cut by the end of a chunk
        self.ns = 0

    def feed(self, chunk: bytes) -> list[tuple[bytes, int]]:
        parts: list[tuple[bytes, int]] = []
        i = 0
        while i < len(chunk):
            if self.starting:
                cut = _first_of(chunk, i, (b" ", b"\n"), _LONGEST_STAMP + 1 - len(self.head))
                if cut < 0:  # the time goes on in the next chunk (or is no time)
                    self.head += chunk[i:]
                    if len(self.head) > _LONGEST_STAMP:
                        parts.append(self._not_a_time(self.head))
                    break
                stamp, self.head = self.head + chunk[i:cut], b""
                ns = _parse_stamp(stamp) if chunk[cut : cut + 1] == b" " else None
                if ns is None:
                    parts.append(self._not_a_time(stamp))
                    i = cut
                    continue
                self.ns, self.starting, i = ns, False, cut + 1
            else:
                end = chunk.find(b"\n", i)
                if end < 0:
                    parts.append((chunk[i:], self.ns))
                    break
                parts.append((chunk[i : end + 1], self.ns))
                self.starting, i = True, end + 1
        return parts

    def _not_a_time(self, text: bytes) -> tuple[bytes, int]:
        self.starting, self.head, self.ns = False, b"", time.time_ns()
        return text, self.ns


_LONGEST_STAMP = len("2006-01-02T15:04:05.999999999+07:00")
_STAMP = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def _first_of(data: bytes, start: int, needles: tuple[bytes, ...], within: int) -> int:
    """Where the first of ``needles`` is in ``data[start:start + within]``, else -1."""
    found = [data.find(n, start, start + within) for n in needles]
    hits = [f for f in found if f >= 0]
    return min(hits) if hits else -1


def _parse_stamp(stamp: bytes) -> int | None:
    """An RFC 3339 time (nanoseconds, as the kubelet writes it) in ns since the epoch."""
    m = _STAMP.fullmatch(stamp)
    if m is None:
        return None
    zone = "+00:00" if m[3] == b"Z" else m[3].decode()
    try:
        base = datetime.fromisoformat(m[1].decode() + zone)
    except ValueError:
        return None
    return int(base.timestamp()) * 1_000_000_000 + int((m[2] or b"").ljust(9, b"0"))


def _records(ends: list[tuple[int, int]]) -> bytes:
    """Timeline records for the parts just written (stdout reached END at NS), at most one
    per window of ``timeline.WINDOW_NS``: a task printing many short lines makes few."""
    out: list[tuple[int, int]] = []
    for end, ns in ends:
        if out and ns - out[-1][1] < timeline.WINDOW_NS:
            out[-1] = (end, out[-1][1])
        else:
            out.append((end, ns))
    return b"".join(timeline.record("stdout", end, ns) for end, ns in out)
