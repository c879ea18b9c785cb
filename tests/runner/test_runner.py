"""The real runner against the real app over HTTP/2: execution, sandbox, logs, groups, cancel."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support import InProcessServer, runner_in_loop, submit, task_of, wait_for

BWRAP = shutil.which("bwrap") is not None
SANDBOXES = ["bwrap", "none"] if BWRAP else ["none"]


async def test_runner_speaks_http2_on_one_connection(
    server: InProcessServer, tmp_path: Path
) -> None:
    async with runner_in_loop(server.base, tmp_path / "r") as runner:
        response = await runner.client.http.get("/sessions/x/stream")
        assert response.http_version == "HTTP/2"
        assert response.status_code == 404
    # Browsers keep HTTP/1.1 on the same port.
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(f"{server.base}/healthz")).http_version == "HTTP/1.1"


@pytest.mark.parametrize("sandbox", SANDBOXES)
async def test_files_inputs_outputs_and_environment(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path, sandbox: str
) -> None:
    spec = """\
workflow:
  name: layout
  tasks:
  - name: produce
    image: ubuntu
    command: [sh, /work/make.sh]
    environment: {GREETING: hello}
    files:
    - path: /work/make.sh
      contents: |
        echo "$GREETING from $GANTRY_TASK" > {{output}}/data.txt
        echo "secret=[$RUNNER_SECRET_CANARY] token=[$GANTRY_RUNNER_TOKEN]"
        echo "to stderr" >&2
        echo private > /tmp/gantry-sandbox-canary
  - name: consume
    image: ubuntu
    command: [sh, -c, 'cat {{input:0}}/data.txt; echo $(FILE) ; touch {{input:0}}/nope 2>/dev/null || echo inputs are read-only']
    environment: {FILE: /etc/hostname}
    inputs: [{task: produce}]
"""
    os.environ["RUNNER_SECRET_CANARY"] = "leaked"
    try:
        async with runner_in_loop(server.base, tmp_path / "r", sandbox=sandbox):
            wid = await submit(api, spec)
            wf = await wait_for(api, wid, timeout=60)
    finally:
        del os.environ["RUNNER_SECRET_CANARY"]
    assert wf["status"] == "COMPLETED", wf
    produce_log = (await api.get(f"/api/v1/workflows/{wid}/tasks/produce/logs")).text
    assert "secret=[] token=[]" in produce_log, "the runner's environment must not reach tasks"
    assert "to stderr" in produce_log
    consume_log = (await api.get(f"/api/v1/workflows/{wid}/tasks/consume/logs")).text
    assert "hello from produce" in consume_log
    assert "/etc/hostname" in consume_log  # $(FILE) expanded the Kubernetes way
    canary = Path("/tmp/gantry-sandbox-canary")
    if sandbox == "bwrap":
        assert "inputs are read-only" in consume_log
        assert not canary.exists(), "/tmp is private to the task"
    canary.unlink(missing_ok=True)  # without a sandbox /tmp is the host's (documented)


async def test_failing_task_fails_downstream_but_not_independent_groups(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    spec = """\
workflow:
  name: branches
  tasks:
  - {name: broken, image: x, command: [sh, -c, "echo failing; exit 3"]}
  - {name: after-broken, image: x, command: [echo, never], inputs: [{task: broken}]}
  - {name: independent, image: x, command: [sh, -c, "sleep 1; echo fine"]}
"""
    async with runner_in_loop(server.base, tmp_path / "r"):
        wid = await submit(api, spec)
        wf = await wait_for(api, wid, timeout=60)
    assert wf["status"] == "FAILED"
    assert task_of(wf, "broken")["exit_code"] == 3
    assert task_of(wf, "after-broken")["status"] == "FAILED_UPSTREAM"
    assert task_of(wf, "independent")["status"] == "COMPLETED"
    assert "broken" in wf["reason"]


async def test_lead_ending_stops_siblings(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    spec = """\
workflow:
  name: leader
  groups:
  - name: g
    tasks:
    - {name: lead, lead: true, image: x, command: [sh, -c, "sleep 1; echo done"]}
    - {name: server, image: x, command: [sh, -c, "echo serving; sleep 600"]}
"""
    started = asyncio.get_running_loop().time()
    async with runner_in_loop(server.base, tmp_path / "r") as runner:
        wid = await submit(api, spec)
        wf = await wait_for(api, wid, timeout=60)
        assert wf["status"] == "COMPLETED"
        server_task = task_of(wf, "server")
        assert (
            server_task["status"] == "COMPLETED" and server_task["reason"] == "Lead task finished"
        )
        # The sibling's process was really stopped, not just marked.
        await _until(lambda: not runner.attempts, 15)
    assert asyncio.get_running_loop().time() - started < 40


async def test_cancel_stops_the_process_with_sigterm(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    spec = """\
workflow:
  name: stoppable
  tasks:
  - name: sleeper
    image: x
    command: [sh, -c, "trap 'echo got SIGTERM; exit 0' TERM; echo started; while true; do sleep 0.1; done"]
"""
    async with runner_in_loop(server.base, tmp_path / "r") as runner:
        wid = await submit(api, spec)
        await wait_for(api, wid, lambda wf: task_of(wf, "sleeper")["status"] == "RUNNING", 30)
        await _until_log(api, wid, "sleeper", "started")
        r = await api.post(f"/api/v1/workflows/{wid}/cancel", json={"reason": "enough"})
        assert r.json()["status"] == "FAILED_CANCELED"
        await _until(lambda: not runner.attempts, 15)
    log = await _until_log(api, wid, "sleeper", "got SIGTERM")
    assert log.count("started") == 1


async def test_logs_follow_streams_until_the_attempt_ends(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    spec = """\
workflow:
  name: talker
  tasks:
  - {name: t, image: x, command: [sh, -c, "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"]}
"""
    async with runner_in_loop(server.base, tmp_path / "r"):
        wid = await submit(api, spec)
        await wait_for(api, wid, lambda wf: task_of(wf, "t")["status"] == "RUNNING", 30)
        async with api.stream(
            "GET", f"/api/v1/workflows/{wid}/tasks/t/logs", params={"follow": "true"}
        ) as r:
            assert r.headers["content-type"].startswith("text/plain")
            body = b"".join([chunk async for chunk in r.aiter_bytes()]).decode()
    assert body == "".join(f"line {i}\n" for i in range(1, 6))


async def test_events_stream_snapshot_changes_and_end(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    spec = "workflow:\n  name: evented\n  tasks:\n  - {name: t, image: x, command: [sh, -c, 'sleep 0.5; echo ok']}\n"
    wid = await submit(api, spec)
    events: list[tuple[str, str]] = []
    async with runner_in_loop(server.base, tmp_path / "r"):
        async with api.stream("GET", f"/api/v1/workflows/{wid}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event:
                    events.append((event, line[5:].strip()))
                    if event == "end":
                        break
    kinds = [e for e, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "end"
    assert "task" in kinds and "workflow" in kinds
    statuses = [d for e, d in events if e == "task"]
    assert any('"RUNNING"' in d for d in statuses) and any('"COMPLETED"' in d for d in statuses)


async def _until(predicate: object, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.1)


async def _until_log(
    api: httpx.AsyncClient, wid: str, task: str, text: str, timeout: float = 15
) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        log = (await api.get(f"/api/v1/workflows/{wid}/tasks/{task}/logs")).text
        if text in log:
            return log
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{text!r} not in log: {log!r}")
        await asyncio.sleep(0.1)


RELATIVE = "workflow:\n  name: rel\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"


async def test_a_relative_data_directory_runs_tasks(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's default data directory is relative (`.gantry/runner-<backend>`); tasks
    run elsewhere and could not find their files (a new user's second runner failed them all)."""
    monkeypatch.chdir(tmp_path)
    async with runner_in_loop(server.base, Path(".gantry/runner-local")):
        wid = await submit(api, RELATIVE)
        wf = await wait_for(api, wid, timeout=30)
    assert wf["status"] == "COMPLETED", wf
