"""The Kubernetes executor against the fake API server and kubelet, with the real runner over
HTTP/2 and the real control plane: pods, logs, cancel, reconcile, node loss, 410, refusals."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.executors.kubernetes.config import KubeSettings
from runner.executors.kubernetes.executor import KubernetesExecutor
from tests.fake_k8s import FakeKube, fake_kube
from tests.support import (
    InProcessServer,
    runner_in_loop,
    self_signed_cert,
    submit,
    task_of,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="the fake kubelet runs containers in bwrap"
)


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[FakeKube]:
    async with fake_kube(tmp_path / "kube") as api:
        await api.add_node("node-a", cpu="4", memory="8Gi")
        await api.add_node("node-b", cpu="4", memory="8Gi")
        previous = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(api.kubeconfig(tmp_path / "kubeconfig"))
        try:
            yield api
        finally:
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous


def executor(tmp: Path, **settings: Any) -> KubernetesExecutor:
    options: dict[str, Any] = {"namespace": "gantry", "backend": "local", "cleanup_after": 0.5}
    options.update(settings)
    return KubernetesExecutor(KubeSettings(**options), tmp)


SERIAL = """\
workflow:
  name: kube-serial
  tasks:
  - name: make
    image: ubuntu:24.04
    command: [sh, /work/make.sh]
    environment: {WHO: producer}
    files:
    - path: /work/make.sh
      contents: |
        echo "made by $WHO ($GANTRY_TASK)" > {{output}}/data.txt
        echo "stdout line"
        echo "stderr line" >&2
  - name: use
    image: ubuntu:24.04
    command: [sh, -c]
    args: ["cat {{input:0}}/data.txt; echo $(GREETING) from $(GANTRY_TASK)"]
    environment: {GREETING: hello}
    inputs: [{task: make}]
"""


async def test_a_workflow_runs_as_pods_with_files_inputs_and_logs(
    server: InProcessServer, api: httpx.AsyncClient, kube: FakeKube, tmp_path: Path
) -> None:
    ex = executor(tmp_path / "r")
    async with runner_in_loop(server.base, tmp_path / "r", executor=ex):
        wid = await submit(api, SERIAL)
        wf = await wait_for(api, wid, timeout=60)
        assert wf["status"] == "COMPLETED", wf
        make = task_of(wf, "make")
        assert make["node"] in ("node-a", "node-b")
        log = (await api.get(f"/api/v1/workflows/{wid}/tasks/make/logs")).text
        assert "stdout line" in log and "stderr line" in log  # Kubernetes merges the two
        use = (await api.get(f"/api/v1/workflows/{wid}/tasks/use/logs")).text
        assert "made by producer (make)" in use and "hello from use" in use
        created = {(m, p.rsplit("/", 1)[-1]) for m, p in kube.requests if m == "POST"}
        assert ("POST", "persistentvolumeclaims") in created and ("POST", "services") in created
        assert ("POST", "secrets") in created and ("POST", "pods") in created

        # Finished pods, and then their group's objects, are cleaned up after a while.
        def cleaned() -> bool:
            left = [kube.items(kind) for kind in ("pods", "services", "secrets")]
            remembered = [ex.pods, ex.gone, ex.stopping, ex.refused, ex.first_seen, ex.follow_done]
            return not any(left) and not any(remembered)

        for _ in range(50):
            if cleaned():
                break
            await asyncio.sleep(0.1)
        assert not kube.items("pods") and not kube.items("services") and not kube.items("secrets")
        assert cleaned(), "the executor forgets attempts it has cleaned up"


COUNTER = """\
workflow:
  name: kube-counter
  tasks:
  - name: count
    image: ubuntu:24.04
    command: [sh, -c, "for i in $(seq 1 30); do echo line $i; sleep 0.1; done"]
"""
EXPECTED = "".join(f"line {i}\n" for i in range(1, 31))


async def test_the_watch_relists_after_410_and_logs_resume_after_a_runner_restart(
    server: InProcessServer, api: httpx.AsyncClient, kube: FakeKube, tmp_path: Path
) -> None:
    wid = await submit(api, COUNTER)
    async with runner_in_loop(server.base, tmp_path / "r1", executor=executor(tmp_path / "r1")):
        await wait_for(api, wid, lambda wf: task_of(wf, "count")["status"] == "RUNNING", 30)
        await kube.expire_history()  # the pod watch reconnects into 410 Gone and must relist
        await asyncio.sleep(0.8)
    # A new runner with nothing on its disk (a restarted runner pod) adopts the pod.
    lists_before = sum(1 for m, p in kube.requests if m == "GET" and p.endswith("/pods"))
    async with runner_in_loop(server.base, tmp_path / "r2", executor=executor(tmp_path / "r2")):
        wf = await wait_for(api, wid, timeout=60)
    assert wf["status"] == "COMPLETED" and task_of(wf, "count")["retry"] == 0
    log = (await api.get(f"/api/v1/workflows/{wid}/tasks/count/logs")).text
    assert log == EXPECTED  # whole, nothing doubled
    assert sum(1 for m, p in kube.requests if m == "GET" and p.endswith("/pods")) > lists_before


async def test_cancel_deletes_the_pod_with_a_grace_period(
    server: InProcessServer, api: httpx.AsyncClient, kube: FakeKube, tmp_path: Path
) -> None:
    spec = """\
workflow:
  name: kube-cancel
  tasks:
  - name: sleeper
    image: ubuntu:24.04
    command: [sh, -c, "trap 'echo got SIGTERM; exit 0' TERM; echo started; while true; do sleep 0.1; done"]
"""
    async with runner_in_loop(server.base, tmp_path / "r", executor=executor(tmp_path / "r")):
        wid = await submit(api, spec)
        await wait_for(api, wid, lambda wf: task_of(wf, "sleeper")["status"] == "RUNNING", 30)
        await asyncio.sleep(0.5)
        await api.post(f"/api/v1/workflows/{wid}/cancel", json={"reason": "stop"})
        for _ in range(100):
            if not kube.items("pods"):
                break
            await asyncio.sleep(0.1)
        assert not kube.items("pods")
        deletes = [p for m, p in kube.requests if m == "DELETE" and "/pods/" in p]
        assert deletes
    wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
    assert wf["status"] == "FAILED_CANCELED"


async def test_reconcile_removes_pods_the_control_plane_does_not_know(
    server: InProcessServer, kube: FakeKube, tmp_path: Path
) -> None:
    stray = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray-999999", "labels": {
            "app.kubernetes.io/managed-by": "gantry", "gantry.io/backend": "local",
            "gantry.io/attempt": "999999", "gantry.io/epoch": "1"},
            "annotations": {"gantry.io/launch": '{"seq": 1, "epoch": 1, "attempt": {"id": 999999, "workflow_id": "old-1", "group": "g", "group_size": 1, "barrier": true, "task": "t", "retry": 0, "lead": true, "image": "x", "command": ["sleep", "100"], "args": [], "environment": {}, "files": [], "inputs": []}}'}},
        "spec": {"containers": [{"name": "task", "image": "ubuntu", "command": ["sleep", "100"]}], "volumes": []},
    }  # fmt: skip
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{kube.port}", headers={"Authorization": f"Bearer {kube.token}"}
    ) as k:
        assert (await k.post("/api/v1/namespaces/gantry/pods", json=stray)).status_code == 201
    async with runner_in_loop(server.base, tmp_path / "r", executor=executor(tmp_path / "r")):
        for _ in range(100):
            if kube.get("pods", "gantry", "stray-999999") is None:
                break
            await asyncio.sleep(0.1)
    assert kube.get("pods", "gantry", "stray-999999") is None


async def test_losing_a_node_fails_its_attempts(
    server: InProcessServer, api: httpx.AsyncClient, kube: FakeKube, tmp_path: Path
) -> None:
    spec = "workflow:\n  name: kube-node\n  tasks:\n  - {name: long, image: ubuntu, command: [sleep, '300']}\n"
    async with runner_in_loop(server.base, tmp_path / "r", executor=executor(tmp_path / "r")):
        wid = await submit(api, spec)
        wf = await wait_for(api, wid, lambda wf: task_of(wf, "long")["status"] == "RUNNING", 30)
        await kube.lose_node(task_of(wf, "long")["node"])
        wf = await wait_for(api, wid, timeout=30)
    assert wf["status"] == "FAILED_BACKEND_ERROR"
    assert "disappeared" in task_of(wf, "long")["reason"]


async def test_refused_objects_and_missing_images_fail_with_the_servers_words(
    server: InProcessServer, api: httpx.AsyncClient, kube: FakeKube, tmp_path: Path
) -> None:
    kube.quota_exceeded = True
    spec = (
        "workflow:\n  name: kube-quota\n  tasks:\n  - {name: t, image: ubuntu, command: [echo]}\n"
    )
    async with runner_in_loop(
        server.base, tmp_path / "r", executor=executor(tmp_path / "r", image_pull_grace=1.0)
    ):
        wid = await submit(api, spec)
        wf = await wait_for(api, wid, timeout=30)
        assert wf["status"] == "FAILED_START_ERROR"
        assert "exceeded quota" in task_of(wf, "t")["reason"]
        creates = [
            p for m, p in kube.requests if m == "POST" and p.endswith("persistentvolumeclaims")
        ]
        assert len(creates) == 1, "a refusal is not retried"
        kube.quota_exceeded = False
        missing = "workflow:\n  name: kube-pull\n  tasks:\n  - {name: t, image: 'registry.example/missing:1', command: [echo]}\n"
        wid = await submit(api, missing)
        wf = await wait_for(api, wid, timeout=30)
    assert wf["status"] == "FAILED_IMAGE_PULL"
    assert "could not be pulled" in task_of(wf, "t")["reason"]


async def test_capacity_comes_from_ready_schedulable_nodes(
    server: InProcessServer, api: httpx.AsyncClient, kube: FakeKube, tmp_path: Path
) -> None:
    await kube.add_node(
        "gpu-1", cpu="32", memory="256Gi", gpus=8, labels={"gantry.io/platform": "dgx-h100"}
    )
    await kube.add_node("broken", cpu="16", memory="64Gi", ready=False)
    await kube.cordon("node-b")
    async with runner_in_loop(server.base, tmp_path / "r", executor=executor(tmp_path / "r")):
        backend = next(
            b for b in (await api.get("/api/v1/backends")).json()["items"] if b["name"] == "local"
        )
    nodes = {n["name"]: n for n in backend["capacity"]["nodes"]}
    assert nodes["gpu-1"] == {
        "name": "gpu-1",
        "cpu": 32.0,
        "memory": 256 * 2**30,
        "gpu": 8,
        "platform": "dgx-h100",
    }
    assert nodes["node-a"]["cpu"] == 4.0
    assert nodes["node-b"]["cpu"] == 0.0 and nodes["broken"]["memory"] == 0  # cordoned, NotReady


async def test_in_a_pod_the_runner_uses_its_service_account(
    server: InProcessServer,
    api: httpx.AsyncClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a pod the API server is reached over HTTPS with the mounted token and CA; a wrong token
    is refused with the server's words, and the executor does not count itself open."""
    from kubernetes_asyncio.config import incluster_config

    from runner.executors.kubernetes.cluster import KubeError

    cert, key = self_signed_cert(tmp_path)
    token = tmp_path / "token"
    async with fake_kube(tmp_path / "kube", tls=(cert, key)) as kube:
        await kube.add_node("node-a", cpu="4", memory="8Gi")
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube.port))
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))

        token.write_text("not-the-token")
        refused = executor(tmp_path / "refused")
        for _ in range(2):
            with pytest.raises(KubeError, match="Unauthorized"):
                await refused.open()
        await refused.close()

        token.write_text(kube.token)
        spec = "workflow:\n  name: kube-incluster\n  tasks:\n  - {name: t, image: ubuntu, command: [echo, in a pod]}\n"
        async with runner_in_loop(server.base, tmp_path / "r", executor=executor(tmp_path / "r")):
            wid = await submit(api, spec)
            wf = await wait_for(api, wid, timeout=30)
        assert wf["status"] == "COMPLETED", wf
        assert task_of(wf, "t")["node"] == "node-a"
        assert "in a pod" in (await api.get(f"/api/v1/workflows/{wid}/tasks/t/logs")).text


TIMED = """\
workflow:
  name: kube-timed
  tasks:
  - name: timed
    image: ubuntu:24.04
    command: [sh, -c, "echo early; echo err >&2; sleep 2; echo late"]
"""


async def test_log_lines_carry_the_kubelets_times_not_when_they_were_shipped(
    server: InProcessServer, api: httpx.AsyncClient, kube: FakeKube, tmp_path: Path
) -> None:
    """The runner reads the pod's log with timestamps and ships each line with its time:
    a log read long after the task wrote it (a runner that was away) keeps the times."""
    wid = await submit(api, TIMED)
    async with runner_in_loop(server.base, tmp_path / "r1", executor=executor(tmp_path / "r1")):
        await wait_for(api, wid, lambda wf: task_of(wf, "timed")["status"] == "RUNNING", 30)
    await asyncio.sleep(4)  # the task ends meanwhile; nobody reads its log
    async with runner_in_loop(server.base, tmp_path / "r2", executor=executor(tmp_path / "r2")):
        wf = await wait_for(api, wid, timeout=60)
    assert wf["status"] == "COMPLETED", wf
    plain = (await api.get(f"/api/v1/workflows/{wid}/tasks/timed/logs")).text
    assert plain == "early\nerr\nlate\n", plain  # the kubelet's order, times stripped
    stamped = (await api.get(f"/api/v1/workflows/{wid}/tasks/timed/logs?timestamps=true")).text
    when = {
        text: datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        for stamp, text in (line.split(" ", 1) for line in stamped.splitlines())
    }
    gap = (when["late"] - when["early"]).total_seconds()
    assert 1.8 <= gap <= 3.0, f"late came {gap:.2f} s after early: not the times it was written"
