"""The wave-1 conformance rows end to end: control plane, a runner with the Kubernetes executor,
the fake API server and its kubelet."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml

from tests.fake_k8s import fake_kube
from tests.runner.test_conformance_e2e import _run_row
from tests.support import Stack

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("bwrap") is None, reason="the fake kubelet runs containers in bwrap"
    ),
]


async def test_wave_one_rows_on_the_kubernetes_executor(
    database_url: str, tmp_path: Path, conformance: Path
) -> None:
    async with fake_kube(tmp_path / "kube") as kube:
        for name in ("node-a", "node-b"):
            await kube.add_node(name, cpu="4", memory="16Gi")
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        stack = Stack(database_url, tmp_path)
        await stack.start(runner=False)
        try:
            await stack.start_runner(
                GANTRY_EXECUTOR="kubernetes",
                KUBECONFIG=str(kubeconfig),
                GANTRY_K8S_NAMESPACE="gantry",
                GANTRY_K8S_CLEANUP_AFTER="1",
            )
            rows = [
                r
                for r in yaml.safe_load((conformance / "expect.yaml").read_text())
                if r["wave"] == 1
            ]
            problems = await asyncio.gather(*(_run_row(stack, conformance, r) for r in rows))
            failures = {
                f"{r['file']} {r.get('set') or ''}": p
                for r, p in zip(rows, problems, strict=True)
                if p
            }
            assert not failures, failures
            created = [p for m, p in kube.requests if m == "POST" and p.endswith("/pods")]
            assert len(created) >= 15, "the tasks ran as pods"
        finally:
            await stack.stop()
